import json

import numpy as np
import pytest

from slimbert.errors import ExportError
from slimbert.export.onnx import OnnxExportConfig, export_onnx
from slimbert.export.ort_mobile import (
    REQUIRED_OPS_AND_TYPES_FILE,
    REQUIRED_OPS_FILE,
    OrtMobileConfig,
    _split_entries,
    export_ort_mobile,
    read_required_ops,
)
from slimbert.formats import ORT_FILE
from slimbert.pipeline import run_recipe
from slimbert.quantize.config import OnnxQuantizeConfig
from slimbert.quantize.onnx_ptq import quantize_onnx
from slimbert.recipe import recipe_from_dict
from slimbert.runtimes import get_runtime
from tests.conftest import tiny_recipe


@pytest.fixture(scope="module")
def fp32_onnx(tiny_classifier, dev_enc, tmp_path_factory):
    fp32 = tmp_path_factory.mktemp("onnx")
    export_onnx(tiny_classifier, fp32, OnnxExportConfig(), dev_enc)
    return fp32


@pytest.fixture(scope="module")
def int8_onnx(fp32_onnx, dev_enc, tmp_path_factory):
    int8 = tmp_path_factory.mktemp("int8")
    quantize_onnx(fp32_onnx, int8, OnnxQuantizeConfig(), dev_enc)
    return int8


@pytest.mark.parametrize(("source", "agreement", "passes"), [
    ("int8", 1.0, True),    # fusions move INT8 logits by ~0.1 on a real student, predictions stay
    ("int8", 0.95, False),  # ... but not the predictions
    ("fp32", 1.0, False),   # a float graph has no such excuse
])
def test_validation_of_an_int8_source_is_by_agreeing_predictions(source, agreement, passes, fp32_onnx,
                                                                 int8_onnx, dev_enc, tmp_path, monkeypatch):
    import slimbert.export.ort_mobile as ort_mobile

    monkeypatch.setattr(ort_mobile, "compare_logits",
                        lambda ref, cand: {"max_abs_diff": 0.05, "agreement": agreement})
    src = int8_onnx if source == "int8" else fp32_onnx
    if passes:
        metrics = export_ort_mobile(src, tmp_path, OrtMobileConfig(), dev_enc)
        assert metrics["validation"]["quantized_source"] is True
    else:
        with pytest.raises(ExportError, match="max .logit diff. 5.00e-02 > atol 0.001"):
            export_ort_mobile(src, tmp_path, OrtMobileConfig(), dev_enc)


def test_int8_graph_converts_with_reduced_build_config_and_coverage(int8_onnx, dev_enc, tmp_path):
    metrics = export_ort_mobile(int8_onnx, tmp_path, OrtMobileConfig(), dev_enc)
    names = {p.name for p in tmp_path.iterdir()}
    assert {ORT_FILE, REQUIRED_OPS_FILE, REQUIRED_OPS_AND_TYPES_FILE, "config.json", "vocab.txt"} <= names
    assert metrics["validation"]["max_abs_diff"] < 1e-4 and metrics["validation"]["agreement"] == 1.0
    coverage = metrics["op_coverage"]
    assert "com.microsoft:QAttention" in coverage["required_ops"]
    assert "com.microsoft:QAttention" in coverage["contrib_ops"]
    assert "com.microsoft:QAttention" in coverage["nnapi_unsupported"]
    assert "ai.onnx:Gather" in coverage["xnnpack_ep_unsupported"]
    assert "input_ids" in coverage["nnapi_note"]
    assert read_required_ops(tmp_path / REQUIRED_OPS_AND_TYPES_FILE) == coverage["required_ops"]


def test_ort_mobile_runtime_runs_dynamic_shapes_with_phone_threads(int8_onnx, dev_enc, tmp_path):
    export_ort_mobile(int8_onnx, tmp_path, OrtMobileConfig(optimization_level="basic"), dev_enc)
    runtime = get_runtime("ort-mobile")
    assert runtime.kind == "ort-mobile" and runtime.device == "mobile" and 1 <= runtime.default_threads <= 4
    session = runtime.load(tmp_path)
    ids = np.full((3, 9), 7, dtype=np.int64)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    reference = get_runtime("ort-cpu").load(int8_onnx).run(batch)
    np.testing.assert_allclose(session.run(batch), reference, atol=1e-4)


def test_missing_source_graph_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="no model.onnx"):
        export_ort_mobile(tmp_path, tmp_path / "out", OrtMobileConfig(), None)


def test_config_entries_with_type_json_split_into_op_names():
    entries = 'Add,Cast{"inputs": {"0": ["float", "int32_t"]}, "outputs": {"0": ["int64_t"]}},Concat'
    assert _split_entries(entries) == ["Add", "Cast", "Concat"]


def test_recipe_exports_and_benches_ort_mobile(tiny_classifier, sentiment_csv, tmp_path):
    stages = [{"type": "export-onnx", "name": "onnx"}, {"type": "quantize-onnx", "name": "int8"},
              {"type": "export-ort-mobile", "name": "mobile"},
              {"type": "bench", "batch_sizes": [1], "seq_len": 16, "min_iters": 2, "budget_s": 0.05,
               "warmup": 1}]
    recipe = recipe_from_dict(tiny_recipe(tiny_classifier, sentiment_csv, stages))
    run_recipe(recipe, tmp_path, progress=False)
    manifest = json.loads((tmp_path / "mobile" / "manifest.json").read_text())
    assert manifest["kind"] == "ort-mobile" and manifest["parents"].keys() == {"int8"}
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    mobile = next(r for r in rows if r["artifact"] == "mobile")
    assert mobile["target"] == "ort-mobile" and mobile["device"] == "mobile"
    assert mobile["threads"] == get_runtime("ort-mobile").default_threads
    assert mobile["predictions"] == next(r for r in rows if r["artifact"] == "int8")["predictions"]
    assert "<td>ort-mobile</td>" in (tmp_path / "report.html").read_text()
