"""The ``inc`` backend: Intel Neural Compressor 3.x ``autotune`` over PT2E static INT8 configs.

The tolerance is mapped to INC's relative ``tolerable_loss``. First INC's own static tuning
set (``StaticQuantConfig.get_config_set_for_tuning()``: symmetric/asymmetric activations x
MinMax/KL observers); if none meets the tolerance, the shared fallback search
(``fallback.py``) keeps the 1, 2, ... most sensitive Linear layers in fp32 (``set_local`` on
the best INC config), each variant quantized by INC itself, until the tolerance holds. INC
3.x has no automatic per-op fallback on the PT2E path, so slimbert supplies those configs.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from slimbert.errors import ExportError
from slimbert.export.pt2e import calibrate, dynamic_shapes, example_args
from slimbert.progress import quiet_logger
from slimbert.quantize.config import TorchQuantizeConfig
from slimbert.quantize.fallback import fallback_search
from slimbert.quantize.pt2e_job import TorchQuantJob, display, fp32_layers, linear_names, quantize_only
from slimbert.quantize.torchao_x86 import x86_quantizer
from slimbert.validation import accuracy, drop_points

log = logging.getLogger(__name__)

INC_HINT = ("install Intel Neural Compressor 3.x with its PyTorch extra: pip install "
            "'neural-compressor[pt]==3.10' (a slimbert dependency: `pip install -e .` restores it), "
            "or use backend: torchao-x86.")


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
        evaluations.append((accuracy(logits, job.dev.labels), fp32_layers(model)))
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
    for config, (acc, left) in zip(configs, evaluations[1:], strict=False):  # [0]: INC's fp32 baseline
        trials.append(_trial_record(job, round_name, config, acc, left))
    return model


def _trial_record(job: TorchQuantJob, round_name: str, config, acc: float, left: list[str]) -> dict[str, Any]:
    return {"round": round_name, "config": _inc_describe(config), "dev_accuracy": acc,
            "dev_drop_points": drop_points(accuracy(job.fp32_logits, job.dev.labels), acc),
            "fp32_layers_in_graph": left}


def _inc_quantize(job: TorchQuantJob, exported, config):
    """One INC quantization of a copy of ``exported`` with ``config``: what autotune runs per trial,
    with the attributes INC's export attached (a deepcopy drops them; autotune re-sets them too)."""
    from neural_compressor.torch.quantization import quantize

    model = copy.deepcopy(exported)
    for name in ("_exported", "dynamic_shapes"):
        setattr(model, name, getattr(exported, name, None))
    with quiet_logger("neural_compressor"):
        return quantize(model, quant_config=config, inplace=True, run_fn=lambda prepared: calibrate(
            prepared, job.names, job.calibration_batches(), job.max_seq_len))


def quantize_inc(job: TorchQuantJob) -> tuple[Any, dict[str, Any]]:
    import neural_compressor
    from neural_compressor.torch.export import export as inc_export
    from neural_compressor.torch.quantization import StaticQuantConfig

    cfg = job.cfg
    fp32_acc = accuracy(job.fp32_logits, job.dev.labels)
    # INC's criterion is relative: acc >= baseline * (1 - tolerable_loss); points -> that ratio
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
    # keep the most sensitive Linear layers fp32, on top of the best INC config so far; INC 3.x
    # has no per-op fallback on the PT2E path, so its quantize runs slimbert's search's variants
    base = max(zip(first, [t["dev_accuracy"] for t in trials], strict=False), key=lambda p: p[1])[0]

    def fall_back(layers: list[str]):
        config = StaticQuantConfig(act_sym=base.act_sym, act_algo=base.act_algo)
        config.set_local(layers, StaticQuantConfig(w_dtype="fp32", act_dtype="fp32"))
        model = _inc_quantize(job, exported, config)
        logits = job.logits(model)
        trials.append(_trial_record(job, "fp32-fallback", config, accuracy(logits, job.dev.labels),
                                    fp32_layers(model)))
        return logits, model

    chosen_trial, search = fallback_search(
        units=lambda: linear_names(job), fall_back=fall_back, initial_logits=job.logits(best),
        initial_model=best, fp32_logits=job.fp32_logits, labels=job.dev.labels,
        tolerance=cfg.tolerance, max_units=cfg.max_fallback_layers, units_key="fp32_layers",
        unit_key="layer", progress=job.progress,
        quantize_only=quantize_only(job, lambda name: x86_quantizer(TorchQuantizeConfig(), only=name)))
    if search.sensitivity is not None:
        searched = search.to_dict(show=display)
        report["sensitivity"], report["fallback_tries"] = searched["sensitivity"], searched["tries"]
    best, best_drop = chosen_trial.model, chosen_trial.dev_drop_points
    met = best_drop <= cfg.tolerance
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
