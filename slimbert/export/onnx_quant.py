"""ONNX Runtime INT8 quantization of an exported (and fused) graph.

Peers quantize the plain export because quantizing a fused graph stops on ORT's
"Unable to find data type for weight_name" (the contrib ops carry no shape inference).
ORT's own DefaultTensorType option resolves that, so slimbert quantizes the fused graph
and keeps both wins: fused attention/layernorm kernels and INT8 matmuls.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from slimbert.export.onnx import ONNX_FILE, compare_logits, copy_model_metadata

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _root_warnings_silenced() -> Iterator[None]:
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


@dataclass
class OnnxQuantizeConfig:
    """Dynamic INT8: weights quantized offline, activations per batch at run time."""

    mode: Literal["dynamic"] = "dynamic"
    weight_type: Literal["qint8", "quint8"] = "qint8"
    per_channel: bool = False
    reduce_range: bool = False
    op_types: list[str] | None = None  # None: every op type ORT can quantize dynamically
    exclude_nodes: list[str] | None = None


def quantize_onnx(src_dir: Path, out_dir: Path, cfg: OnnxQuantizeConfig, validation) -> dict[str, Any]:
    """Quantize ``src_dir/model.onnx`` into ``out_dir``; report agreement with the source."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from slimbert.runtimes import get_runtime

    weight_type = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[cfg.weight_type]
    with _root_warnings_silenced():  # ORT logs "consider pre-processing" on the root logger
        quantize_dynamic(
            str(src_dir / ONNX_FILE),
            str(out_dir / ONNX_FILE),
            weight_type=weight_type,
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            op_types_to_quantize=cfg.op_types,
            nodes_to_exclude=cfg.exclude_nodes,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    copy_model_metadata(src_dir, out_dir)
    runtime = get_runtime("ort-cpu")
    check = compare_logits(runtime.load(src_dir).predict(validation),
                           runtime.load(out_dir).predict(validation))
    log.info("INT8 graph vs its fp32 source on %d examples: %s", len(validation), check)
    return {"agreement_with_source": check, "mode": cfg.mode, "weight_type": cfg.weight_type,
            "per_channel": cfg.per_channel}
