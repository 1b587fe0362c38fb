"""benchmarks/gpu_shapes.py on CPU: a tiny shape through the same row loop the GPU runs."""

import json

import gpu_shapes
import numpy as np
import pytest

from slimbert.runtimes import all_runtimes

TINY = gpu_shapes.Shape(layers=1, hidden=32, heads=2, intermediate=64, vocab_size=200, max_positions=128)
QUICK = gpu_shapes.Timing(warmup=1, min_iters=2, max_iters=3, budget_s=0.01)


def test_the_three_shapes_are_the_issues():
    names = ["student-3x384", "minilm-l6-6x384", "bert-base-12x768"]
    student, minilm, base = (gpu_shapes.SHAPES[n] for n in names)
    assert (student.layers, student.hidden) == (3, 384)
    assert (minilm.layers, minilm.hidden) == (6, 384)
    assert (base.layers, base.hidden, base.intermediate) == (12, 768, 3072)
    assert set(gpu_shapes.TARGET_B1_MS) == set(gpu_shapes.SHAPES)
    assert gpu_shapes.DEFAULT_TARGETS[0] == gpu_shapes.BASELINE  # the baseline is never the row cut off
    assert all(t in all_runtimes() for t in gpu_shapes.DEFAULT_TARGETS)


def test_graph_runtimes_are_told_apart_from_the_baseline():
    assert gpu_shapes.is_graph_runtime("torch-cuda-graph-fp16")
    assert gpu_shapes.is_graph_runtime("ort-cuda-graph")
    assert not gpu_shapes.is_graph_runtime("torch-cuda-compile-fp16")
    assert not gpu_shapes.is_graph_runtime("torch-cuda-fp16")


def test_rows_are_measured_checked_against_fp32_or_say_why_not(tmp_path):
    out = tmp_path / "part.json"
    part = gpu_shapes.run_shape("tiny", TINY, tmp_path / "models", out,
                                ["torch-cpu", "ort-cpu", "torch-cuda-graph-fp16"], reference="torch-cpu",
                                batch_sizes=[1, 2], timing=QUICK)
    assert json.loads(out.read_text()) == json.loads(json.dumps(part))  # the file is what was returned
    assert part["done"] and part["seq_len"] == 128 and part["config"]["layers"] == 1
    assert part["gpu"] is None and part["torch"]  # the card (none here) is in every file
    rows = {r["target"]: r for r in part["rows"]}
    eager = rows["torch-cpu"]
    assert eager["status"] == "measured" and eager["rel_error_vs_fp32"] == 0
    assert [s["batch_size"] for s in eager["latency"]] == [1, 2] and set(eager["first_call_s"]) == {1, 2}
    assert all(s["seq_len"] == 128 for s in eager["latency"])
    onnx = rows["ort-cpu"]  # the ONNX rows run an export of the same weights
    assert onnx["status"] == "measured" and onnx["rel_error_vs_fp32"] < 1e-3
    assert (tmp_path / "models" / "tiny-onnx" / "model.onnx").is_file()
    graph = rows["torch-cuda-graph-fp16"]
    assert graph["status"] == "unavailable" and "no CUDA GPU" in graph["reason"]
    assert "logits" not in eager


def test_a_runtime_that_breaks_costs_only_its_own_row(tmp_path, monkeypatch):
    def broken(*_, **__):
        raise RuntimeError("Cannot copy between CPU and CUDA tensors during CUDA graph capture")

    monkeypatch.setattr(all_runtimes()["ort-cpu"], "load_alone", broken)
    part = gpu_shapes.run_shape("tiny", TINY, tmp_path / "models", tmp_path / "part.json",
                                ["ort-cpu", "torch-cpu"], reference="torch-cpu", batch_sizes=[1],
                                timing=QUICK)
    failed, fine = part["rows"]
    assert failed["status"] == "failed" and failed["reason"].startswith("RuntimeError: Cannot copy")
    assert failed["traceback"] and fine["status"] == "measured"


def test_relative_error():
    ref = np.array([[3.0, 4.0]])
    assert gpu_shapes.relative_error(ref, ref) == 0
    assert gpu_shapes.relative_error(ref * 1.01, ref) == pytest.approx(0.01)


def test_without_cuda_the_bench_refuses_with_where_to_run_it(tmp_path):
    with pytest.raises(SystemExit, match="needs a CUDA GPU visible to PyTorch.*How to measure"):
        gpu_shapes.main(["--shape", "student-3x384", "--out", str(tmp_path / "part.json")])
    assert not (tmp_path / "part.json").exists()


def test_an_unknown_target_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_shapes.main(["--shape", "student-3x384", "--out", str(tmp_path / "p.json"),
                         "--targets", "tensort"])
    assert "unknown target 'tensort'" in capsys.readouterr().err
