"""Quantization-aware training: fine-tune with INT8 fake quantization, export a Q/DQ ONNX graph.

When post-training INT8 costs too much accuracy, the weights can learn to live with the
rounding. Every ``nn.Linear`` gets symmetric INT8 fake quantization of its input (one
scale per tensor, from the absmax seen on calibration batches, then frozen) and of its
weight (one scale per output channel, following the weight as it trains); gradients pass
straight through the rounding. The fp32 input model teaches its quantized copy (soft
targets + hard labels), with its logits computed once. The exported graph carries
QuantizeLinear/DequantizeLinear pairs (what ``torch.fake_quantize_*`` export to): the
explicit-quantization form TensorRT builds INT8 engines from, and one ONNX Runtime runs.
Symmetric s8 activations, because TensorRT accepts no other.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimbert.compress.distill import distill_into
from slimbert.compress.student import find_layers
from slimbert.compress.trainer import evaluate, to_tensors
from slimbert.data import TextClassificationData, encode_split, iterate_batches
from slimbert.export.onnx import OnnxExportConfig, copy_model_metadata, torch_export
from slimbert.formats import ONNX_FILE
from slimbert.models import load_classifier, load_tokenizer
from slimbert.quantize.config import QatConfig
from slimbert.runtimes.torch_runtime import predict_logits
from slimbert.validation import compare_logits, drop_points

log = logging.getLogger(__name__)

QMIN, QMAX = -128, 127




class FakeQuantLinear(nn.Module):
    """``nn.Linear`` with INT8 fake quantization of its input and weight."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear
        self.register_buffer("input_amax", torch.zeros(()))
        self.register_buffer("weight_scale", torch.zeros(0))  # set by freeze(), for export
        self.calibrating = False

    def freeze(self) -> None:
        """Fix the weight scales, so the exported graph holds them (and the weights) as constants."""
        self.weight_scale = self._weight_scale()

    def _weight_scale(self) -> torch.Tensor:
        return self.linear.weight.detach().abs().amax(dim=1).clamp(min=1e-8) / QMAX

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.input_amax = torch.maximum(self.input_amax, x.detach().abs().max())
            return self.linear(x)
        scale = (self.input_amax.clamp(min=1e-8) / QMAX).reshape(())
        zero = torch.zeros((), dtype=torch.int32, device=x.device)
        x = torch.fake_quantize_per_tensor_affine(x, scale, zero, QMIN, QMAX)
        weight = self.linear.weight
        frozen = not self.training and self.weight_scale.numel()
        w_scale = self.weight_scale if frozen else self._weight_scale()
        w_zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
        weight = torch.fake_quantize_per_channel_affine(weight, w_scale, w_zero, 0, QMIN, QMAX)
        return F.linear(x, weight, self.linear.bias)


def prepare_qat(model: nn.Module) -> list[FakeQuantLinear]:
    """Replace every nn.Linear of ``model`` with a FakeQuantLinear, in place."""
    wrapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                fq = FakeQuantLinear(child)
                setattr(parent, name, fq)
                wrapped.append(fq)
    return wrapped


@torch.no_grad()
def calibrate_inputs(model: nn.Module, layers: list[FakeQuantLinear], batches) -> None:
    """Set each layer's input range from the absmax over ``batches``."""
    model.eval()
    for layer in layers:
        layer.calibrating = True
    for batch in batches:
        model(**to_tensors(batch))
    for layer in layers:
        layer.calibrating = False


def fold_weight_quantizers(path: Path) -> int:
    """Store weights as INT8: replace QuantizeLinear of a constant by its result, in place.

    The exporter writes Q(fp32 weight) -> DQ, which keeps the file fp32-sized; runtimes and
    TensorRT take the equivalent DQ(int8 weight) form. Returns how many weights were folded.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    for node in graph.node:  # torch emits some scales and zero points as Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t
    folded, kept = 0, []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) == 3 and all(i in consts for i in node.input):
            x, scale, zero = (numpy_helper.to_array(consts[i]) for i in node.input)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and x.ndim > 1:
                shape = [1] * x.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            info = np.iinfo(zero.dtype)
            q = np.clip(np.rint(x / scale) + zero.astype(np.int32), info.min, info.max).astype(zero.dtype)
            graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
            folded += 1
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    onnx.save(model, str(path))
    return folded


def qat(model_dir: Path, data: TextClassificationData, cfg: QatConfig, out_dir: Path, work_dir: Path, *,
        max_length: int, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Fake-quantized fine-tuning of the classifier in ``model_dir``; Q/DQ ONNX to ``out_dir``."""
    from slimbert.runtimes import get_runtime

    tokenizer = load_tokenizer(model_dir)
    teacher = load_classifier(model_dir).eval()
    enc = {name: encode_split(tokenizer, split, max_length) for name, split in data.splits.items()}
    fp32_test = evaluate(teacher, enc["test"], data.num_labels)

    torch.manual_seed(seed)
    model = copy.deepcopy(teacher)
    layers = prepare_qat(model)
    calib = [b for _, b in iterate_batches(enc["train"].head(cfg.calibration_batches * cfg.batch_size),
                                           cfg.batch_size)]
    calibrate_inputs(model, layers, calib)
    ptq_test = evaluate(model, enc["test"], data.num_labels)  # fake-quantized before any training
    depth = len(find_layers(model)[2])
    result = distill_into(model, teacher, enc, data.num_labels, cfg, work_dir, seed=seed,
                          mapping=list(range(depth + 1)), desc="qat", progress=progress)
    model.eval()
    test = evaluate(model, enc["test"], data.num_labels)

    model.config.return_dict = True
    out_dir.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        layer.freeze()
    export_cfg = OnnxExportConfig(opset=cfg.opset, optimize=False, atol=cfg.atol)
    torch_export(model, enc["dev"].input_names, out_dir / ONNX_FILE, export_cfg)
    folded = fold_weight_quantizers(out_dir / ONNX_FILE)
    copy_model_metadata(model_dir, out_dir)
    dev = enc["dev"]
    check = compare_logits(predict_logits(model, dev), get_runtime("ort-cpu").load(out_dir).predict(dev))
    if check["agreement"] < 0.99:
        log.warning("the Q/DQ ONNX graph agrees with the fake-quantized model on only %.1f%% of dev "
                    "predictions (max |logit diff| %.3g)", 100 * check["agreement"], check["max_abs_diff"])
    return {
        "test": test, "test_fp32": fp32_test, "test_ptq_before_training": ptq_test,
        "points_vs_fp32": -drop_points(fp32_test["accuracy"], test["accuracy"]),
        "quantized_linears": len(layers), "int8_weights_stored": folded, "onnx_vs_torch": check,
        "activation_scales": "per-tensor, symmetric int8", "weight_scales": "per-channel, symmetric int8",
        **result.metrics(),
    }
