"""PyTorch-side INT8 (PT2E): torchao's X86InductorQuantizer, or Intel Neural Compressor's autotune.

The classifier is captured with ``torch.export`` (dynamic batch and sequence dims, the
helpers export-executorch uses), quantized by a **backend** (the ``BACKENDS`` registry), checked
on dev against the fp32 program, and saved as ``model.pt2`` (``torch.export.save``) beside
config.json and the tokenizer. The ``torch-pt2e-cpu`` runtime compiles it with Inductor,
which turns the Q/DQ pairs around linears into oneDNN INT8 kernels.

- ``torchao-x86``: X86InductorQuantizer, static (u8 activations calibrated on training
  batches, s8 per-channel weights) or dynamic (activation ranges per batch at run time).
  With a ``tolerance``, the Linear layers whose quantization moves the dev logits most
  stay fp32 (``set_module_name_qconfig(name, None)``), one more at a time, until the
  dev-accuracy drop is within it: the ONNX repair's method (export/quant_repair.py).
- ``inc``: Neural Compressor 3.x ``autotune`` over PT2E static INT8 configs, the tolerance
  mapped to its relative ``tolerable_loss``. First INC's own static tuning set
  (``StaticQuantConfig.get_config_set_for_tuning()``: symmetric/asymmetric activations x
  MinMax/KL observers); if none meets the tolerance, a second autotune over configs that
  keep the 1, 2, ... most sensitive Linear layers in fp32 (``set_local``). INC 3.x has no
  automatic per-op fallback on the PT2E path, so slimbert supplies those configs; INC runs
  the trials, stops at the first that meets the tolerance, or re-quantizes the best one.

Metrics mirror quantize-onnx: dev_accuracy, dev_accuracy_fp32, dev_drop_points, and the
layers left in fp32, read from the converted graph (Linear ops whose weight is not
dequantized from INT8).
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slimbert.data import EncodedSplit, iterate_batches
from slimbert.errors import ExportError, RuntimeUnavailable
from slimbert.export.onnx import copy_model_metadata
from slimbert.export.onnx_quant import dev_accuracy
from slimbert.export.pt2e import (
    calibrate,
    dynamic_shapes,
    example_args,
    export_logits,
    logits_module,
)
from slimbert.formats import PT2_FILE, PT2_META_FILE
from slimbert.hw import ISA_NAMES, int8_formats
from slimbert.progress import progress_bar, quiet_logger
from slimbert.runtimes.pt2e_runtime import silence_torchao
from slimbert.validation import compare_logits

log = logging.getLogger(__name__)

INC_HINT = ("install Intel Neural Compressor 3.x with its PyTorch extra: pip install "
            "'neural-compressor[pt]==3.10' (a slimbert dependency: `pip install -e .` restores it), "
            "or use backend: torchao-x86.")
LAYER_PREFIX = "model."  # the logits wrapper's attribute: stripped in reports (HF module names)


@dataclass
class TorchQuantizeConfig:
    """How to quantize on the PyTorch side; the result is a ``model.pt2`` PT2E program.

    backend: torchao-x86 (X86InductorQuantizer; static or dynamic) or inc (Neural Compressor
    autotune, static only: its dynamic PT2E config loses too much accuracy). ``calibration``,
    ``reduce_range`` and ``target_isa`` set torchao-x86's quantizer; INC tunes its own.
    tolerance: largest dev-accuracy drop in points (quantize-onnx's meaning). torchao-x86
    keeps the most sensitive Linear layers fp32 until it holds; inc autotunes against it
    (None: INC's default tolerable_loss, 1% relative).
    """

    backend: Literal["torchao-x86", "inc"] = "torchao-x86"
    mode: Literal["static", "dynamic"] = "static"
    # static activation observer: histogram (X86InductorQuantizer's default: the range that
    # minimises the quantization error) or minmax (the observed extremes)
    calibration: Literal["histogram", "minmax"] = "histogram"
    # 7-bit activations, for x86 CPUs without VNNI (u8 x s8 products saturate); None: this CPU's
    reduce_range: bool | None = None
    target_isa: str = "auto"  # which CPU reduce_range is chosen for; auto: this one
    calibration_examples: int = 512
    calibration_batch_size: int = 32
    tolerance: float | None = None
    max_fallback_layers: int = 12
    max_seq_len: int | None = None  # longest sequence the program takes; None: the model's positions

    def __post_init__(self) -> None:
        backend = BACKENDS.get(self.backend)
        if backend is not None and self.mode not in backend.modes:
            raise ValueError(f"backend {self.backend} supports mode {', '.join(backend.modes)}, "
                             f"not {self.mode!r}")
        if self.target_isa != "auto" and self.target_isa not in ISA_NAMES:
            raise ValueError(f"target_isa must be auto or one of {', '.join(ISA_NAMES)}, "
                             f"got {self.target_isa!r}")
        if self.calibration_examples < 1 or self.calibration_batch_size < 1:
            raise ValueError("calibration_examples and calibration_batch_size must be >= 1")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 points, got {self.tolerance}")
        if self.max_fallback_layers < 1:
            raise ValueError("max_fallback_layers must be >= 1")
        if self.max_seq_len is not None and self.max_seq_len < 4:
            raise ValueError(f"max_seq_len must be >= 4, got {self.max_seq_len}")

    def activation_reduce_range(self) -> tuple[bool, str]:
        """Whether activations use 7 bits, and why (the CPU's instruction set, or the recipe)."""
        formats = int8_formats(None if self.target_isa == "auto" else self.target_isa)
        if self.reduce_range is not None:
            return self.reduce_range, "set in the recipe"
        return formats.reduce_range, f"{formats.isa}: {formats.why}"


@dataclass
class TorchQuantJob:
    """One quantization of one classifier: what every backend needs."""

    module: Any  # the eager logits module (positional tensors in, logits out)
    program: Any  # its fp32 ExportedProgram (dynamic batch and sequence)
    names: tuple[str, ...]
    vocab_size: int
    max_seq_len: int
    cfg: TorchQuantizeConfig
    calibration: EncodedSplit
    dev: EncodedSplit
    fp32_logits: np.ndarray | None = None
    progress: bool = False

    def fp32_graph(self):
        """A fresh copy of the fp32 graph (prepare_pt2e rewrites the graph it is given)."""
        return copy.deepcopy(self.program.module())

    def calibration_batches(self) -> Iterator[dict]:
        """Training batches, one collated at a time; dynamic mode needs one (weight observers)."""
        batches = (b for _, b in iterate_batches(self.calibration, self.cfg.calibration_batch_size))
        return iter([next(batches)]) if self.cfg.mode == "dynamic" else batches

    def logits(self, module) -> np.ndarray:
        from slimbert.runtimes.pt2e_runtime import Pt2eSession

        return Pt2eSession(module, self.names, self.max_seq_len).predict(self.dev)

    def drop_points(self, logits: np.ndarray) -> float:
        return 100 * (dev_accuracy(self.fp32_logits, self.dev) - dev_accuracy(logits, self.dev))


# ---- graph inspection ------------------------------------------------------------------------

def _module_name(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return node.name
    path = list(stack.values())[-1][0]
    return path.removeprefix("L['self'].")


def display(name: str) -> str:
    return name.removeprefix(LAYER_PREFIX)


def linear_layers(graph_module) -> list[tuple[str, bool]]:
    """(module name, INT8 weight?) for every linear op, in graph order."""
    import torch

    rows = []
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.linear.default:
            weight = node.args[1]
            quantized = getattr(weight, "op", None) == "call_function" and "dequantize" in str(weight.target)
            rows.append((_module_name(node), quantized))
    return rows


def fp32_layers(graph_module) -> list[str]:
    return [display(name) for name, quantized in linear_layers(graph_module) if not quantized]


# ---- torchao X86InductorQuantizer ------------------------------------------------------------

def x86_quantization_config(cfg: TorchQuantizeConfig):
    import dataclasses

    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e import MinMaxObserver

    reduce_range, _ = cfg.activation_reduce_range()
    config = xiq.get_default_x86_inductor_quantization_config(is_dynamic=cfg.mode == "dynamic",
                                                              reduce_range=reduce_range)
    if cfg.mode == "static" and cfg.calibration == "minmax":
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    return config


def x86_quantizer(cfg: TorchQuantizeConfig, *, fp32: list[str] = (), only: str | None = None):
    """The quantizer for ``cfg``; ``fp32`` modules stay float; ``only``: quantize just that module."""
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    quantizer = X86InductorQuantizer()
    config = x86_quantization_config(cfg)
    if only is None:
        quantizer.set_global(config)
    else:
        quantizer.set_module_name_qconfig(only, config)
    for name in fp32:
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def pt2e_quantize(job: TorchQuantJob, quantizer):
    """prepare_pt2e -> calibrate on training batches -> convert_pt2e (INT8 weights folded)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(job.fp32_graph(), quantizer)
    calibrate(prepared, job.names, job.calibration_batches(), job.max_seq_len)
    return convert_pt2e(prepared)


def sensitivity(job: TorchQuantJob, make_quantizer: Callable[[str], Any]) -> list[dict[str, Any]]:
    """Per Linear layer: dev-logit MSE and accuracy change when only it is quantized, worst first."""
    layers = [name for name, _ in linear_layers(job.program.module())]
    rows = []
    for name in progress_bar(layers, enabled=job.progress, desc="sensitivity", leave=False):
        logits = job.logits(pt2e_quantize(job, make_quantizer(name)))
        rows.append({"layer": name, "logit_mse": float(np.mean((logits - job.fp32_logits) ** 2)),
                     "dev_drop_points": job.drop_points(logits)})
    return sorted(rows, key=lambda r: (r["logit_mse"], r["dev_drop_points"]), reverse=True)


def _shown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "layer": display(r["layer"])} for r in rows]


def x86_repair(job: TorchQuantJob, model) -> tuple[Any, dict[str, Any]]:
    """Keep the most sensitive Linear layers fp32 until the dev drop <= tolerance."""
    tolerance = job.cfg.tolerance
    drop = job.drop_points(job.logits(model))
    report: dict[str, Any] = {"tolerance_points": tolerance, "initial_dev_drop_points": drop,
                              "fp32_layers": [], "met": drop <= tolerance}
    if drop <= tolerance:
        return model, report
    ranking = sensitivity(job, lambda name: x86_quantizer(job.cfg, only=name))
    report["sensitivity"] = _shown(ranking)
    tries = [{"fp32_layers": 0, "dev_drop_points": drop}]
    best = (drop, [], model)
    limit = min(job.cfg.max_fallback_layers, len(ranking))
    for k in progress_bar(range(1, limit + 1), enabled=job.progress, desc="fallback", leave=False):
        keep = [r["layer"] for r in ranking[:k]]
        trial = pt2e_quantize(job, x86_quantizer(job.cfg, fp32=keep))
        drop_k = job.drop_points(job.logits(trial))
        tries.append({"fp32_layers": k, "dev_drop_points": drop_k})
        if drop_k < best[0]:
            best = (drop_k, keep, trial)
        if drop_k <= tolerance:
            break
    kept = [display(n) for n in best[1]]
    report.update(tries=tries, met=best[0] <= tolerance, fp32_layers=kept, final_dev_drop_points=best[0])
    if report["met"]:
        log.info("PT2E repair: %d layer(s) kept in fp32, dev drop %.2f <= %.2f points: %s",
                 len(kept), best[0], tolerance, ", ".join(kept))
    else:
        log.warning("PT2E repair could not meet the tolerance of %.2f points (best: %.2f points with %d "
                    "layer(s) in fp32); keeping the best model found. Raise max_fallback_layers or the "
                    "tolerance, or try calibration: minmax / mode: dynamic.", tolerance, best[0], len(kept))
    return best[2], report


def _torchao_x86(job: TorchQuantJob) -> tuple[Any, dict[str, Any]]:
    reduce_range, why = job.cfg.activation_reduce_range()
    model = pt2e_quantize(job, x86_quantizer(job.cfg))
    details: dict[str, Any] = {
        "quantizer": "torchao X86InductorQuantizer",
        "activations": ("u8 per tensor, " + ("per batch at run time" if job.cfg.mode == "dynamic"
                                             else f"calibrated ({job.cfg.calibration})")),
        "weights": "s8 per channel, symmetric",
        "reduce_range": reduce_range, "reduce_range_why": why,
    }
    if job.cfg.tolerance is not None:
        model, details["repair"] = x86_repair(job, model)
    return model, details


# ---- Intel Neural Compressor -----------------------------------------------------------------

def inc_missing() -> str | None:
    """None when Neural Compressor 3.x's PyTorch API imports; otherwise why not."""
    try:
        with quiet_logger("neural_compressor"):  # a table per trial, warnings per convert
            from neural_compressor.torch.export import export  # noqa: F401
            from neural_compressor.torch.quantization import (  # noqa: F401
                StaticQuantConfig,
                TuningConfig,
                autotune,
            )
    except ImportError as exc:
        return f"neural_compressor.torch does not import ({exc})"
    return None


def _inc_describe(config) -> dict[str, Any]:
    local = config._get_op_name_op_type_config()[1] if hasattr(config, "_get_op_name_op_type_config") else {}
    return {"act_sym": config.act_sym, "act_algo": config.act_algo, "act_dtype": config.act_dtype,
            "w_dtype": config.w_dtype, "w_granularity": config.w_granularity,
            "fp32_layers": sorted(display(n) for n, c in local.items() if c.w_dtype == "fp32")}


def _inc_autotune(job: TorchQuantJob, exported, configs: list, tolerable_loss: float, round_name: str,
                  trials: list[dict[str, Any]]):
    """One INC autotune over ``configs``; appends a record per trial (baseline excluded)."""
    from neural_compressor.torch.quantization import TuningConfig, autotune

    evaluations: list[tuple[float, list[str]]] = []

    def eval_fn(model) -> float:
        logits = job.logits(model)
        evaluations.append((dev_accuracy(logits, job.dev), fp32_layers(model)))
        return evaluations[-1][0]

    def run_fn(prepared) -> None:
        calibrate(prepared, job.names, job.calibration_batches(), job.max_seq_len)

    tune = TuningConfig(config_set=configs, tolerable_loss=tolerable_loss, max_trials=len(configs))
    with quiet_logger("neural_compressor"):  # a table per trial, warnings per convert
        model = autotune(exported, tune, eval_fn=eval_fn, run_fn=run_fn)
    if model is None:  # INC skips configs it has seen; then no trial ends the loop
        raise ExportError(f"INC autotune ({round_name}) returned no model after "
                          f"{len(evaluations) - 1} trial(s).",
                          hint="use backend: torchao-x86, or report the INC version.")
    fp32_acc = dev_accuracy(job.fp32_logits, job.dev)
    for config, (acc, left) in zip(configs, evaluations[1:], strict=False):  # [0]: INC's fp32 baseline
        trials.append({"round": round_name, "config": _inc_describe(config), "dev_accuracy": acc,
                       "dev_drop_points": 100 * (fp32_acc - acc), "fp32_layers_in_graph": left})
    return model


def _inc(job: TorchQuantJob) -> tuple[Any, dict[str, Any]]:
    import neural_compressor
    from neural_compressor.torch.export import export as inc_export
    from neural_compressor.torch.quantization import StaticQuantConfig

    cfg = job.cfg
    fp32_acc = dev_accuracy(job.fp32_logits, job.dev)
    # INC's criterion is relative: acc >= baseline * (1 - tolerable_loss); points -> that ratio
    if cfg.tolerance is None:
        tolerable_loss, goal = 0.01, "INC's default tolerable_loss (1% relative)"
    else:
        tolerable_loss = cfg.tolerance / 100 / fp32_acc + 1e-9 if fp32_acc > 0 else 0.0
        goal = f"{cfg.tolerance:g} points of dev accuracy"
    with quiet_logger("neural_compressor"):  # a table per trial, warnings per convert
        exported = inc_export(job.module, example_args(job.names, job.vocab_size),
                              dynamic_shapes=dynamic_shapes(job.names, max_seq_len=job.max_seq_len))
    trials: list[dict[str, Any]] = []
    first = StaticQuantConfig.get_config_set_for_tuning().expand()
    best = _inc_autotune(job, exported, first, tolerable_loss, "inc-default", trials)
    best_drop = job.drop_points(job.logits(best))
    report: dict[str, Any] = {"goal": goal, "tolerable_loss": tolerable_loss,
                              "tolerance_points": cfg.tolerance}
    if cfg.tolerance is not None and best_drop > cfg.tolerance:
        # keep the most sensitive Linear layers fp32, on top of the best INC config so far
        ranking = sensitivity(job, lambda name: x86_quantizer(TorchQuantizeConfig(), only=name))
        report["sensitivity"] = _shown(ranking)
        base = max(zip(first, [t["dev_accuracy"] for t in trials], strict=False), key=lambda p: p[1])[0]
        fallback = []
        for k in range(1, min(cfg.max_fallback_layers, len(ranking)) + 1):
            config = StaticQuantConfig(act_sym=base.act_sym, act_algo=base.act_algo)
            config.set_local([r["layer"] for r in ranking[:k]],
                             StaticQuantConfig(w_dtype="fp32", act_dtype="fp32"))
            fallback.append(config)
        second = _inc_autotune(job, exported, fallback, tolerable_loss, "fp32-fallback", trials)
        second_drop = job.drop_points(job.logits(second))
        if second_drop < best_drop:
            best, best_drop = second, second_drop
    met = (best_drop <= cfg.tolerance if cfg.tolerance is not None
           else fp32_acc - best_drop / 100 >= fp32_acc * (1 - tolerable_loss))
    chosen = getattr(best, "qconfig", None)
    report.update(met=met, trials=trials, final_dev_drop_points=best_drop,
                  chosen_config=_inc_describe(next(iter(chosen.values()))) if chosen else None,
                  fp32_layers_source="the converted graph (Linear ops whose weight is not dequantized from "
                  "INT8); INC's autotune returns only the model, its chosen config is its qconfig attribute")
    if not met:
        log.warning("INC autotune found no config within %s (best: %.2f points lost after %d trials); "
                    "keeping the best found. Raise the tolerance or max_fallback_layers, or use "
                    "backend: torchao-x86.",
                    goal, best_drop, len(trials))
    _fold_weights(best)
    return best, {"quantizer": f"Intel Neural Compressor {neural_compressor.__version__} autotune "
                  "(PT2E static INT8, X86InductorQuantizer)", "tuning": report}


def _fold_weights(model) -> None:
    """INC converts without folding: quantize the weights once now, so model.pt2 stores INT8."""
    try:
        from torchao.quantization.pt2e.constant_fold import constant_fold
        from torchao.quantization.pt2e.quantize_pt2e import _quant_node_constraint

        constant_fold(model, _quant_node_constraint)
    except Exception as exc:  # only the file size is at stake
        log.info("could not fold INC's weight quantization (%s); model.pt2 keeps fp32 weights", exc)


@dataclass(frozen=True)
class Backend:
    run: Callable[[TorchQuantJob], tuple[Any, dict[str, Any]]]
    modes: tuple[str, ...]
    missing: Callable[[], str | None] | None = None
    hint: str | None = None


BACKENDS: dict[str, Backend] = {
    "torchao-x86": Backend(_torchao_x86, ("static", "dynamic")),
    "inc": Backend(_inc, ("static",), inc_missing, INC_HINT),
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
    saved = get_runtime("torch-pt2e-cpu-eager").load(out_dir).predict(subset)
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
    fp32_acc, acc = dev_accuracy(job.fp32_logits, dev), dev_accuracy(logits, dev)
    left = fp32_layers(quantized)
    log.info("PT2E %s %s: dev accuracy %.2f%% (fp32 %.2f%%), agreement %.2f%%, %d layer(s) in fp32",
             cfg.backend, cfg.mode, 100 * acc, 100 * fp32_acc, 100 * check["agreement"], len(left))
    return {
        "backend": cfg.backend, "mode": cfg.mode, **details, "agreement_with_source": check,
        "dev_accuracy": acc, "dev_accuracy_fp32": fp32_acc, "dev_drop_points": 100 * (fp32_acc - acc),
        "fp32_layers": left, "int8_layers": sum(q for _, q in linear_layers(quantized)),
        "calibration": {"examples": len(job.calibration), "batch_size": cfg.calibration_batch_size,
                        "batches": 1 if cfg.mode == "dynamic"
                        else -(-len(job.calibration) // cfg.calibration_batch_size)},
        "max_seq_len": max_seq_len, "reload_check": {**reloaded, "examples": len(subset)},
        "pt2_mb": round((out_dir / PT2_FILE).stat().st_size / 1e6, 2),
    }
