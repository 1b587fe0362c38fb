import onnx
import pytest
import torch
from torch import nn

from slimbert.data import DatasetConfig, load_dataset
from slimbert.formats import ONNX_FILE
from slimbert.quantize.config import QatConfig
from slimbert.quantize.qat import FakeQuantLinear, calibrate_inputs, prepare_qat, qat


def test_fake_quant_linear_rounds_to_int8_grid():
    torch.manual_seed(0)
    linear = nn.Linear(16, 4)
    fq = FakeQuantLinear(linear)
    x = torch.randn(8, 16)
    calibrate_inputs(nn.Sequential(), [fq], [])  # no batches: range stays 0 -> clamps, no NaN
    fq.calibrating = True
    fq(x)
    fq.calibrating = False
    assert fq.input_amax == x.abs().max()
    out, ref = fq(x), linear(x)
    assert not torch.equal(out, ref) and torch.allclose(out, ref, atol=0.1)
    out.sum().backward()  # straight-through: the weight still learns
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0


def test_prepare_wraps_every_linear(tiny_classifier):
    from slimbert.models import load_classifier

    model = load_classifier(tiny_classifier)
    count = sum(isinstance(m, nn.Linear) for m in model.modules())
    wrapped = prepare_qat(model)
    assert len(wrapped) == count == 4 * 6 + 2  # q, k, v, out, ffn in/out per layer + pooler, classifier
    assert not any(isinstance(m, nn.Linear) and not isinstance(p, FakeQuantLinear)
                   for p in model.modules() for m in p.children())


def test_qat_exports_a_qdq_graph_that_matches_the_fake_quantized_model(tiny_classifier, sentiment_csv,
                                                                       tmp_path):
    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    cfg = QatConfig(epochs=1, lr=1e-4, batch_size=16, patience=0, calibration_batches=2)
    metrics = qat(tiny_classifier, data, cfg, tmp_path / "out", tmp_path / "work", max_length=32,
                  progress=False)
    graph = onnx.load(str(tmp_path / "out" / ONNX_FILE)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 26 and ops.count("DequantizeLinear") >= 26
    assert metrics["onnx_vs_torch"]["agreement"] >= 0.95
    assert metrics["quantized_linears"] == 26 and "test_ptq_before_training" in metrics
    assert metrics["int8_weights_stored"] == 26
    int8 = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    fp32_matrices = {t.name for t in graph.initializer
                     if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2}
    assert len(int8) == 26 and all("embeddings" in name for name in fp32_matrices)
    assert (tmp_path / "out" / "config.json").is_file()


def test_bad_qat_settings():
    with pytest.raises(ValueError):
        QatConfig(temperature=0)
    with pytest.raises(ValueError):
        QatConfig(alpha_kd=0, alpha_ce=0)
