"""benchmarks/gpu_measure.py on CPU: arguments, phases and their timeouts, the record it writes."""

import json
import os
import sys
import time
from pathlib import Path

import gpu_measure
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import build_tiny_bert

PY = sys.executable


def phase(tmp_path, code: str, timeout: float = 30, name: str = "shape") -> gpu_measure.Phase:
    return gpu_measure.Phase(name, [PY, "-c", code], timeout, tmp_path / "log.txt")


def test_out_defaults_to_the_device_out_folder_else_benchmarks_results(monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_measure.parse_args(["measure"]).out == tmp_path
    monkeypatch.delenv("OUT")
    args = gpu_measure.parse_args(["measure"])
    assert args.out == gpu_measure.HERE / "results"
    assert args.phases == ["pytest", "shapes", "trained"] and args.run is None
    assert args.shapes == gpu_measure.SHAPES and args.timeout == {}


def test_timeouts_are_given_per_phase(tmp_path):
    args = gpu_measure.parse_args(["measure", "--out", str(tmp_path), "--timeout", "pytest=60",
                                   "--timeout", "bert-base-12x768=30.5"])
    assert args.timeout == {"pytest": 60.0, "bert-base-12x768": 30.5}


@pytest.mark.parametrize("bad, message", [("pytset=60", "unknown phase 'pytset'"),
                                          ("pytest=soon", "give PHASE=SECONDS"),
                                          ("pytest=0", "must be positive")])
def test_a_bad_timeout_is_refused_with_what_to_write(bad, message, capsys):
    with pytest.raises(SystemExit):
        gpu_measure.parse_args(["measure", "--timeout", bad])
    assert message in capsys.readouterr().err


def test_a_run_folder_without_a_recipe_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_measure.parse_args(["measure", "--run", str(tmp_path)])
    err = capsys.readouterr().err
    assert "no recipe.json there" in err and "pack-run" in err


def test_phases_follow_the_arguments(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.json").write_text("{}")
    args = gpu_measure.parse_args(["measure", "--out", str(tmp_path), "--run", str(tmp_path / "run"),
                                   "--shapes", "student-3x384", "--timeout", "trained=42"])
    phases = gpu_measure.build_phases(args, tmp_path / "out", tmp_path / "work")
    assert [p.name for p in phases] == ["pytest", "student-3x384", "trained"]
    pytest_phase, shape, trained = phases
    assert pytest_phase.command[1:5] == ["-m", "pytest", "-m", "gpu"]
    assert pytest_phase.log == tmp_path / "out" / "gpu_pytest.log"
    assert shape.command[shape.command.index("--shape") + 1] == "student-3x384"
    assert trained.timeout_s == 42 and "--no-sweep" in trained.command
    assert trained.env["SLIMBERT_CACHE"] == str(tmp_path / "work" / "cache")  # the run carries none
    assert all(p.env["HF_HUB_OFFLINE"] == "1" for p in phases)
    no_run = gpu_measure.parse_args(["measure", "--phases", "trained"])
    assert gpu_measure.build_phases(no_run, tmp_path, tmp_path) == []


def test_a_phase_that_passes_fails_or_hangs_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_measure, "MIN_PHASE_S", 0)
    passed = gpu_measure.run_phase(phase(tmp_path, "print('fine')"), 60)
    assert passed["status"] == "passed" and passed["returncode"] == 0 and "fine" in passed["log_tail"]
    failed = gpu_measure.run_phase(phase(tmp_path, "print('capture broke'); raise SystemExit(3)"), 60)
    assert failed["status"] == "failed" and failed["reason"] == "exit 3: capture broke"
    start = time.monotonic()
    hung = gpu_measure.run_phase(phase(tmp_path, "import time; time.sleep(60)", timeout=1), 60)
    assert hung["status"] == "timed_out" and hung["returncode"] is None
    assert "after 1 s" in hung["reason"] and time.monotonic() - start < 10


def test_the_overall_deadline_cuts_a_phase_short_or_skips_it(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_measure, "MIN_PHASE_S", 0.5)
    cut = gpu_measure.run_phase(phase(tmp_path, "import time; time.sleep(60)", timeout=300), 1)
    assert cut["status"] == "timed_out" and cut["timeout_s"] == 1
    skipped = gpu_measure.run_phase(phase(tmp_path, "print('never')", timeout=300), 0.2)
    assert skipped["status"] == "skipped" and "out of time" in skipped["reason"]


def test_a_failed_pytest_phase_reports_its_summary_line(tmp_path):
    log = tmp_path / "gpu_pytest.log"
    log.write_text("FAILED tests/runtimes/test_cuda_graph.py::test_capture\n"
                   "==== 1 failed, 6 passed, 3 skipped in 40.1s ====\n")
    expected = "pytest exit 1: 1 failed, 6 passed, 3 skipped in 40.1s"
    assert gpu_measure.failure_reason("pytest", 1, log) == expected
    assert gpu_measure.failure_reason("pytest", 5, log) == "pytest collected no gpu test"
    log.write_text("tests/compress/test_distributed.py::test_mixed_precision_on_cuda[fp16] PASSED [ 12%]\n"
                   "6 passed, 3 skipped, 333 deselected in 30.87s\n")  # -q and -v close without '='
    assert gpu_measure.pytest_summary(log) == "6 passed, 3 skipped, 333 deselected in 30.87s"
    log.write_text("collecting ...\n")
    assert gpu_measure.pytest_summary(log) is None


def test_the_card_is_torchs_name_else_nvidia_smis():
    assert gpu_measure.card_name({"gpu": "NVIDIA H100 80GB HBM3"}) == "NVIDIA H100 80GB HBM3"
    assert gpu_measure.card_name({"nvidia_smi": "NVIDIA H200, 580.159.03, 143771 MiB"}) == "NVIDIA H200"
    assert gpu_measure.card_name({"nvidia_smi": ""}) is None and gpu_measure.card_name(None) is None


def test_without_cuda_it_stops_with_a_clear_message_and_a_record(tmp_path, capsys):
    """The real probe, on this CPU-only machine."""
    code = gpu_measure.main(["measure", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert code == 2
    assert "no CUDA GPU visible to PyTorch" in capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "gpu_measure.json").read_text())
    assert record["card"] is None and record["probe"]["cuda_available"] is False
    assert record["probe"]["torch"] == torch.__version__
    statuses = {p["name"]: p["status"] for p in record["phases"]}
    assert statuses["probe"] == "passed"
    assert {statuses[s] for s in ["pytest", *gpu_measure.SHAPES, "trained"]} == {"skipped"}
    reasons = {p["name"]: p["reason"] for p in record["phases"] if p["name"] != "probe"}
    assert "no CUDA GPU" in reasons["pytest"] and "no run folder carried" in reasons["trained"]
    assert record["finished"] and record["complete"] is False


def fake_phases(results: dict):
    """A run_phase that writes what a GPU run would (probe file, shape parts) and returns ``results``."""

    def run(phase, time_left_s):
        if phase.name == "probe":
            into = phase.command[phase.command.index("--into") + 1]
            Path(into).write_text(json.dumps({"cuda_available": True, "gpu": "NVIDIA H100 80GB HBM3",
                                              "torch": "2.11.0+cu130"}))
        if phase.name in gpu_measure.SHAPES and results.get(phase.name) != "timed_out":
            out = phase.command[phase.command.index("--out") + 1]
            Path(out).write_text(json.dumps({"shape": phase.name, "gpu": "NVIDIA H100 80GB HBM3", "rows": [
                {"target": "torch-cuda-compile-fp16", "status": "measured",
                 "latency": [{"batch_size": 1, "p50_ms": 0.5}, {"batch_size": 32, "p50_ms": 1.0}]},
                {"target": "torch-cuda-graph-fp16", "status": "measured",
                 "latency": [{"batch_size": 1, "p50_ms": 0.1}, {"batch_size": 32, "p50_ms": 0.4}]},
            ], "done": True}))
        return {"name": phase.name, "status": results.get(phase.name, "passed"), "seconds": 1.0,
                **({"reason": "still running after 75 s; killed"} if results.get(phase.name) == "timed_out"
                   else {})}

    return run


def test_every_phase_is_recorded_with_the_card_and_a_hang_does_not_lose_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_measure, "run_phase", fake_phases({"minilm-l6-6x384": "timed_out"}))
    out = tmp_path / "out"
    (tmp_path / "work" / "shapes").mkdir(parents=True)
    stale = tmp_path / "work" / "shapes" / "minilm-l6-6x384.json"  # an earlier call's, on a warm machine
    stale.write_text(json.dumps({"rows": [{"target": "torch-cuda-graph-fp16", "status": "measured"}]}))
    code = gpu_measure.main(["measure", "--out", str(out), "--work", str(tmp_path / "work")])
    assert code == 1  # one phase did not pass
    record = json.loads((out / "gpu_measure.json").read_text())
    assert record["card"] == "NVIDIA H100 80GB HBM3"
    statuses = {p["name"]: p["status"] for p in record["phases"]}
    assert statuses == {"probe": "passed", "trained": "skipped", "pytest": "passed",
                        "student-3x384": "passed", "minilm-l6-6x384": "timed_out",
                        "bert-base-12x768": "passed"}
    shapes = json.loads((out / "gpu_shapes.json").read_text())
    assert shapes["card"] == "NVIDIA H100 80GB HBM3"
    assert set(shapes["shapes"]) == {"student-3x384", "bert-base-12x768"}  # the hung one wrote nothing
    assert shapes["checks"]["student-3x384"]["b1_target_met"] is True  # 0.1 <= 0.15
    assert shapes["checks"]["bert-base-12x768"]["best_graph_row"] == "torch-cuda-graph-fp16"
    assert shapes["checks"]["student_b32_throughput_at_least_2x"] is True  # 1.0 / 0.4 = 2.5


def test_checks_of_rows_not_measured_are_none_never_passed():
    rows = [{"target": "torch-cuda-compile-fp16", "status": "measured",
             "latency": [{"batch_size": 1, "p50_ms": 0.5}, {"batch_size": 32, "p50_ms": 0.6}]},
            {"target": "torch-cuda-graph-fp16", "status": "failed", "reason": "capture broke"},
            {"target": "torch-cuda-graph-int8wo", "status": "measured",
             "latency": [{"batch_size": 1, "p50_ms": 0.2}, {"batch_size": 32, "p50_ms": 0.5}]}]
    checks = gpu_measure.shape_checks({"student-3x384": {"rows": rows}, "bert-base-12x768": {"rows": []}})
    student = checks["student-3x384"]
    assert student["best_graph_row"] == "torch-cuda-graph-int8wo" and student["b1_target_met"] is False
    assert student["b32_throughput_vs_baseline"] == 1.2
    assert checks["student_b32_throughput_at_least_2x"] is False
    assert checks["bert-base-12x768"]["b1_target_met"] is None
    assert gpu_measure.shape_checks({})["student_b32_throughput_at_least_2x"] is None


def test_install_status_comes_from_the_shell_script(monkeypatch, tmp_path):
    log = tmp_path / "install.log"
    log.write_text("ERROR: tokenizers-0.22.2 is not a supported wheel on this platform.\n")
    monkeypatch.setenv("SLIMBERT_GPU_INSTALL", "failed (pip install from .whl)")
    monkeypatch.setenv("SLIMBERT_GPU_INSTALL_LOG", str(log))
    status = gpu_measure.install_status()
    assert status["status"].startswith("failed") and "not a supported wheel" in status["log_tail"][0]
    monkeypatch.delenv("SLIMBERT_GPU_INSTALL")
    assert gpu_measure.install_status()["status"] == "not run through gpu_measure.sh"


def test_pack_run_keeps_the_student_in_fp16_and_the_dataset(tmp_path, monkeypatch):
    run = tmp_path / "run"
    build_tiny_bert(run / "student", num_labels=2)
    (run / "student" / "manifest.json").write_text("{}")
    (run / "recipe.json").write_text(json.dumps({"seed": 0, "dataset": {"source": "rt-snippets"}}))
    from slimbert.assets import cache_root

    asset = cache_root() / "assets" / "rt-snippets"
    asset.mkdir(parents=True)
    (asset / "movieReviewSnippets_GroundTruth.txt").write_text("1\t2.0\tgood\n")
    (asset / ".complete").write_text("")
    packed = gpu_measure.pack_run(run, tmp_path / "packed")
    out = tmp_path / "packed"
    assert packed["models"] == ["student"] and "fp16" in packed["weights"]
    assert json.loads((out / "PACKED.json").read_text()) == packed
    assert {p.name for p in (out / "student").iterdir()} >= {"config.json", "model.safetensors", "vocab.txt"}
    assert not (out / "student" / "manifest.json").exists()
    tensors = load_file(out / "student" / "model.safetensors")
    original = load_file(run / "student" / "model.safetensors")
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    name = "classifier.weight"
    assert torch.allclose(tensors[name].float(), original[name], atol=1e-3)
    from slimbert.models import load_classifier

    assert next(load_classifier(out / "student").parameters()).dtype == torch.float32  # loaded back as fp32
    monkeypatch.setenv("SLIMBERT_CACHE", str(out / "cache"))  # as the trained phase sets it
    from slimbert.assets import fetch_asset

    snippets = fetch_asset("rt-snippets") / "movieReviewSnippets_GroundTruth.txt"  # no download
    assert snippets.read_text() == "1\t2.0\tgood\n"


def test_pack_run_refuses_a_dataset_it_cannot_carry(tmp_path):
    run = tmp_path / "run"
    build_tiny_bert(run / "student", num_labels=2)
    (run / "recipe.json").write_text(json.dumps({"seed": 0, "dataset": {"source": "reviews.csv"}}))
    with pytest.raises(SystemExit, match="not a built-in one"):
        gpu_measure.pack_run(run, tmp_path / "packed")


def test_the_shell_entry_point_records_a_failed_install_and_stops_without_cuda(tmp_path):
    """gpu_measure.sh as the device call runs it, here: a broken wheel does not stop it, no GPU does."""
    import subprocess

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "broken-1.0-py3-none-any.whl").write_text("not a zip")
    env = {**os.environ, "PYTHON": PY, "SLIMBERT_WHEELS": str(wheels),
           "SLIMBERT_GPU_WORK": str(tmp_path / "w")}
    env.pop("OUT", None)
    script = gpu_measure.ROOT / "benchmarks" / "gpu_measure.sh"
    proc = subprocess.run(["bash", str(script), "--out", str(tmp_path / "out"), "--phases", "shapes"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU visible to PyTorch" in proc.stderr
    record = json.loads((tmp_path / "out" / "gpu_measure.json").read_text())
    assert record["install"]["status"].startswith("failed") and record["install"]["log_tail"]
    assert record["args"]["phases"] == ["shapes"] and record["args"]["work"] == str(tmp_path / "w")
