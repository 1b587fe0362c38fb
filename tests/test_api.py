"""The Python API: every step is importable from `slimbert`, and step functions make their folders."""

from pathlib import Path

import pytest

import slimbert
from slimbert.artifacts import sha256_json


def test_every_api_name_resolves_and_is_listed():
    for name in slimbert.__all__:
        assert getattr(slimbert, name) is not None
    assert {"run_recipe", "plan_recipe", "prune", "quantize_torch", "export_ort_mobile"} <= set(dir(slimbert))


def test_export_then_quantize_into_new_folders(tiny_classifier, sentiment_csv, tmp_path):
    """The README's step-by-step snippet, on a tiny model."""
    data = slimbert.load_dataset(slimbert.DatasetConfig(source=str(sentiment_csv), max_length=32,
                                                        split={"dev": 0.25, "test": 0.2}))
    assert len(data.splits["dev"]) == 100
    dev = slimbert.encode_split(slimbert.load_tokenizer(tiny_classifier), data.splits["dev"], 32)
    onnx, int8 = tmp_path / "new" / "onnx", tmp_path / "new" / "int8"
    slimbert.export_onnx(Path(tiny_classifier), onnx, slimbert.OnnxExportConfig(), dev)
    metrics = slimbert.quantize_onnx(onnx, int8, slimbert.OnnxQuantizeConfig(), dev)
    assert (int8 / "model.onnx").is_file() and metrics["mode"] == "dynamic"


# -- one function per CLI command ----------------------------------------------------------


def test_every_command_has_a_python_twin():
    from slimbert.cli import main

    twins = {"compress": "compress_model", "export": "export_model", "bench": "bench_models",
             "gate": "gate_models", "deploy": "deploy_model", "assets": "list_assets", "run": "run_recipe",
             "optimize": "optimize"}
    assert set(main.commands) == set(twins)
    assert all(callable(getattr(slimbert, twin)) for twin in [*twins.values(), "list_targets", "fetch_assets",
                                                              "device_status", "rollback_device"])


def test_export_then_bench_recall_the_split_the_model_was_made_with(tiny_classifier, sentiment_csv,
                                                                    tmp_path):
    """The API keeps a model off its own training sentences, as the CLI does."""
    dataset = {"source": str(sentiment_csv), "max_length": 32, "split": {"dev": 0.25, "test": 0.3}}
    exported = slimbert.export_model(tiny_classifier, "onnx", out=tmp_path / "e", dataset=dataset, seed=3,
                                     progress=False)
    onnx = exported.artifact("onnx")
    assert (onnx.path / "model.onnx").is_file() and onnx.manifest.config["opset"] == 17
    fast = {"batch_sizes": [1], "seq_len": 16, "budget_s": 0.01}
    benched = slimbert.bench_models([onnx.path], out=tmp_path / "b", progress=False, **fast)
    report = slimbert.load_report(benched.report_path.with_name("report.json"))
    assert report.dataset["fingerprint"] == onnx.manifest.extra["dataset"]["fingerprint"]
    assert report.dataset["examples"] == 120  # the recorded test split (30% of 400), not the default 20%
    assert report.rows[0].fingerprint == sha256_json(onnx.manifest.files)
    assert report.rows[0].artifact == "onnx" and report.config["budget_s"] == 0.01


def test_api_twins_check_their_inputs_before_running(tiny_classifier, tmp_path):
    with pytest.raises(slimbert.SlimbertError, match="does not quantize"):
        slimbert.export_model(tiny_classifier, "onnx", tolerance=0.5, out=tmp_path / "o")
    with pytest.raises(slimbert.SlimbertError, match="unknown export format"):
        slimbert.export_model(tiny_classifier, "onnx-int4", out=tmp_path / "o")
    with pytest.raises(slimbert.SlimbertError, match="would replace its own input"):
        slimbert.compress_model(tmp_path / "o" / "prune", "prune", out=tmp_path / "o")
    with pytest.raises(slimbert.SlimbertError, match=r"unknown key 'epoch' in the settings"):
        slimbert.compress_model(tiny_classifier, "finetune", {"epoch": 2}, out=tmp_path / "o")
    with pytest.raises(slimbert.SlimbertError, match=r"settings\['epochs'\] must be int"):
        slimbert.compress_model(tiny_classifier, "finetune", {"epochs": "two"}, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_compress_model_runs_one_stage_on_the_model(tiny_encoder, sentiment_csv, tmp_path):
    dataset = {"source": str(sentiment_csv), "max_length": 32}
    result = slimbert.compress_model(tiny_encoder, "finetune", {"epochs": 1, "batch_size": 32}, out=tmp_path,
                                     name="teacher", dataset=dataset, progress=False)
    teacher = result.artifact("teacher")
    assert teacher.path == tmp_path / "teacher" and teacher.manifest.stage_type == "finetune"
    assert teacher.manifest.config["epochs"] == 1
    assert teacher.manifest.extra["dataset_config"]["max_length"] == 32


def test_gate_models_gates_report_files(tmp_path):
    import json

    from tests.test_gate import BASE_WRONG, N, base_and

    report, _, _ = base_and(range(N - 380, N))  # the candidate is 5 points worse
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    pair = {"baseline_artifact": "student-onnx", "candidate_artifact": "student-int8"}
    failed = slimbert.gate_models(path, **pair, junit=tmp_path / "gate.xml")
    passed = slimbert.gate_models(path, **pair, max_drop=10)
    assert not failed.passed and passed.passed and failed.drop_points == pytest.approx(5.0)
    assert 'failures="2"' in (tmp_path / "gate.xml").read_text()  # the drop and its CI bound
    with pytest.raises(slimbert.SlimbertError, match="same row"):
        same, _, _ = base_and(BASE_WRONG)
        path.write_text(json.dumps(dict(same, rows=same["rows"][:1])))
        slimbert.gate_models(path)


def test_list_targets_and_assets(tmp_path, monkeypatch):
    targets = {t.name: t for t in slimbert.list_targets()}
    assert targets["ort-cpu"].unavailable is None and targets["ort-cpu"].kind == "onnx"
    assert {"minilm-l6", "rt-snippets"} <= {a.name for a in slimbert.list_assets()}
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SLIMBERT_CACHE", str(blocker / "cache"))
    with pytest.raises(slimbert.SlimbertError, match="not writable"):
        slimbert.fetch_assets(["minilm-l6"])
