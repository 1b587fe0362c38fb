"""ONNX -> ORT format for ONNX Runtime mobile, with the operator list a reduced build needs.

Phones run ONNX Runtime from a small build: ORT format (``model.ort``, a flatbuffer that
loads without protobuf and with the graph optimizations already applied) and, for the
smallest binary, a build reduced to the operators the model uses. This stage writes both
the ``.ort`` file and that ``required_operators*.config``, and reports which operators an
app builder would have to care about: contrib ops (need a build with them), and ops the
NNAPI or XNNPACK execution providers would leave on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from slimbert.errors import ExportError
from slimbert.export.config import OrtMobileConfig
from slimbert.export.onnx import copy_model_metadata, quantized_ops
from slimbert.formats import ONNX_FILE, ORT_FILE
from slimbert.validation import compare_logits

log = logging.getLogger(__name__)

REQUIRED_OPS_FILE = "required_operators.config"
REQUIRED_OPS_AND_TYPES_FILE = "required_operators_and_types.config"

# Op types ORT's XNNPACK execution provider claims (ORT docs, XNNPACK EP, 1.3x). Everything
# else in a BERT graph (Gather, LayerNorm, Attention, ...) stays on the CPU provider.
XNNPACK_EP_OPS = frozenset({
    "ai.onnx:AveragePool", "ai.onnx:Conv", "ai.onnx:ConvTranspose", "ai.onnx:Gemm", "ai.onnx:MatMul",
    "ai.onnx:MaxPool", "ai.onnx:Resize", "ai.onnx:Softmax", "ai.onnx:QLinearConv",
    "ai.onnx:QuantizeLinear", "ai.onnx:DequantizeLinear", "ai.onnx:QLinearMatMul",
    "com.microsoft:QLinearAveragePool", "com.microsoft:QLinearSoftmax", "com.microsoft:QLinearConvTranspose",
})
CONTRIB_DOMAIN = "com.microsoft"


def _split_entries(ops: str) -> list[str]:
    """'Add,Cast{"inputs": {"0": ["float", "int32_t"]}},Concat' -> op names (JSON may hold commas)."""
    names, depth, current = [], 0, ""
    for char in ops:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            names.append(current)
            current = ""
        else:
            current += char
    names.append(current)
    return [n.split("{", 1)[0].strip() for n in names if n.strip()]


def read_required_ops(config: Path) -> list[str]:
    """``domain:op`` names listed in an ORT reduced-build config file."""
    ops = set()
    for line in config.read_text().splitlines():
        if not line.strip() or line.startswith(("#", "!")):
            continue
        domain, _opsets, entries = line.split(";", 2)
        ops.update(f"{domain}:{name}" for name in _split_entries(entries))
    return sorted(ops)


def _nnapi_ops() -> frozenset[str]:
    """The NNAPI EP's op table, as shipped with ORT's own mobile usability checker."""
    import onnxruntime.tools.mobile_helpers as helpers

    table = Path(helpers.__file__).parent / "nnapi_supported_ops.md"
    if not table.is_file():
        return frozenset()
    return frozenset(line.split("|")[1] for line in table.read_text().splitlines()
                     if line.startswith("|") and ":" in line.split("|")[1])


def op_coverage(onnx_path: Path, required_ops: list[str]) -> dict[str, Any]:
    """Which ops the model needs, and which ones a mobile build or mobile EP would not take.

    Op-type level only (like ORT's own usability checker): an op an EP lists can still be
    rejected for its shapes or attributes at load time.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    counts = Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)
    dynamic = sorted(i.name for i in model.graph.input
                     if any(d.dim_param or not d.HasField("dim_value") for d in i.type.tensor_type.shape.dim))
    nnapi = _nnapi_ops()
    return {
        "source_op_counts": dict(sorted(counts.items())),
        "required_ops": required_ops,
        # a reduced build must keep contrib ops (the default; not --disable_contrib_ops)
        "contrib_ops": [op for op in required_ops if op.startswith(CONTRIB_DOMAIN + ":")],
        "nnapi_unsupported": [op for op in required_ops if op not in nnapi] if nnapi else None,
        "nnapi_note": ("NNAPI needs fixed input shapes; dynamic inputs: " + ", ".join(dynamic))
        if dynamic else None,
        "xnnpack_ep_unsupported": [op for op in required_ops if op not in XNNPACK_EP_OPS],
    }


def convert_to_ort(src_dir: Path, out_dir: Path, cfg: OrtMobileConfig) -> list[Path]:
    """Write ``out_dir/model.ort`` and the reduced-build config(s); returns the config paths."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    source = Path(src_dir) / ONNX_FILE
    if not source.is_file():
        raise ExportError(f"{src_dir} has no {ONNX_FILE} to convert.",
                          hint="give the stage an ONNX artifact (export-onnx or quantize-onnx).")
    configs = []
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # "Created config in ..."
    previous = os.environ.get("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL")
    os.environ["ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"] = cfg.optimization_level
    try:
        for reduce_types in (False, True) if cfg.type_reduction else (False,):
            chatter = io.StringIO()  # the converter prints progress to stdout
            with contextlib.redirect_stdout(chatter):
                convert_onnx_models_to_ort(source, output_dir=Path(out_dir),
                                           optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform=cfg.target_platform,
                                           enable_type_reduction=reduce_types)
            log.debug("ORT converter: %s", chatter.getvalue())
    except Exception as exc:
        raise ExportError(f"ONNX Runtime could not convert {source} to ORT format: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                          hint="check that ONNX Runtime loads the graph (bench it on ort-cpu).") from exc
    finally:
        if previous is None:
            os.environ.pop("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", None)
        else:
            os.environ["ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"] = previous
    suffix = "" if cfg.optimization_level == "all" else f".{cfg.optimization_level}"
    produced = Path(out_dir) / f"model{suffix}.ort"
    if produced.name != ORT_FILE:
        produced.rename(Path(out_dir) / ORT_FILE)
    for name in (REQUIRED_OPS_FILE, REQUIRED_OPS_AND_TYPES_FILE):
        written = Path(out_dir) / f"model.{name.removesuffix('.config')}{suffix}.config"
        if written.is_file():
            written.rename(Path(out_dir) / name)
            configs.append(Path(out_dir) / name)
    return configs


def export_ort_mobile(src_dir: Path, out_dir: Path, cfg: OrtMobileConfig, validation) -> dict[str, Any]:
    """Convert ``src_dir/model.onnx`` to ORT format and check it against the source graph."""
    from slimbert.runtimes import get_runtime

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # the Python API may name a new folder
    convert_to_ort(src_dir, out_dir, cfg)
    copy_model_metadata(src_dir, out_dir)
    coverage = op_coverage(src_dir / ONNX_FILE, read_required_ops(out_dir / REQUIRED_OPS_FILE))
    reference = get_runtime("ort-cpu").load(src_dir).predict(validation)
    candidate = get_runtime("ort-mobile").load(out_dir).predict(validation)
    check = compare_logits(reference, candidate)
    # Fusions baked into the file (e.g. SkipLayerNormalization, which ort-cpu sessions leave
    # out) reorder float sums; in a dynamically quantized graph that moves activation scales
    # and rounding, so logits differ by ~0.1 with every prediction the same. There the
    # predictions are the check.
    quantized = bool(quantized_ops(src_dir / ONNX_FILE))
    if check["max_abs_diff"] > cfg.atol and not (quantized and check["agreement"] >= cfg.min_agreement):
        criterion = (f"and {check['agreement']:.2%} of predictions agree (min_agreement "
                     f"{cfg.min_agreement:g})" if quantized else "")
        raise ExportError(
            f"the ORT-format model disagrees with its ONNX source {src_dir}: max |logit diff| "
            f"{check['max_abs_diff']:.2e} > atol {cfg.atol:g} {criterion}".rstrip() + ".",
            hint="try optimization_level: basic, or target_platform: amd64 for an x86 device.",
        )
    if coverage["contrib_ops"]:
        log.info("ORT mobile: contrib ops %s need a build with contrib ops (the default)",
                 ", ".join(coverage["contrib_ops"]))
    return {"validation": {**check, "examples": len(validation), "quantized_source": quantized},
            "op_coverage": coverage,
            "optimization_level": cfg.optimization_level, "target_platform": cfg.target_platform,
            "ort_mb": round((out_dir / ORT_FILE).stat().st_size / 1e6, 2)}
