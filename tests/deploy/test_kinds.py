"""Every deployable kind to the real sshd on loopback, health check included: a dynamic-INT8
ONNX graph (as the default run's student-int8), model.ort (ort-mobile) and model.pte
(ExecuTorch, skipped where executorch is not installed)."""

import json
import shutil
from pathlib import Path

import pytest

from slimbert.deploy.bundle import BUNDLE_FILE, make_bundle
from slimbert.deploy.install import install, python_command, status
from slimbert.deploy.transports import open_transport


def with_model(onnx_artifact: Path, out: Path, model_file: str) -> Path:
    """A folder holding onnx_artifact's config and tokenizer, without its model.onnx."""
    shutil.copytree(onnx_artifact, out, ignore=shutil.ignore_patterns("model.onnx", "*.onnx.data",
                                                                     "manifest.json"))
    return out / model_file


def dev_split(tiny_classifier, sentiment_csv):
    from slimbert.data import DatasetConfig, encode_split, load_dataset
    from slimbert.models import load_tokenizer

    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    return encode_split(load_tokenizer(tiny_classifier), data.splits["dev"], 32)


@pytest.fixture(scope="module")
def int8_artifact(onnx_artifact, tiny_classifier, sentiment_csv, tmp_path_factory) -> Path:
    """Dynamic INT8, the quantize-onnx stage's default: what the default run deploys as student-int8."""
    from slimbert.quantize.config import OnnxQuantizeConfig
    from slimbert.quantize.onnx_ptq import quantize_onnx

    out = tmp_path_factory.mktemp("int8") / "student-int8"
    quantize_onnx(onnx_artifact, out, OnnxQuantizeConfig(), dev_split(tiny_classifier, sentiment_csv))
    return out


@pytest.fixture(scope="module")
def ort_artifact(int8_artifact, tmp_path_factory) -> Path:
    """model.ort as ORT's converter writes it: the graph saved in ORT format by a session."""
    import onnxruntime as ort

    out = tmp_path_factory.mktemp("ort") / "ort-mobile"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(with_model(int8_artifact, out, "model.ort"))
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(int8_artifact / "model.onnx"), options, providers=["CPUExecutionProvider"])
    return out


def deploy_and_predict(artifact, device, tmp_path, model_file):
    bundle = make_bundle(artifact, tmp_path / "bundles")
    info = json.loads((bundle / BUNDLE_FILE).read_text())
    assert info["model_file"] == model_file and model_file in info["files"]
    result = install(bundle, device)
    assert result.health["agreement"] >= info["health"]["min_agreement"] and result.health["finite"]
    assert status(device).current == result.bundle_id
    with open_transport(device) as t:
        _, out, _ = t.run(python_command(device, f"{device.root}/current/runner.py", "predict", "good fun"))
    assert json.loads(out)[0]["label"] in ("neg", "pos")
    return result


def test_deploy_int8_onnx(int8_artifact, device, tmp_path):
    deploy_and_predict(int8_artifact, device, tmp_path, "model.onnx")


def test_deploy_ort_mobile(ort_artifact, device, tmp_path):
    assert (ort_artifact / "model.ort").read_bytes()[4:8] == b"ORTM"  # ORT's flatbuffer identifier
    deploy_and_predict(ort_artifact, device, tmp_path, "model.ort")


def test_deploy_executorch(tiny_classifier, sentiment_csv, device, tmp_path):
    pytest.importorskip("executorch", reason="executorch is not installed (pip install executorch)")
    from slimbert.export.executorch import ExecutorchConfig, export_executorch

    out = tmp_path / "executorch"
    export_executorch(tiny_classifier, out, ExecutorchConfig(max_seq_len=64),
                      dev_split(tiny_classifier, sentiment_csv))
    result = deploy_and_predict(out, device, tmp_path, "model.pte")
    assert result.runtime.get("executorch")
