"""Accuracy-aware ONNX quantization: sensitive nodes fall back until the drop is tolerable.

The search itself is ``fallback.fallback_search`` (shared with the PyTorch paths); this
module says what a unit is here (a weight node of the graph) and what falling back means.
The fallback is dynamic INT8 for static QOperator graphs (per-run scales follow the
activation outliers a calibrated range clips: on the default student, test accuracy back to
fp32's at 2.4x fp32 speed, where fp32 fallback of the same two matmuls ran at 1.6x) and fp32
otherwise. Calibration ranges are computed once and reused by every try.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slimbert.data import EncodedSplit
from slimbert.formats import ONNX_FILE
from slimbert.quantize.fallback import DevScorer, fallback_search, rank_units
from slimbert.quantize.onnx_ptq import QuantJob, dynamic_capable, quantizable_nodes, run_job

log = logging.getLogger(__name__)


def _logits(job: QuantJob, dev: EncodedSplit) -> np.ndarray:
    from slimbert.runtimes import get_runtime

    run_job(job)
    return get_runtime("ort-cpu").load(job.output.parent).served_logits(dev)  # as the bench scores it


def _quantize_only(job: QuantJob, dev: EncodedSplit, work: Path) -> Callable[[str], np.ndarray]:
    folder = work / "sensitivity"
    folder.mkdir(exist_ok=True)
    return lambda node: _logits(dataclasses.replace(job, output=folder / ONNX_FILE, only_nodes=[node]), dev)


def sensitivity(job: QuantJob, dev: EncodedSplit, fp32_logits: np.ndarray, work: Path, *,
                progress: bool = False) -> list[dict[str, Any]]:
    """Per quantizable node: the dev-logit MSE and accuracy change when only it is quantized."""
    return rank_units(quantizable_nodes(job), _quantize_only(job, dev, work), fp32_logits, dev.labels,
                      unit_key="node", progress=progress)


def repair(job: QuantJob, dev: EncodedSplit, fp32_logits: np.ndarray, logits: np.ndarray, work: Path, *,
           progress: bool = False, scorer: DevScorer | None = None) -> dict[str, Any]:
    """Exclude sensitive nodes from ``job`` until its dev drop <= tolerance; rewrites job.output."""
    tolerance = job.cfg.tolerance
    precision = job.cfg.fallback_precision()
    (work / "repair").mkdir(exist_ok=True)
    dynamic: set[str] | None = None  # the nodes ORT has a dynamic kernel for, read from the graph once

    def fall_back_fields(nodes: list[str]) -> dict[str, list[str]]:
        nonlocal dynamic
        if dynamic is None:
            dynamic = dynamic_capable(job, quantizable_nodes(job)) if precision == "dynamic" else set()
        return _fall_back(job, dynamic, nodes)

    def fall_back(nodes: list[str]) -> tuple[np.ndarray, None]:
        trial = dataclasses.replace(job, output=work / "repair" / ONNX_FILE, **fall_back_fields(nodes))
        return _logits(trial, dev), None

    best, search = fallback_search(
        units=lambda: quantizable_nodes(job), quantize_only=_quantize_only(job, dev, work),
        fall_back=fall_back, initial_logits=logits, initial_model=None, fp32_logits=fp32_logits,
        labels=dev.labels, tolerance=tolerance, max_units=job.cfg.max_fallback_nodes, scorer=scorer,
        units_key="fallback_nodes", unit_key="node", progress=progress)
    report = {"fallback": precision, **search.to_dict()}
    if search.sensitivity is None:  # met without a search: the model written is the one
        return report
    chosen = fall_back_fields(best.units)
    report["fp32_nodes"] = [n for n in best.units if n in chosen["exclude_nodes"]]  # no dynamic kernel
    job.dynamic_nodes, job.exclude_nodes = chosen["dynamic_nodes"], chosen["exclude_nodes"]
    run_job(job)  # the chosen variant, written where the stage expects it
    if search.met:
        log.info("quantization repair: %d node(s) fell back to %s, dev drop %.2f <= %.2f points: %s",
                 len(best.units), precision, best.dev_drop_points, tolerance, ", ".join(best.units))
    else:
        log.warning("quantization repair could not meet the tolerance of %.2f points (best: %.2f points "
                    "with %d node(s) in %s); keeping the best model found. Raise max_fallback_nodes or "
                    "the tolerance, or try another calibration or fallback: fp32.", tolerance,
                    best.dev_drop_points, len(best.units), precision)
    return report


def _fall_back(job: QuantJob, dynamic: set[str], nodes: list[str]) -> dict[str, list[str]]:
    """The QuantJob fields that put ``nodes`` in dynamic INT8 where they are in ``dynamic``
    (the fallback is dynamic and ORT has a dynamic kernel for the op), in fp32 otherwise."""
    return {"dynamic_nodes": job.dynamic_nodes + [n for n in nodes if n in dynamic],
            "exclude_nodes": job.exclude_nodes + [n for n in nodes if n not in dynamic]}
