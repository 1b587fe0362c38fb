"""The on-device runner, run here as a subprocess, exactly as a device runs it."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slimbert.deploy.bundle import RUNNER_SOURCE, make_bundle

ALLOWED = {"numpy", "onnxruntime", "tokenizers", "torch", "executorch"}


def run_runner(bundle: Path, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(bundle / "runner.py"), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def bundle(onnx_artifact, tmp_path_factory) -> Path:
    return make_bundle(onnx_artifact, tmp_path_factory.mktemp("bundles"))


def test_runner_imports_only_the_stdlib_and_the_three_runtime_packages():
    tree = ast.parse(RUNNER_SOURCE.read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    third_party = {m for m in modules if m not in sys.stdlib_module_names}
    assert third_party <= ALLOWED, third_party


def test_verify_accepts_the_bundle_and_names_a_tampered_file(bundle, tmp_path):
    ok = run_runner(bundle, "verify")
    assert ok.returncode == 0 and json.loads(ok.stdout)["bundle_id"] == bundle.name
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    with open(copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    (copy / "vocab.txt").unlink()
    bad = run_runner(copy, "verify")
    assert bad.returncode == 3
    assert "model.onnx (sha256 mismatch)" in bad.stderr and "vocab.txt (missing)" in bad.stderr


def test_check_reports_versions(bundle):
    result = run_runner(bundle, "check")
    assert result.returncode == 0 and {"numpy", "onnxruntime", "tokenizers"} <= set(json.loads(result.stdout))


def test_predict_prints_labels_and_scores(bundle):
    result = run_runner(bundle, "predict", "a good fun film", "dull and boring plot")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [o["text"] for o in out] == ["a good fun film", "dull and boring plot"]
    for o in out:
        assert o["label"] in ("neg", "pos") and set(o["scores"]) == {"neg", "pos"}
        assert abs(sum(o["scores"].values()) - 1) < 1e-4 and o["score"] == max(o["scores"].values())


def test_bench_prints_one_json_object(bundle):
    result = run_runner(bundle, "bench", "--batch-sizes", "1,2", "--seq-len", "16", "--threads", "1",
                        "--warmup", "1", "--min-iters", "3", "--budget-s", "0")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    shapes = [(s["batch_size"], s["seq_len"], s["iterations"]) for s in out["latency"]]
    assert shapes == [(1, 16, 3), (2, 16, 3)]
    assert all(0 < s["p50_ms"] <= s["p99_ms"] for s in out["latency"])
    assert out["bundle_id"] == bundle.name and out["size_mb"] > 0 and out["onnxruntime"]


def test_bench_refuses_a_length_beyond_the_model(bundle):
    result = run_runner(bundle, "bench", "--seq-len", "128")  # the tiny model has 64 positions
    assert result.returncode == 5 and "maximum of 64 positions" in result.stderr


def test_runner_builds_the_same_latency_inputs_as_the_bench():
    """runner.py cannot import slimbert, so it keeps its own synthetic_batch: the two must agree."""
    import importlib.util

    import numpy as np

    from slimbert.bench.latency import synthetic_batch

    spec = importlib.util.spec_from_file_location("bundle_runner", RUNNER_SOURCE)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    for names in (("input_ids", "attention_mask", "token_type_ids"), ("input_ids", "attention_mask")):
        ours, theirs = synthetic_batch(4, 16, 30522, names), runner.synthetic_batch(4, 16, 30522, list(names))
        assert ours.keys() == theirs.keys()
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key])


def test_the_health_check_runs_each_example_alone_unpadded():
    """Dynamic INT8 depends on the batch: the health check compares what a served request gets."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("bundle_runner", RUNNER_SOURCE)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    shapes = []

    class Session:
        input_names = ("input_ids", "attention_mask")
        runtime = "fake"

        def run(self, feed):
            shapes.append(feed["input_ids"].shape)
            return np.full((feed["input_ids"].shape[0], 2), float(feed["input_ids"].shape[1]))

    feed = {"input_ids": np.ones((3, 6), dtype=np.int64),
            "attention_mask": np.array([[1] * 6, [1] * 2 + [0] * 4, [1] * 4 + [0] * 2])}
    logits = runner.run_served(Session(), feed)
    assert shapes == [(1, 6), (1, 2), (1, 4)] and logits[:, 0].tolist() == [6.0, 2.0, 4.0]
