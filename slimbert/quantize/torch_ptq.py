"""PyTorch-side INT8 (PT2E): torchao's X86InductorQuantizer, or Intel Neural Compressor's autotune.

The classifier is captured with ``torch.export`` (dynamic batch and sequence dims, the
helpers export-executorch uses), quantized by a **backend** (the ``BACKENDS`` registry), checked
on dev against the fp32 program, and saved as ``model.pt2`` (``torch.export.save``) beside
config.json and the tokenizer. The ``torch-pt2e-cpu`` runtime compiles it with Inductor,
which turns the Q/DQ pairs around linears into oneDNN INT8 kernels.

- ``torchao-x86`` (``torchao_x86.py``): X86InductorQuantizer, static or dynamic.
- ``inc`` (``inc.py``): Neural Compressor 3.x ``autotune`` over PT2E static INT8 configs.

With a ``tolerance`` both keep the most sensitive Linear layers in fp32 through the one
fallback search of ``fallback.py``, which quantize-onnx uses for its nodes too.

Metrics mirror quantize-onnx: dev_accuracy, dev_accuracy_fp32, dev_drop_points, and the
layers left in fp32, read from the converted graph (Linear ops whose weight is not
dequantized from INT8).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimbert.data import EncodedSplit
from slimbert.errors import ExportError, RuntimeUnavailable
from slimbert.export.onnx import copy_model_metadata
from slimbert.export.pt2e import dynamic_shapes, example_args, export_logits, logits_module
from slimbert.formats import PT2_FILE, PT2_META_FILE
from slimbert.quantize.config import BACKEND_MODES, TorchQuantizeConfig
from slimbert.quantize.inc import INC_HINT, inc_missing, quantize_inc
from slimbert.quantize.pt2e_job import TorchQuantJob, fp32_layers, linear_layers
from slimbert.quantize.torchao_x86 import quantize_x86
from slimbert.runtimes.pt2e_runtime import silence_torchao
from slimbert.validation import accuracy, compare_logits, drop_points

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    run: Callable[[TorchQuantJob], tuple[Any, dict[str, Any]]]
    modes: tuple[str, ...]
    missing: Callable[[], str | None] | None = None
    hint: str | None = None


BACKENDS: dict[str, Backend] = {
    "torchao-x86": Backend(quantize_x86, BACKEND_MODES["torchao-x86"]),
    "inc": Backend(quantize_inc, BACKEND_MODES["inc"], inc_missing, INC_HINT),
}


# ---- the stage ------------------------------------------------------------------------------

_REQUANTIZE_HINT = "quantize the fp32 model instead (point the stage's input at the stage that trained it)."


def _refuse_quantized_folder(src: Path) -> None:
    if (src / PT2_FILE).is_file():
        raise ExportError(f"{src} is already quantized: it holds a PT2E program ({PT2_FILE}).",
                          hint=_REQUANTIZE_HINT)
    config = src / "config.json"
    found = json.loads(config.read_text()).get("quantization_config") if config.is_file() else None
    if found:
        method = found.get("quant_method", "unknown method") if isinstance(found, dict) else found
        raise ExportError(f"{src} is already quantized: its config.json has a quantization_config "
                          f"({method}).",
                          hint=_REQUANTIZE_HINT)


def _refuse_quantized_weights(model, src: Path) -> None:
    import torch

    quantized = [n for n, p in model.named_parameters()
                 if type(p.data) is not torch.Tensor or p.is_quantized or not p.is_floating_point()]
    if quantized:
        raise ExportError(f"{src} is already quantized: {len(quantized)} weight(s) are not plain float "
                          f"tensors (first: {quantized[0]}).", hint=_REQUANTIZE_HINT)


def _check_calibration(cfg: TorchQuantizeConfig, calibration: EncodedSplit | None) -> None:
    have = 0 if calibration is None else len(calibration)
    need = cfg.calibration_batch_size if cfg.mode == "static" else 1
    if have < need:
        what = (f"at least one full batch ({need} examples)" if cfg.mode == "static"
                else "at least one example (its batch fills the weight observers)")
        raise ExportError(f"{cfg.mode} PT2E quantization needs {what}; the calibration split has {have}.",
                          hint="use a larger training split, or lower calibration_batch_size.")


def _max_seq_len(cfg: TorchQuantizeConfig, model, src: Path) -> int:
    positions = getattr(model.config, "max_position_embeddings", None) or 512
    if cfg.max_seq_len and cfg.max_seq_len > positions:
        raise ExportError(f"max_seq_len {cfg.max_seq_len} is beyond {src}'s {positions} positions.",
                          hint=f"set max_seq_len to {positions} or less.")
    return cfg.max_seq_len or positions


def drop_unused_tensors(graph_module) -> int:
    """Delete parameters and buffers no node reads: after convert_pt2e folded the INT8 weights, the
    fp32 originals are still attributes, and torch.export would save them too (4x the file)."""
    used = {n.target for n in graph_module.graph.nodes if n.op == "get_attr"}
    unused = [name for name, _ in [*graph_module.named_parameters(), *graph_module.named_buffers()]
              if name not in used]
    for name in unused:
        owner, _, attr = name.rpartition(".")
        delattr(graph_module.get_submodule(owner) if owner else graph_module, attr)
    return len(unused)


RELOAD_MIN_AGREEMENT = 0.99
RELOAD_MAX_DIFF = 0.25


def save_program(model, job: TorchQuantJob, path: Path) -> None:
    """Re-export the converted graph (same dynamic dims) and ``torch.export.save`` it."""
    import torch

    drop_unused_tensors(model)
    program = torch.export.export(model, example_args(job.names, job.vocab_size),
                                  dynamic_shapes=dynamic_shapes(job.names, max_seq_len=job.max_seq_len),
                                  strict=False)
    torch.export.save(program, str(path))


def quantize_torch(src_dir: Path, out_dir: Path, cfg: TorchQuantizeConfig, dev: EncodedSplit,
                   calibration: EncodedSplit | None, *, progress: bool = False) -> dict[str, Any]:
    """Quantize the classifier in ``src_dir`` into ``out_dir/model.pt2``; report the cost on ``dev``."""
    import torch

    from slimbert.hw import cpu_name
    from slimbert.models import load_classifier
    from slimbert.runtimes import get_runtime

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # the Python API may name a new folder
    backend = BACKENDS[cfg.backend]
    reason = backend.missing() if backend.missing else None
    if reason:
        raise RuntimeUnavailable(f"quantize-torch backend {cfg.backend!r} cannot run here: {reason}.",
                                 hint=backend.hint)
    _refuse_quantized_folder(src_dir)
    _check_calibration(cfg, calibration)
    silence_torchao()
    model = load_classifier(src_dir).eval()
    _refuse_quantized_weights(model, src_dir)
    names = tuple(dev.input_names)
    max_seq_len = _max_seq_len(cfg, model, src_dir)
    module = logits_module(model, names)
    vocab = model.config.vocab_size
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = export_logits(module, names, vocab_size=vocab, max_seq_len=max_seq_len)
    except Exception as exc:
        raise ExportError(f"torch.export failed for {src_dir}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}",
                          hint="run with -vv for the trace; report the model type.") from exc
    job = TorchQuantJob(module, program, names, vocab, max_seq_len, cfg,
                        calibration.head(cfg.calibration_examples), dev, progress=progress)
    job.fp32_logits = job.logits(program.module())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized, details = backend.run(job)
            logits = job.logits(quantized)
            save_program(quantized, job, out_dir / PT2_FILE)
    except (ExportError, RuntimeUnavailable):
        raise
    except Exception as exc:
        raise ExportError(f"PT2E quantization ({cfg.backend}, {cfg.mode}) of {src_dir} failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                          hint="try the other backend or mode: dynamic; run with -vv for the trace.") from exc
    meta = {"input_names": list(names), "max_seq_len": max_seq_len, "backend": cfg.backend, "mode": cfg.mode}
    (out_dir / PT2_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    copy_model_metadata(src_dir, out_dir)

    subset = dev.head(256)  # the saved program, reloaded through the runtime, is the one measured
    saved = get_runtime("torch-pt2e-cpu-eager").load(out_dir).served_logits(subset)
    reloaded = compare_logits(logits[: len(subset)], saved)
    # Re-tracing may reorder float ops, and a last-bit change before a quantize flips an INT8
    # step: a real student's logits then move by ~1e-2 (seen: 3.4e-2), while a broken save moves
    # predictions. So the bound is on predictions, with a loose bound on logits.
    if reloaded["agreement"] < RELOAD_MIN_AGREEMENT or reloaded["max_abs_diff"] > RELOAD_MAX_DIFF:
        raise ExportError(f"the saved {PT2_FILE} disagrees with the quantized model it was saved from "
                          f"(max |logit diff| {reloaded['max_abs_diff']:.2e}, prediction agreement "
                          f"{reloaded['agreement']:.2%}).",
                          hint="report the torch/torchao versions; try the other backend.")
    check = compare_logits(job.fp32_logits, logits)
    fp32_acc, acc = accuracy(job.fp32_logits, dev.labels), accuracy(logits, dev.labels)
    left = fp32_layers(quantized)
    log.info("PT2E %s %s: dev accuracy %.2f%% (fp32 %.2f%%), agreement %.2f%%, %d layer(s) in fp32",
             cfg.backend, cfg.mode, 100 * acc, 100 * fp32_acc, 100 * check["agreement"], len(left))
    drop = drop_points(fp32_acc, acc)
    return {
        "backend": cfg.backend, "mode": cfg.mode, **details, "agreement_with_source": check,
        "dev_accuracy": acc, "dev_accuracy_fp32": fp32_acc, "dev_drop_points": drop,
        "tolerance_points": cfg.tolerance, "tolerance_met": drop <= cfg.tolerance,
        # the CPU its activation bits were measured on: bench, gate and deploy warn on another one
        "tuned_isa": cfg.activation_reduce_range_isa(), "tuned_cpu": cpu_name(),
        "fp32_layers": left, "int8_layers": sum(q for _, q in linear_layers(quantized)),
        "calibration": {"examples": len(job.calibration), "batch_size": cfg.calibration_batch_size,
                        "batches": 1 if cfg.mode == "dynamic"
                        else -(-len(job.calibration) // cfg.calibration_batch_size)},
        "max_seq_len": max_seq_len, "reload_check": {**reloaded, "examples": len(subset)},
        "pt2_mb": round((out_dir / PT2_FILE).stat().st_size / 1e6, 2),
    }
