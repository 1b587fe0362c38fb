import json

import pytest

from slimbert.artifacts import Manifest, finish_artifact
from slimbert.bench.report import render_markdown
from slimbert.deploy.bundle import make_bundle
from slimbert.deploy.devices import Device
from slimbert.deploy.install import install
from slimbert.deploy.remote_bench import RemoteBenchConfig, append_rows, bench_row, remote_bench
from slimbert.errors import DeployError


def pi4() -> Device:
    device = Device(transport="ssh", host="192.168.1.42")
    device.name = "pi4"
    return device


QUICK = RemoteBenchConfig(batch_sizes=[1, 2], seq_len=16, warmup=1, min_iters=3, budget_s=0)


def local_report(seq_len=16) -> dict:
    """A bench report as `slimbert run` writes it, with one measured CPU row."""
    latency = [{"batch_size": b, "seq_len": seq_len, "iterations": 10, "p50_ms": 2.0 * b, "p90_ms": 2.5 * b,
                "p99_ms": 3.0 * b, "mean_ms": 2.1 * b, "throughput": 500.0} for b in (1, 2)]
    row = {"artifact": "student-int8", "path": "/runs/student-int8", "kind": "onnx", "target": "ort-cpu",
           "device": "cpu", "accuracy": {"accuracy": 0.85, "macro_f1": 0.84}, "latency": latency,
           "size_mb": 1.5, "predictions": [0, 1], "rss_delta_mb": 3.0, "retention": 1.0, "speedup_b1": 1.0}
    return {"name": "tiny", "reference": "student-int8",
            "config": {"batch_sizes": [1, 2], "seq_len": seq_len, "split": "test"},
            "dataset": {"source": "reviews.csv", "fingerprint": "f", "split": "test", "examples": 2},
            "labels": [0, 1], "environment": {"cpu": "build box", "cores": 2, "threads": 2, "platform": "x"},
            "rows": [row], "unavailable": []}


def fake_result(p50=8.0, seq_len=16) -> dict:
    latency = [{"batch_size": b, "seq_len": seq_len, "iterations": 3, "p50_ms": p50 * b, "p90_ms": p50 * b,
                "p99_ms": p50 * b, "mean_ms": p50 * b, "throughput": 1e3 / p50} for b in (1, 2)]
    return {"latency": latency, "size_mb": 0.2, "bundle_id": "0123456789abcdef", "artifact": "student-int8",
            "platform": "Linux-aarch64 (aarch64, 4 cores)", "threads": None, "onnxruntime": "1.20.0"}


def test_the_live_model_is_timed_on_the_device_and_joins_the_report(onnx_artifact, device, tmp_path):
    result = install(make_bundle(onnx_artifact, tmp_path / "bundles"), device)
    row = remote_bench(device, QUICK)
    assert row["target"] == "local:onnxruntime" and row["device"] == "local" and row["accuracy"] is None
    assert row["artifact"] == "tiny-onnx" and row["bundle_id"] == result.bundle_id and row["size_mb"] > 0
    assert [s["batch_size"] for s in row["latency"]] == [1, 2]
    assert all(s["p50_ms"] > 0 and s["seq_len"] == 16 for s in row["latency"])

    report_path = tmp_path / "run" / "report.json"
    report_path.parent.mkdir()
    report_path.write_text(json.dumps(local_report()))
    markdown = append_rows(report_path, [row]).read_text()
    report = json.loads(report_path.read_text())
    assert [r["target"] for r in report["rows"]] == ["ort-cpu", "local:onnxruntime"]
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert table[1].startswith("| student-int8 | ort-cpu | 85.00% |")  # table[0] is the header
    assert table[2].startswith("| tiny-onnx | local:onnxruntime | — | — | — |")
    assert f"bundle {result.bundle_id}" in markdown


def test_render_markdown_tolerates_a_row_without_accuracy():
    report = local_report()
    report["rows"].append(bench_row(pi4(), fake_result(), "/home/pi/slimbert"))
    assert "| student-int8 | pi4:onnxruntime | — | — | — | 8.00 |" in render_markdown(report)


def test_a_new_row_replaces_the_old_one_for_the_same_device(tmp_path):
    device = pi4()
    path = tmp_path / "report.json"
    path.write_text(json.dumps(local_report()))
    append_rows(path, [bench_row(device, fake_result(p50=8.0), "/r")])
    append_rows(path, [bench_row(device, fake_result(p50=4.0), "/r")])
    rows = json.loads(path.read_text())["rows"]
    p50s = [(r["target"], r["latency"][0]["p50_ms"]) for r in rows]
    assert p50s == [("ort-cpu", 2.0), ("pi4:onnxruntime", 4.0)]
    assert rows[1]["speedup_b1"] == pytest.approx(0.5)  # the reference's p50 at batch 1 is 2 ms


def test_refuses_a_different_sequence_length(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(local_report(seq_len=128)))
    with pytest.raises(DeployError, match="sequence length") as exc:
        append_rows(path, [bench_row(pi4(), fake_result(seq_len=16), "/r")])
    assert "--seq-len 128" in exc.value.hint


def test_refuses_to_edit_a_report_inside_an_artifact_or_a_non_report(tmp_path):
    stage = tmp_path / "run" / "bench"
    stage.mkdir(parents=True)
    (stage / "report.json").write_text(json.dumps(local_report()))
    finish_artifact(stage, Manifest(kind="report", stage="bench", stage_type="bench", inputs_hash="h"))
    row = bench_row(pi4(), fake_result(), "/r")
    with pytest.raises(DeployError, match="manifest.json") as exc:
        append_rows(stage / "report.json", [row])
    assert str(tmp_path / "run" / "report.json") in exc.value.hint
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(DeployError, match="not a bench report"):
        append_rows(tmp_path / "other.json", [row])


def test_nothing_installed_yet(device):
    with pytest.raises(DeployError, match="nothing is installed on device 'local'") as exc:
        remote_bench(device, QUICK)
    assert "slimbert deploy ARTIFACT --device local" in exc.value.hint
