"""The ``torchao-x86`` backend: torchao's X86InductorQuantizer, static or dynamic.

Static: u8 activations calibrated on training batches, s8 per-channel weights; dynamic:
activation ranges per batch at run time. With a ``tolerance``, the Linear layers whose
quantization moves the dev logits most stay fp32 (``set_module_name_qconfig(name, None)``)
through the shared fallback search (``fallback.py``), one more at a time, until the
dev-accuracy drop is within it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from slimbert.quantize.config import TorchQuantizeConfig
from slimbert.quantize.fallback import fallback_search
from slimbert.quantize.pt2e_job import TorchQuantJob, display, linear_names, pt2e_quantize, quantize_only

log = logging.getLogger(__name__)


def x86_quantization_config(cfg: TorchQuantizeConfig):
    import dataclasses

    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e import MinMaxObserver

    reduce_range = cfg.reduce_range if cfg.reduce_range is not None else cfg.activation_reduce_range()[0]
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


def x86_repair(job: TorchQuantJob, model) -> tuple[Any, dict[str, Any]]:
    """Keep the most sensitive Linear layers fp32 until the dev drop <= tolerance."""
    tolerance = job.cfg.tolerance

    def fall_back(layers: list[str]):
        trial = pt2e_quantize(job, x86_quantizer(job.cfg, fp32=layers))
        return job.logits(trial), trial

    best, search = fallback_search(
        units=lambda: linear_names(job), fall_back=fall_back, initial_logits=job.logits(model),
        initial_model=model, fp32_logits=job.fp32_logits, labels=job.dev.labels, tolerance=tolerance,
        max_units=job.cfg.max_fallback_layers, units_key="fp32_layers", unit_key="layer",
        quantize_only=quantize_only(job, lambda name: x86_quantizer(job.cfg, only=name)),
        progress=job.progress)
    report = search.to_dict(show=display)
    if search.sensitivity is None:
        return model, report
    kept = report["fp32_layers"]
    if search.met:
        log.info("PT2E repair: %d layer(s) kept in fp32, dev drop %.2f <= %.2f points: %s",
                 len(kept), best.dev_drop_points, tolerance, ", ".join(kept))
    else:
        log.warning("PT2E repair could not meet the tolerance of %.2f points (best: %.2f points with %d "
                    "layer(s) in fp32); keeping the best model found. Raise max_fallback_layers or the "
                    "tolerance, or try calibration: minmax / mode: dynamic.", tolerance,
                    best.dev_drop_points, len(kept))
    return best.model, report


def choose_reduce_range(job: TorchQuantJob) -> tuple[TorchQuantJob, Any, str, list[dict[str, Any]]]:
    """7- or 8-bit activations, by the dev drop of each (``schemes: measure``, reduce_range unset).

    Both run on the same oneDNN kernels, so there is no speed to weigh: the smaller drop wins,
    the instruction set's choice on a tie. Returns the job with the choice fixed, its model,
    why, and the tries."""
    table, why = job.cfg.activation_reduce_range()
    if job.cfg.reduce_range is not None or job.cfg.schemes == "table":
        fixed = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, reduce_range=table))
        return fixed, pt2e_quantize(fixed, x86_quantizer(fixed.cfg)), why, []
    tries = []
    for reduce_range in (table, not table):
        trial = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, reduce_range=reduce_range))
        model = pt2e_quantize(trial, x86_quantizer(trial.cfg))
        tries.append((trial.drop_points(trial.logits(model)), reduce_range != table, trial, model))
    drop, _, best, model = min(tries, key=lambda t: (t[0], t[1]))
    record = [{"reduce_range": t.cfg.reduce_range, "dev_drop_points": d} for d, _, t, _ in tries]
    log.info("PT2E activations: %s-bit (dev drop %.2f; measured against %s-bit)",
             7 if best.cfg.reduce_range else 8, drop, 8 if best.cfg.reduce_range else 7)
    return best, model, f"measured on dev ({why} ordered the tries)", record


def quantize_x86(job: TorchQuantJob) -> tuple[Any, dict[str, Any]]:
    job, model, why, tries = choose_reduce_range(job)
    reduce_range = job.cfg.reduce_range
    details: dict[str, Any] = {
        "quantizer": "torchao X86InductorQuantizer",
        "activations": ("u8 per tensor, " + ("per batch at run time" if job.cfg.mode == "dynamic"
                                             else f"calibrated ({job.cfg.calibration})")),
        "weights": "s8 per channel, symmetric",
        "reduce_range": reduce_range, "reduce_range_why": why, "reduce_range_tries": tries,
    }
    model, details["repair"] = x86_repair(job, model)
    return model, details
