"""quantize-torch: PT2E INT8 with torchao's X86InductorQuantizer or Neural Compressor's autotune."""

import dataclasses
import json
import logging
import re
import shutil
import sys

import numpy as np
import pytest
import torch

from slimbert.data import encode_split
from slimbert.errors import ExportError, RuntimeUnavailable, SlimbertError
from slimbert.formats import PT2_FILE, PT2_META_FILE, detect
from slimbert.models import load_classifier, load_tokenizer
from slimbert.pipeline import run_recipe
from slimbert.quantize.config import TorchQuantizeConfig
from slimbert.quantize.torch_ptq import BACKENDS, quantize_torch
from slimbert.recipe import recipe_from_dict
from slimbert.runtimes import get_runtime
from tests.conftest import build_tiny_bert, tiny_recipe, token_batch

FAST = {"calibration_examples": 64}
TINY_LINEARS = 4 * 6 + 2  # q, k, v, attention output, FFN in and out per layer; pooler, classifier


@pytest.fixture(scope="module")
def static_artifact(tiny_classifier, dev_enc, train_enc, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt2e-static")
    return out, quantize_torch(tiny_classifier, out, TorchQuantizeConfig(**FAST), dev_enc, train_enc)


def _batch(rows: int, seq: int) -> dict[str, np.ndarray]:
    return token_batch(rows, seq, seed=rows)


def test_static_artifact_saves_reloads_and_agrees_with_fp32(static_artifact, tiny_classifier):
    out, metrics = static_artifact
    assert {PT2_FILE, PT2_META_FILE, "config.json", "vocab.txt"} <= {p.name for p in out.iterdir()}
    assert detect(out) == "pt2e"
    assert metrics["backend"] == "torchao-x86" and metrics["mode"] == "static"
    assert metrics["int8_layers"] == TINY_LINEARS and metrics["fp32_layers"] == []
    assert metrics["agreement_with_source"]["agreement"] >= 0.95
    drop = 100 * (metrics["dev_accuracy_fp32"] - metrics["dev_accuracy"])
    assert metrics["dev_drop_points"] == pytest.approx(drop)
    assert metrics["reload_check"]["max_abs_diff"] <= 1e-4
    assert metrics["calibration"] == {"examples": 64, "batch_size": 32, "batches": 2}
    assert isinstance(metrics["reduce_range"], bool) and metrics["reduce_range_why"]
    # the file holds the INT8 weights only, not the fp32 originals beside them
    program = torch.export.load(str(out / PT2_FILE))
    weights = [t for t in program.state_dict.values() if t.dim() == 2]
    assert sum(t.dtype == torch.int8 for t in weights) == TINY_LINEARS
    assert sum(t.dtype == torch.float32 for t in weights) == 3  # word, position, type embeddings
    # the saved program, through the runtime, on shapes it was not calibrated on
    session = get_runtime("torch-pt2e-cpu-eager").load(out, threads=1)
    reference = get_runtime("torch-cpu").load(tiny_classifier, threads=1)
    for rows, seq in ((1, 5), (3, 17), (9, 64)):
        batch = _batch(rows, seq)
        quantized, fp32 = session.run(batch), reference.run(batch)
        assert quantized.shape == fp32.shape == (rows, 2)
        assert np.abs(quantized - fp32).max() < 5e-3  # logits of this random model are ~0.05
    with pytest.raises(SlimbertError, match="longer than the 64"):
        session.run(_batch(1, 65))


def test_dynamic_mode_quantizes_activations_at_run_time(tiny_classifier, dev_enc, train_enc, tmp_path):
    metrics = quantize_torch(tiny_classifier, tmp_path, TorchQuantizeConfig(mode="dynamic", **FAST),
                             dev_enc, train_enc)
    assert metrics["mode"] == "dynamic" and metrics["calibration"]["batches"] == 1
    assert metrics["int8_layers"] == TINY_LINEARS and "run time" in metrics["activations"]
    assert metrics["agreement_with_source"]["agreement"] >= 0.95
    program = torch.export.load(str(tmp_path / PT2_FILE))
    assert any("choose_qparams" in str(n.target) for n in program.graph.nodes)
    assert json.loads((tmp_path / PT2_META_FILE).read_text())["mode"] == "dynamic"


def test_inc_autotune_meets_a_loose_tolerance_and_reports(tiny_classifier, dev_enc, train_enc, tmp_path):
    cfg = TorchQuantizeConfig(backend="inc", tolerance=5.0, **FAST)
    metrics = quantize_torch(tiny_classifier, tmp_path, cfg, dev_enc, train_enc)
    tuning = metrics["tuning"]
    assert tuning["met"] and tuning["tolerance_points"] == 5.0 and metrics["dev_drop_points"] <= 5.0
    # points -> INC's relative tolerable_loss
    assert tuning["tolerable_loss"] == pytest.approx(0.05 / metrics["dev_accuracy_fp32"], rel=1e-6)
    assert tuning["trials"] and {t["round"] for t in tuning["trials"]} == {"inc-default"}
    assert tuning["chosen_config"]["w_dtype"] == "int8" and tuning["chosen_config"]["fp32_layers"] == []
    assert metrics["fp32_layers"] == [] and metrics["int8_layers"] == TINY_LINEARS
    assert "qconfig" in tuning["fp32_layers_source"]
    assert "Neural Compressor" in metrics["quantizer"]
    assert get_runtime("torch-pt2e-cpu-eager").load(tmp_path).run(_batch(2, 8)).shape == (2, 2)


# ---- the tolerance ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fragile(tmp_path_factory, tiny_data):
    """A 1-layer classifier whose decisions sit within INT8 noise of its boundary.

    The classifier bias is moved to the median dev margin and the dev labels are the fp32
    model's own predictions, so fp32 scores 100% and every prediction INT8 flips costs accuracy.
    """
    from slimbert.runtimes.torch_runtime import predict_logits

    folder = build_tiny_bert(tmp_path_factory.mktemp("models") / "fragile", layers=1, num_labels=2)
    dev = encode_split(load_tokenizer(folder), tiny_data.splits["dev"], 32)
    train = encode_split(load_tokenizer(folder), tiny_data.splits["train"], 32)
    model = load_classifier(folder).eval()
    logits = predict_logits(model, dev)
    with torch.no_grad():
        model.classifier.bias[1] -= float(np.median(logits[:, 1] - logits[:, 0]))
    model.save_pretrained(folder)
    dev = dataclasses.replace(dev, labels=predict_logits(model, dev).argmax(-1))
    return folder, dev, train


def test_torchao_tolerance_keeps_the_most_sensitive_layers_fp32(fragile, tmp_path):
    folder, dev, train = fragile
    (tmp_path / "plain").mkdir()
    (tmp_path / "repaired").mkdir()
    no_repair = TorchQuantizeConfig(tolerance=100.0, **FAST)
    plain = quantize_torch(folder, tmp_path / "plain", no_repair, dev, train)
    assert plain["dev_accuracy_fp32"] == 1.0 and plain["dev_drop_points"] > 10  # the premise
    cfg = TorchQuantizeConfig(tolerance=10.0, **FAST)
    metrics = quantize_torch(folder, tmp_path / "repaired", cfg, dev, train)
    repair = metrics["repair"]
    assert repair["met"] and metrics["dev_drop_points"] <= 10.0
    assert repair["initial_dev_drop_points"] == pytest.approx(plain["dev_drop_points"])
    assert 1 <= len(repair["fp32_layers"]) <= TorchQuantizeConfig().max_fallback_layers
    assert sorted(metrics["fp32_layers"]) == sorted(repair["fp32_layers"])  # the graph agrees with the report
    assert len(repair["sensitivity"]) == 8 and repair["tries"][0]["fp32_layers"] == 0
    mse = [r["logit_mse"] for r in repair["sensitivity"]]
    assert mse == sorted(mse, reverse=True)
    assert metrics["int8_layers"] == 8 - len(repair["fp32_layers"])


def test_inc_tolerance_falls_back_to_fp32_layers(fragile, tmp_path):
    folder, dev, train = fragile
    cfg = TorchQuantizeConfig(backend="inc", tolerance=10.0, **FAST)
    metrics = quantize_torch(folder, tmp_path, cfg, dev, train)
    tuning = metrics["tuning"]
    default = [t for t in tuning["trials"] if t["round"] == "inc-default"]
    assert len(default) == 4 and all(t["dev_drop_points"] > 10 for t in default)  # INC's own set fails
    fallback = [t for t in tuning["trials"] if t["round"] == "fp32-fallback"]
    assert fallback and fallback[-1]["dev_drop_points"] <= 10.0
    assert tuning["met"] and metrics["dev_drop_points"] <= 10.0
    assert metrics["fp32_layers"] and sorted(metrics["fp32_layers"]) == tuning["chosen_config"]["fp32_layers"]
    assert fallback[-1]["fp32_layers_in_graph"] == metrics["fp32_layers"]


def test_inc_unmet_tolerance_keeps_the_best_and_says_so(fragile, tmp_path, caplog):
    folder, dev, train = fragile
    cfg = TorchQuantizeConfig(backend="inc", tolerance=0.0, max_fallback_layers=1, **FAST)
    with caplog.at_level(logging.WARNING, logger="slimbert.quantize.inc"):
        metrics = quantize_torch(folder, tmp_path, cfg, dev, train)
    tuning = metrics["tuning"]
    assert not tuning["met"] and metrics["dev_drop_points"] > 0
    best = min(t["dev_drop_points"] for t in tuning["trials"])
    assert tuning["final_dev_drop_points"] == pytest.approx(best) == pytest.approx(metrics["dev_drop_points"])
    assert any("found no config within 0 points" in r.message for r in caplog.records)
    assert (tmp_path / PT2_FILE).is_file()


# ---- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "examples", "message"), [
    ("static", 3, "at least one full batch (32 examples); the calibration split has 3"),
    ("static", 0, "the calibration split has 0"),
    ("dynamic", 0, "at least one example"),
])
def test_calibration_smaller_than_a_batch_or_empty(mode, examples, message, tiny_classifier, dev_enc,
                                                   train_enc, tmp_path):
    calibration = train_enc.head(examples)
    with pytest.raises(ExportError, match=re.escape(message)):
        quantize_torch(tiny_classifier, tmp_path, TorchQuantizeConfig(mode=mode), dev_enc, calibration)


def test_no_calibration_split_at_all(tiny_classifier, dev_enc, tmp_path):
    with pytest.raises(ExportError, match="has 0"):
        quantize_torch(tiny_classifier, tmp_path, TorchQuantizeConfig(), dev_enc, None)


def test_an_already_quantized_model_is_refused(static_artifact, tiny_classifier, dev_enc, train_enc,
                                               tmp_path):
    with pytest.raises(ExportError, match="already quantized: it holds a PT2E program"):
        quantize_torch(static_artifact[0], tmp_path / "a", TorchQuantizeConfig(), dev_enc, train_enc)
    hub_quantized = tmp_path / "hub"
    shutil.copytree(tiny_classifier, hub_quantized)
    config = json.loads((hub_quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "torchao", "quant_type": "Int8WeightOnlyConfig"}
    (hub_quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=r"quantization_config \(torchao\)"):
        quantize_torch(hub_quantized, tmp_path / "b", TorchQuantizeConfig(), dev_enc, train_enc)


def test_inc_backend_without_neural_compressor_names_the_fix(monkeypatch, tiny_classifier, dev_enc, train_enc,
                                                             tmp_path):
    for name in [n for n in sys.modules if n.startswith("neural_compressor")] + ["neural_compressor"]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if it were not installed
    with pytest.raises(RuntimeUnavailable, match="backend 'inc' cannot run here") as err:
        quantize_torch(tiny_classifier, tmp_path, TorchQuantizeConfig(backend="inc"), dev_enc, train_enc)
    assert "neural-compressor[pt]==3.10" in err.value.hint and "torchao-x86" in err.value.hint
    assert not (tmp_path / PT2_FILE).exists()


@pytest.mark.parametrize("bad", [{"backend": "inc", "mode": "dynamic"}, {"tolerance": -1}, {"max_seq_len": 2},
                                 {"target_isa": "z80"}, {"calibration_batch_size": 0},
                                 {"max_fallback_layers": 0}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        TorchQuantizeConfig(**bad)


def test_backends_form_a_registry():
    assert set(BACKENDS) == {"torchao-x86", "inc"}
    assert BACKENDS["inc"].modes == ("static",) and "dynamic" in BACKENDS["torchao-x86"].modes


def test_max_seq_len_beyond_positions_is_refused(tiny_classifier, dev_enc, train_enc, tmp_path):
    with pytest.raises(ExportError, match="beyond"):
        quantize_torch(tiny_classifier, tmp_path, TorchQuantizeConfig(max_seq_len=100), dev_enc, train_enc)


# ---- recipe, CLI, bench ---------------------------------------------------------------------

def test_recipe_benches_the_pt2e_artifact_beside_onnx(tiny_classifier, sentiment_csv, tmp_path):
    stages = [
        {"type": "export-onnx", "name": "onnx", "input": "model"},
        {"type": "quantize-torch", "name": "pt2e", "input": "model", **FAST},
        {"type": "bench", "artifacts": ["onnx", "pt2e"], "targets": ["ort-cpu", "torch-pt2e-cpu-eager"],
         "batch_sizes": [1], "seq_len": 16, "min_iters": 2, "budget_s": 0.05, "warmup": 1,
         "reference": "onnx"},
    ]
    result = run_recipe(recipe_from_dict(tiny_recipe(tiny_classifier, sentiment_csv, stages)), tmp_path,
                        progress=False)
    manifest = result.artifact("pt2e").manifest
    assert manifest.kind == "pt2e" and PT2_FILE in manifest.files
    assert manifest.metrics["dev_accuracy_fp32"] > 0 and "dev_drop_points" in manifest.metrics
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(r["artifact"], r["target"]) for r in report["rows"]] == [("onnx", "ort-cpu"),
                                                                      ("pt2e", "torch-pt2e-cpu-eager")]
    assert report["rows"][1]["accuracy"]["accuracy"] > 0


def test_cli_bad_input_exits_2_without_a_traceback(tiny_classifier, sentiment_csv, tmp_path, monkeypatch):
    from tests.test_cli import assert_clean_error, invoke

    common = ["--model", tiny_classifier, "--dataset", sentiment_csv, "--max-length", 32]
    result = invoke("compress", "--stage", "quantize-torch", *common, "--set", "calibration_batch_size=1000",
                    "--out", tmp_path / "a")
    assert_clean_error(result, "at least one full batch (1000 examples)")
    monkeypatch.setitem(sys.modules, "neural_compressor", None)
    for name in [n for n in sys.modules if n.startswith("neural_compressor.")]:
        monkeypatch.setitem(sys.modules, name, None)
    result = invoke("compress", "--stage", "quantize-torch", *common, "--set", "backend=inc",
                    "--out", tmp_path / "b")
    assert_clean_error(result, "neural-compressor[pt]")
