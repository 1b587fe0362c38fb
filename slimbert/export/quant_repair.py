"""Accuracy-aware quantization: sensitive nodes fall back until the drop is tolerable.

Quantization error is not spread evenly: a few matmuls (often the classifier head, the
pooler or one FFN output) cause most of it. The search quantizes one weight node at a time
and measures how far the dev logits move from fp32 (mean squared error: a continuous score,
where a few hundred dev examples make accuracy too coarse to rank nodes), then moves nodes
in that order to the fallback precision, re-quantizing the whole graph each time, until the
dev-accuracy drop is within the tolerance. The fallback is dynamic INT8 for static QOperator
graphs (per-run scales follow the activation outliers a calibrated range clips: on the
default student, test accuracy back to fp32's at 2.4x fp32 speed, where fp32 fallback of the
same two matmuls ran at 1.6x) and fp32 otherwise. Calibration ranges are computed once and
reused by every try. If no allowed number of fallbacks meets the tolerance, the best model
found is kept and the report says the tolerance was not met.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from slimbert.data import EncodedSplit
from slimbert.export.onnx_quant import QuantJob, dev_accuracy, dynamic_capable, quantizable_nodes, run_job
from slimbert.formats import ONNX_FILE
from slimbert.progress import progress_bar

log = logging.getLogger(__name__)


def _logits(job: QuantJob, dev: EncodedSplit) -> np.ndarray:
    from slimbert.runtimes import get_runtime

    run_job(job)
    return get_runtime("ort-cpu").load(job.output.parent).predict(dev)


def sensitivity(job: QuantJob, dev: EncodedSplit, fp32_logits: np.ndarray, work: Path, *,
                progress: bool = False) -> list[dict[str, Any]]:
    """Per quantizable node: the dev-logit MSE and accuracy change when only it is quantized."""
    folder = work / "sensitivity"
    folder.mkdir(exist_ok=True)
    fp32_acc = dev_accuracy(fp32_logits, dev)
    rows = []
    nodes = quantizable_nodes(job)
    for node in progress_bar(nodes, enabled=progress, desc="sensitivity", leave=False):
        trial = dataclasses.replace(job, output=folder / ONNX_FILE, only_nodes=[node])
        logits = _logits(trial, dev)
        rows.append({"node": node, "logit_mse": float(np.mean((logits - fp32_logits) ** 2)),
                     "dev_drop_points": 100 * (fp32_acc - dev_accuracy(logits, dev))})
    return sorted(rows, key=lambda r: (r["logit_mse"], r["dev_drop_points"]), reverse=True)


def repair(job: QuantJob, dev: EncodedSplit, fp32_logits: np.ndarray, logits: np.ndarray, work: Path, *,
           progress: bool = False) -> dict[str, Any]:
    """Exclude sensitive nodes from ``job`` until its dev drop <= tolerance; rewrites job.output."""
    tolerance = job.cfg.tolerance
    fp32_acc = dev_accuracy(fp32_logits, dev)
    drop = 100 * (fp32_acc - dev_accuracy(logits, dev))
    precision = job.cfg.fallback_precision()
    report: dict[str, Any] = {"tolerance_points": tolerance, "initial_dev_drop_points": drop,
                              "fallback": precision, "fallback_nodes": [], "met": drop <= tolerance}
    if drop <= tolerance:
        return report
    ranking = sensitivity(job, dev, fp32_logits, work, progress=progress)
    report["sensitivity"] = ranking
    # the best variant: lowest dev drop, then (a few hundred dev examples tie often) the one
    # whose predictions agree most with fp32's
    agreement = _agreement(logits, fp32_logits)
    tries = [{"fallback_nodes": 0, "dev_drop_points": drop, "agreement": agreement}]
    best = (drop, -agreement, [])
    trial_dir = work / "repair"
    trial_dir.mkdir(exist_ok=True)
    limit = min(job.cfg.max_fallback_nodes, len(ranking))
    # the ranked nodes ORT has a dynamic kernel for (read from the graph once, not per try)
    dynamic = dynamic_capable(job, [r["node"] for r in ranking]) if precision == "dynamic" else set()
    for k in progress_bar(range(1, limit + 1), enabled=progress, desc="fallback", leave=False):
        keep = [r["node"] for r in ranking[:k]]
        trial = dataclasses.replace(job, output=trial_dir / ONNX_FILE, **_fall_back(job, dynamic, keep))
        trial_logits = _logits(trial, dev)
        drop_k = 100 * (fp32_acc - dev_accuracy(trial_logits, dev))
        agreement_k = _agreement(trial_logits, fp32_logits)
        tries.append({"fallback_nodes": k, "dev_drop_points": drop_k, "agreement": agreement_k})
        if (drop_k, -agreement_k) < best[:2]:
            best = (drop_k, -agreement_k, keep)
        if drop_k <= tolerance:
            break
    report["tries"] = tries
    report["met"] = best[0] <= tolerance
    report["fallback_nodes"] = best[2]
    report["final_dev_drop_points"] = best[0]
    report["final_agreement"] = -best[1]
    chosen = _fall_back(job, dynamic, best[2])
    report["fp32_nodes"] = [n for n in best[2] if n in chosen["exclude_nodes"]]  # no dynamic kernel
    job.dynamic_nodes, job.exclude_nodes = chosen["dynamic_nodes"], chosen["exclude_nodes"]
    run_job(job)  # the chosen variant, written where the stage expects it
    if report["met"]:
        log.info("quantization repair: %d node(s) fell back to %s, dev drop %.2f <= %.2f points: %s",
                 len(best[2]), precision, best[0], tolerance, ", ".join(best[2]))
    else:
        log.warning("quantization repair could not meet the tolerance of %.2f points (best: %.2f points "
                    "with %d node(s) in %s); keeping the best model found. Raise max_fallback_nodes or "
                    "the tolerance, or try another calibration or fallback: fp32.", tolerance, best[0],
                    len(best[2]), precision)
    return report


def _agreement(logits: np.ndarray, fp32_logits: np.ndarray) -> float:
    return float((logits.argmax(-1) == fp32_logits.argmax(-1)).mean())


def _fall_back(job: QuantJob, dynamic: set[str], nodes: list[str]) -> dict[str, list[str]]:
    """The QuantJob fields that put ``nodes`` in dynamic INT8 where they are in ``dynamic``
    (the fallback is dynamic and ORT has a dynamic kernel for the op), in fp32 otherwise."""
    return {"dynamic_nodes": job.dynamic_nodes + [n for n in nodes if n in dynamic],
            "exclude_nodes": job.exclude_nodes + [n for n in nodes if n not in dynamic]}
