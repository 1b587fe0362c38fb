"""PyTorch classifier -> ExecuTorch program (``model.pte``) delegated to XNNPACK, fp32 or int8.

ExecuTorch is PyTorch's on-device runtime: ``torch.export`` captures the graph, the
XNNPACK partitioner hands every op XNNPACK can run (linear, matmul, softmax, layernorm,
gelu, ...) to its delegate, and the result is one flatbuffer a phone app loads. INT8 uses
PT2E with the XNNPACKQuantizer: dynamic activations by default, or static ones calibrated
on real dev batches (``activations: static``).

Batch and sequence dims are exported dynamic, bounded by ``max_batch`` and ``max_seq_len``:
ExecuTorch plans its memory for the largest shapes, so the bounds are recorded in
``executorch.json`` and the runtime splits larger batches and refuses longer sequences.
ExecuTorch is optional (``pip install -e '.[mobile]'``); nothing here imports it at import time.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from slimbert.errors import ExportError, RuntimeUnavailable
from slimbert.export.config import ExecutorchConfig
from slimbert.export.onnx import copy_model_metadata
from slimbert.export.pt2e import calibrate, export_logits, logits_module, spread
from slimbert.formats import EXECUTORCH_HINT as INSTALL_HINT
from slimbert.formats import EXECUTORCH_META_FILE as META_FILE
from slimbert.formats import PTE_FILE
from slimbert.hw import executorch_missing
from slimbert.validation import compare_logits

log = logging.getLogger(__name__)



def _export(module, names: tuple[str, ...], cfg: ExecutorchConfig, vocab_size: int):
    return export_logits(module, names, vocab_size=vocab_size, max_seq_len=cfg.max_seq_len,
                         max_batch=cfg.max_batch)


def _quantize(module, names: tuple[str, ...], cfg: ExecutorchConfig, calibration, vocab_size: int):
    """PT2E static INT8: insert observers, run dev batches through them, convert."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from slimbert.data import iterate_batches

    config = get_symmetric_quantization_config(is_per_channel=cfg.per_channel,
                                               is_dynamic=cfg.activations == "dynamic")
    quantizer = XNNPACKQuantizer().set_global(config)
    prepared = prepare_pt2e(_export(module, names, cfg, vocab_size).module(), quantizer)
    batches = [b for _, b in iterate_batches(calibration, cfg.calibration_batch_size)]
    # dynamic: one batch, only so the weight observers see their (per-channel) weights;
    # activation ranges are taken per batch at run time
    wanted = 1 if cfg.activations == "dynamic" else cfg.calibration_batches
    seen = calibrate(prepared, names, spread(batches, wanted), cfg.max_seq_len)
    return convert_pt2e(prepared), seen  # a GraphModule with the same positional inputs


def export_executorch(model_dir: Path, out_dir: Path, cfg: ExecutorchConfig, validation) -> dict[str, Any]:
    """Lower the classifier in ``model_dir`` to ``out_dir/model.pte``; check it against PyTorch.

    ``validation`` (an EncodedSplit of dev examples) calibrates INT8 and is the check set.
    """
    reason = executorch_missing()
    if reason:
        raise RuntimeUnavailable(f"export-executorch needs ExecuTorch: {reason}.", hint=INSTALL_HINT)
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from slimbert.models import load_classifier
    from slimbert.runtimes import get_runtime
    from slimbert.runtimes.torch_runtime import predict_logits

    model = load_classifier(Path(model_dir)).eval()
    names = tuple(validation.input_names)
    vocab = model.config.vocab_size
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and cfg.max_seq_len > positions:
        raise ExportError(f"max_seq_len {cfg.max_seq_len} is beyond {model_dir}'s {positions} positions.",
                          hint=f"set max_seq_len to {positions} or less.")
    module = logits_module(model, names)
    calibrated = 0
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if cfg.precision == "int8":
                module, calibrated = _quantize(module, names, cfg, validation, vocab)
            program = to_edge_transform_and_lower(_export(module, names, cfg, vocab),
                                                  partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as exc:
        raise ExportError(
            f"lowering {model_dir} to ExecuTorch/XNNPACK ({cfg.precision}) failed: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint="try precision: fp32, or a smaller max_seq_len/max_batch; run with -vv for the trace.",
        ) from exc
    Path(out_dir).mkdir(parents=True, exist_ok=True)  # the Python API may name a new folder
    (Path(out_dir) / PTE_FILE).write_bytes(program.buffer)
    meta = {"input_names": list(names), "max_batch": cfg.max_batch, "max_seq_len": cfg.max_seq_len,
            "precision": cfg.precision, "backend": "XnnpackBackend",
            "activations": cfg.activations if cfg.precision == "int8" else None}
    (Path(out_dir) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    copy_model_metadata(Path(model_dir), Path(out_dir))

    subset = validation.head(512)
    check = compare_logits(predict_logits(model, subset),
                           get_runtime("executorch-xnnpack").load(out_dir).predict(subset))
    if cfg.precision == "fp32" and check["max_abs_diff"] > cfg.atol:
        raise ExportError(f"the ExecuTorch program disagrees with PyTorch: max |logit diff| "
                          f"{check['max_abs_diff']:.2e} > atol {cfg.atol:g}.",
                          hint="raise atol if the difference is benign, or report the model type.")
    if cfg.precision == "int8" and check["agreement"] < cfg.min_agreement:
        raise ExportError(f"the INT8 ExecuTorch program keeps only {check['agreement']:.1%} of PyTorch's "
                          f"predictions (< min_agreement {cfg.min_agreement:.0%}).",
                          hint="calibrate on more batches (calibration_batches), try per_channel: true, "
                          "or use precision: fp32.")
    log.info("ExecuTorch %s program vs PyTorch on %d examples: %s", cfg.precision, len(subset), check)
    return {"validation": {**check, "examples": len(subset)}, **meta, "calibration_batches": calibrated,
            "pte_mb": round((Path(out_dir) / PTE_FILE).stat().st_size / 1e6, 2)}
