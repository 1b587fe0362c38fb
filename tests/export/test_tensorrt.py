import json
import stat

import numpy as np
import pytest

from slimbert.errors import ExportError
from slimbert.export.onnx import OnnxExportConfig, export_onnx
from slimbert.export.tensorrt import TensorrtConfig, export_tensorrt
from slimbert.formats import ENGINE_FILE, ONNX_FILE
from slimbert.formats import TENSORRT_BUILD_SCRIPT as BUILD_SCRIPT
from slimbert.runtimes import all_runtimes, get_runtime


@pytest.fixture(scope="module")
def unfused(tiny_classifier, dev_enc, tmp_path_factory):
    out = tmp_path_factory.mktemp("unfused")
    export_onnx(tiny_classifier, out, OnnxExportConfig(optimize=False), dev_enc)
    return out


def test_artifact_carries_the_build_command_for_the_device(unfused, tmp_path):
    cfg = TensorrtConfig(precision="fp16", max_batch=8, opt_seq=64, max_seq=64, build="never")
    metrics = export_tensorrt(unfused, tmp_path, cfg)
    script = (tmp_path / BUILD_SCRIPT).read_text()
    assert script.startswith("#!/bin/sh") and (tmp_path / BUILD_SCRIPT).stat().st_mode & stat.S_IXUSR
    assert metrics["trtexec"] in script and "--fp16" in script and f"--onnx={ONNX_FILE}" in script
    assert "--maxShapes=input_ids:8x64,attention_mask:8x64,token_type_ids:8x64" in script
    assert "--optShapes=input_ids:1x64" in script and "--timingCacheFile=timing.cache" in script
    shapes = json.loads((tmp_path / "tensorrt.json").read_text())
    assert shapes["inputs"]["input_ids"] == {"min": [1, 1], "opt": [1, 64], "max": [8, 64]}
    assert metrics["engine"] is None and metrics["engine_not_built"] == "build: never"
    assert "--sparsity" not in script
    (tmp_path / "s").mkdir()
    sparse = export_tensorrt(unfused, tmp_path / "s", TensorrtConfig(sparse_weights=True, build="never"))
    assert "--sparsity=enable" in sparse["trtexec"]
    assert (tmp_path / ONNX_FILE).is_file() and (tmp_path / "config.json").is_file()


def test_fused_graph_is_refused_with_the_fix(exported, tmp_path):
    src, _ = exported
    with pytest.raises(ExportError, match="contrib ops TensorRT cannot parse.*Attention"):
        export_tensorrt(src, tmp_path, TensorrtConfig(build="never"))


def test_int8_needs_a_qdq_graph(unfused, tmp_path, dev_enc, train_enc):
    with pytest.raises(ExportError, match="has none"):
        export_tensorrt(unfused, tmp_path / "a", TensorrtConfig(precision="int8", build="never"))
    from slimbert.quantize.config import OnnxQuantizeConfig
    from slimbert.quantize.onnx_ptq import quantize_onnx

    qdq = tmp_path / "qdq"
    qdq.mkdir()
    quantize_onnx(unfused, qdq, OnnxQuantizeConfig(mode="fp8"), dev_enc, train_enc)
    (tmp_path / "b").mkdir()
    metrics = export_tensorrt(qdq, tmp_path / "b", TensorrtConfig(precision="fp8", build="never"))
    assert "--fp8" in metrics["trtexec"]


@pytest.mark.parametrize("bad", [{"min_batch": 4, "opt_batch": 2}, {"max_seq": 0}, {"workspace_gb": 0}])
def test_bad_shape_ranges(bad):
    with pytest.raises(ValueError):
        TensorrtConfig(**bad)


def test_runtime_says_how_to_get_tensorrt():
    reason = all_runtimes()["tensorrt"].unavailable_reason()
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "tensorrt" in reason and "build_engine.sh" in reason


@pytest.mark.gpu
def test_engine_matches_onnx_runtime(unfused, dev_enc, tmp_path):
    reason = all_runtimes()["tensorrt"].unavailable_reason()
    if reason:
        pytest.skip(reason)
    metrics = export_tensorrt(unfused, tmp_path, TensorrtConfig(precision="fp32", max_seq=32, opt_seq=32))
    assert (tmp_path / ENGINE_FILE).is_file() and metrics["engine"]["layers"] > 0
    assert (tmp_path / "layers.json").is_file() and (tmp_path / "timing.cache").is_file()
    ort = get_runtime("ort-cpu").load(unfused).predict(dev_enc)
    trt = get_runtime("tensorrt").load(tmp_path).predict(dev_enc)
    np.testing.assert_allclose(ort, trt, atol=1e-3)
