import pytest

from slimbert.export.onnx import OnnxExportConfig, export_onnx


@pytest.fixture(scope="module")
def exported(tiny_classifier, dev_enc, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    metrics = export_onnx(tiny_classifier, out, OnnxExportConfig(), dev_enc)
    return out, metrics
