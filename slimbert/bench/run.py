"""Measure every artifact on every requested target with one harness."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from slimbert.bench.config import BenchConfig, BenchEntry
from slimbert.bench.measure import RowJob, Worker, measure_row, recheck_p50, timing_flag
from slimbert.bench.report import BenchReport, BenchRow
from slimbert.data import TextClassificationData, classification_metrics, encode_split
from slimbert.errors import SlimbertError
from slimbert.formats import model_size_bytes
from slimbert.progress import progress_bar
from slimbert.runtimes import all_runtimes
from slimbert.runtimes.base import SERVED_BATCH
from slimbert.tasks import DEFAULT_TASK, get_task

log = logging.getLogger(__name__)


def default_targets(kind: str, devices: tuple[str, ...] = ("cpu", "mobile")) -> list[str]:
    """Runtimes that run ``kind`` on this machine's CPU ("mobile" ones run here too).

    A kind no CPU runtime runs (a TensorRT engine) gets all its runtimes, so that the report
    says why they are unavailable instead of dropping the artifact.
    """
    runtimes = [r for r in all_runtimes().values() if r.kind == kind and r.in_default]
    return [r.name for r in runtimes if r.device in devices] or [r.name for r in runtimes]


def _model_config(path: Path) -> dict[str, Any]:
    import json

    return json.loads((path / "config.json").read_text())


def _check_labels(entry: BenchEntry, config: dict[str, Any], label_names: list[str]) -> None:
    """A model scored on a dataset with other labels gives a meaningless accuracy: say so.

    A different count is an error. Named labels in another order are an error too (the
    columns would be read as the wrong classes). Names that merely differ (0/1 against
    negative/positive) are matched by position, and the log says how.
    """
    id2label = config.get("id2label") or {}
    names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if not names:
        return
    if len(names) != len(label_names):
        raise SlimbertError(
            f"{entry.name} predicts {len(names)} labels ({', '.join(names)}) but the dataset has "
            f"{len(label_names)} ({', '.join(label_names)}).",
            hint="bench it on the dataset it was trained for (--dataset, or the recipe's dataset:), "
            "or fine-tune it on this one first.",
        )
    folded, data_folded = [n.lower() for n in names], [n.lower() for n in label_names]
    if folded == data_folded or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return
    if sorted(folded) == sorted(data_folded):
        raise SlimbertError(
            f"{entry.name} orders its labels {', '.join(names)} but the dataset's label ids are "
            f"{', '.join(label_names)}: its outputs would be scored as the wrong classes.",
            hint="relabel the dataset column so that its sorted labels follow the model's order, "
            "or fine-tune the model on this dataset.",
        )
    log.warning("%s's labels (%s) are not named as the dataset's (%s); they are matched by position: %s",
                entry.name, ", ".join(names), ", ".join(label_names),
                ", ".join(f"{d} -> {m}" for d, m in zip(label_names, names, strict=True)))


def artifact_notes(path: Path) -> tuple[str | None, list[str]]:
    """The instruction set an INT8 artifact was tuned on, and what its reader must know: a
    quantization that missed its tolerance, a scheme measured on another CPU."""
    from slimbert.artifacts import read_artifact
    from slimbert.hw import isa_mismatch

    try:
        artifact = read_artifact(Path(path))
    except SlimbertError:
        return None, []
    metrics = artifact.manifest.metrics if artifact is not None else {}
    notes = []
    if metrics.get("tolerance_met") is False:
        notes.append(f"quantization lost {metrics.get('dev_drop_points', 0):.2f} dev points, more than its "
                     f"tolerance of {metrics.get('tolerance_points'):g}: nothing tried held it")
    tuned = metrics.get("tuned_isa")
    mismatch = isa_mismatch(tuned)
    if mismatch:
        notes.append(mismatch)
    return tuned, notes


def _size_mb(entry: BenchEntry) -> float:
    return model_size_bytes(entry.path, entry.kind) / 1e6


def environment(threads: int, isolated: bool = True) -> dict[str, Any]:
    from slimbert.hw import cpu_name, detect_isa

    return {"cpu": cpu_name(), "isa": detect_isa(), "cores": os.cpu_count(), "threads": threads,
            "platform": platform.platform(),
            # where rows were timed: a fresh worker process, or the bench's own (isolate: false)
            "measured_in": "fresh worker process" if isolated else "bench process"}


def check_targets(cfg: BenchConfig) -> None:
    """Refuse a target no runtime has; the engine calls it before the run folder is made."""
    runtimes = all_runtimes()
    unknown = [t for t in cfg.targets or [] if t not in runtimes]
    if unknown:
        raise SlimbertError(f"unknown bench target {unknown[0]!r} (--targets); known: {', '.join(runtimes)}.")


def _check_finite(logits: np.ndarray, row: str) -> None:
    """Refuse NaN or infinite logits: argmax would read them as class 0, and on a skewed split a
    broken fp16/FP8 graph could then look accurate."""
    bad = ~np.isfinite(logits).all(axis=-1)
    if bad.any():
        first = [int(i) for i in np.flatnonzero(bad)[:5]]
        raise SlimbertError(
            f"{row}: {int(bad.sum())} of {len(logits)} examples have non-finite logits (NaN or inf; "
            f"examples {', '.join(map(str, first))}{', ...' if bad.sum() > 5 else ''}).",
            hint="the artifact or runtime is numerically broken (an fp16/FP8 overflow?): re-export it, "
                 "or bench it on another target.")


def run_bench(entries: list[BenchEntry], data: TextClassificationData, cfg: BenchConfig, *,
              max_length: int, name: str = "bench", progress: bool = True,
              task: str = DEFAULT_TASK) -> dict[str, Any]:
    """Benchmark ``entries``; returns the report as its JSON mapping (``bench_report`` gives it typed)."""
    return bench_report(entries, data, cfg, max_length=max_length, name=name, progress=progress,
                        task=task).to_dict()


def score_against_reference(rows: list[BenchRow], outputs: list[np.ndarray], reference: str, impl: Any,
                            labels: np.ndarray) -> None:
    """Score rows whose outputs are vectors (embeddings) against the reference row's, per example.

    Each row gets the task's metrics as means (``accuracy``, the report's metrics column) and
    per example (``example_scores``: what the gate's paired bootstrap resamples)."""
    ref = next((out for row, out in zip(rows, outputs, strict=True) if row.artifact == reference), None)
    if ref is None:
        raise SlimbertError(f"bench reference {reference!r} is not among the benchmarked artifacts.",
                            hint="set the bench stage's reference: to one of its artifacts (the teacher).")
    for row, out in zip(rows, outputs, strict=True):
        if out.shape != ref.shape:
            raise SlimbertError(
                f"{row.label} returns outputs of shape {out.shape}, the reference {reference} {ref.shape}: "
                "they are not the same task's outputs.",
                hint="bench a sentence-embedding model's folders (a sentence-transformers folder, or the "
                     "export-onnx stage of an embedding recipe) against an embedding reference.")
        scores = impl.example_scores(out, ref, labels)
        row.accuracy = {metric: float(np.mean(values)) for metric, values in scores.items()}
        row.example_scores = {metric: [round(float(v), 6) for v in values]
                              for metric, values in scores.items()}


def bench_report(entries: list[BenchEntry], data: TextClassificationData, cfg: BenchConfig, *,
                 max_length: int, name: str = "bench", progress: bool = True,
                 task: str = DEFAULT_TASK) -> BenchReport:
    """Benchmark ``entries`` on every target: the report (rows, config, data, environment).

    A classification row is scored against the dataset's labels; a row of a task whose outputs
    are vectors (sentence embeddings) against the reference row's outputs, once all are measured."""
    from slimbert.models import content_fingerprint, load_tokenizer, max_positions

    impl = get_task(task).load()
    threads = cfg.threads or os.cpu_count() or 1
    check_targets(cfg)
    runtimes = all_runtimes()
    if cfg.split not in data.splits and cfg.split == "selection":
        raise SlimbertError("bench split 'selection' asked for, but the dataset holds out no "
                            "selection split.",
                            hint="set dataset.split.selection to a share of the training examples "
                                 "(e.g. 0.15), or bench split: dev.")
    split = data.splits[cfg.split]
    plan, unavailable = [], []
    for entry in entries:
        config = _model_config(entry.path)
        if impl.outputs_are_labels:
            _check_labels(entry, config, data.label_names)
        limit = max_positions(config)
        longest = max([cfg.seq_len, *(cfg.sweep_seq_lens or [])])
        if limit and longest > limit:
            raise SlimbertError(
                f"bench seq_len {longest} is beyond {entry.name}'s maximum of {limit} positions.",
                hint=f"set bench seq_len to {limit} or less.",
            )
        targets = cfg.targets or default_targets(entry.kind)
        for target in targets:
            runtime = runtimes[target]  # names checked by check_targets
            if runtime.kind != entry.kind:
                continue
            reason = runtime.unavailable_reason()
            if reason:
                unavailable.append({"artifact": entry.name, "target": target, "reason": reason})
                continue
            plan.append((entry, runtime))
    if not plan:
        raise SlimbertError("nothing to benchmark: no artifact has an available target.",
                            hint="`slimbert bench --list-targets` shows what runs here.")

    rows: list[BenchRow] = []
    outputs: list[np.ndarray] = []  # each row's outputs as served, for tasks scored against a reference
    jobs: list[RowJob] = []
    fingerprints: dict[str, str] = {}  # the content hash of each artifact, once
    bar = progress_bar(plan, enabled=progress, desc="bench")
    with Worker(isolated=cfg.isolate) as worker:
        for entry, runtime in bar:
            bar.set_postfix_str(f"{entry.name} on {runtime.name}")
            if entry.name not in fingerprints:
                fingerprints[entry.name] = content_fingerprint(entry.path)
            tokenizer = load_tokenizer(entry.path)
            row_threads = cfg.threads or runtime.default_threads or threads  # mobile: a phone's count
            job = RowJob(runtime=runtime.name, path=entry.path, threads=row_threads,
                         encoded=encode_split(tokenizer, split, max_length), vocab_size=tokenizer.vocab_size,
                         cfg=cfg)
            measured = worker.call(measure_row, job)
            _check_finite(measured.logits, f"{entry.name} on {runtime.name}")
            labelled = impl.outputs_are_labels
            predictions = measured.logits.argmax(-1) if labelled else None
            outputs.append(measured.logits)
            tuned_isa, notes = artifact_notes(entry.path)
            for note in notes:
                log.warning("%s on %s: %s", entry.name, runtime.name, note)
            jobs.append(job)
            rows.append(BenchRow(
                artifact=entry.name, path=str(entry.path), kind=entry.kind, target=runtime.name,
                device=runtime.device, threads=row_threads,
                accuracy=classification_metrics(job.encoded.labels, predictions, data.num_labels)
                if labelled else None,
                latency=measured.latency, seq_len_sweep=measured.sweep, size_mb=round(_size_mb(entry), 2),
                # per-example predictions, in split order: what a paired comparison needs
                predictions=predictions.astype(int).tolist() if labelled else None,
                rss_delta_mb=measured.rss_delta_mb, gpu_peak_mb=measured.gpu_peak_mb,
                fingerprint=fingerprints[entry.name],
                # graph-captured runtimes: compile + warm-up + capture per shape bucket, kept out of latency
                setup_seconds=measured.setup_seconds,
                served_batch=SERVED_BATCH if measured.batched_logits is not None else None,
                # the task's agreement: the same label (classification), the mean cosine (embeddings)
                batched_agreement=(None if measured.batched_logits is None else
                                   impl.agreement(measured.logits, measured.batched_logits)),
                tuned_isa=tuned_isa, notes=notes,
            ))
        if cfg.recheck:  # every row timed again, after all of them: a busy machine shows up here
            for row, job in zip(rows, jobs, strict=True):
                row.recheck_p50_ms = round(worker.call(recheck_p50, job), 3)
                row.timing_flag = timing_flag(row.p50(min(cfg.batch_sizes)), row.recheck_p50_ms)
                if row.timing_flag:
                    log.warning("%s: %s", row.label, row.timing_flag)
    reference = cfg.reference or rows[0].artifact
    if not impl.outputs_are_labels:
        score_against_reference(rows, outputs, reference, impl, split.labels)
    report = BenchReport(
        name=name, task=task, reference=reference, config=cfg.__dict__,
        dataset={"source": data.info.get("source"), "fingerprint": data.fingerprint,
                 "split": cfg.split, "examples": len(split)},
        # the split's labels, once for all rows: lets `slimbert gate` pair predictions
        labels=split.labels.tolist(), environment=environment(threads, cfg.isolate), rows=rows,
        unavailable=unavailable)
    ref_row = report.reference_row
    if ref_row is None:
        raise SlimbertError(f"bench reference {report.reference!r} is not among the benchmarked artifacts.")
    metric = get_task(task).default_metric
    ref_value = ref_row.accuracy[metric]
    for row in rows:
        row.retention = row.accuracy[metric] / ref_value if ref_value > 0 else None
        row.speedup_b1 = report.speedup(row)
    return report
