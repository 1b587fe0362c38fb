"""One bench row's measurement (predictions, latency, memory), in a fresh worker process.

Whatever earlier work left in a process is timed with what runs next in it: thread pools,
thread settings, a busy thread. After an ExecuTorch export in the same `slimbert run`, the
PyTorch teacher read 910 ms at batch 1 instead of 16 ms; running a `.pte` row first does
the same to a torch row after it (903 ms against 74 ms re-timed). So every row is measured
in a process of its own (``spawn``: a new interpreter, nothing inherited), and at the end
every row is timed again, briefly, in another new process; a row whose two medians disagree
is flagged in the report (another process was busy, or the row is unstable), instead of
being shown as if it were sound.

Everything here runs in the worker, so it takes and returns plain picklable values.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from slimbert.bench.config import BenchConfig
from slimbert.bench.latency import measure_latency, synthetic_batch
from slimbert.data import EncodedSplit

# a re-timed p50 more than this factor away from the row's own is flagged
RECHECK_TOLERANCE = 1.5


@dataclass
class RowJob:
    """What the worker needs to measure one artifact on one runtime."""

    runtime: str
    path: Path
    threads: int
    encoded: EncodedSplit  # the evaluation split, tokenized (accuracy is scored by the caller)
    vocab_size: int
    cfg: BenchConfig  # batch sizes, lengths, warm-up, iterations, timing budget


@dataclass
class RowMeasurement:
    logits: np.ndarray  # as served: one example at a time where the session is batch dependent
    latency: list[dict[str, Any]]  # LatencyStats per batch size
    sweep: list[dict[str, Any]]  # LatencyStats per sweep length, at the largest batch size
    rss_delta_mb: float | None
    gpu_peak_mb: float | None
    setup_seconds: dict[str, float] | None  # graph-captured runtimes: compile + capture per bucket
    # batch-dependent sessions only: the logits at the bench's eval batch size, to say how far
    # batched inference strays from what a served request gets
    batched_logits: np.ndarray | None = None


def _rss_mb() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss / 1e6


def _gpu_peak_mb() -> float | None:
    """Peak CUDA memory torch allocated (torch runtimes; TensorRT's buffers are torch's too)."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 1e6, 1) if torch.cuda.is_available() else None


def _reset_gpu_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _load(job: RowJob):
    from slimbert.runtimes import all_runtimes

    session = all_runtimes()[job.runtime].load_alone(job.path, threads=job.threads)  # one at a time
    if hasattr(session, "fit_to_lengths"):  # graph-captured runtimes: buckets from the data
        session.fit_to_lengths([len(ids) for ids in job.encoded.input_ids])
    return session


def _time(session, job: RowJob, cfg: BenchConfig, batch_size: int, seq_len: int) -> dict[str, Any]:
    batch = synthetic_batch(batch_size, seq_len, job.vocab_size, session.input_names)
    stats = measure_latency(session, batch, warmup=cfg.warmup, min_iters=cfg.min_iters,
                            max_iters=cfg.max_iters, budget_s=cfg.budget_s)
    return stats.__dict__


def measure_row(job: RowJob) -> RowMeasurement:
    """Predict the split and time every batch size (and sweep length) on one session."""
    from slimbert.runtimes import all_runtimes

    cfg = job.cfg
    cuda = all_runtimes()[job.runtime].device == "cuda"
    rss_before = _rss_mb()
    if cuda:
        _reset_gpu_peak()
    session = _load(job)
    logits = session.served_logits(job.encoded, cfg.eval_batch_size)
    batched = session.predict(job.encoded, cfg.eval_batch_size) if session.batch_dependent else None
    latency = [_time(session, job, cfg, b, cfg.seq_len) for b in cfg.batch_sizes]
    sweep = [_time(session, job, cfg, max(cfg.batch_sizes), n) for n in cfg.sweep_seq_lens or []]
    rss_after = _rss_mb()
    return RowMeasurement(
        logits=logits, latency=latency, sweep=sweep,
        rss_delta_mb=round(rss_after - rss_before, 1) if rss_before is not None else None,
        gpu_peak_mb=_gpu_peak_mb() if cuda else None,
        setup_seconds=dict(getattr(session, "setup_seconds", {})) or None, batched_logits=batched)


def recheck_p50(job: RowJob) -> float:
    """The p50 at the smallest batch size again, on a newly loaded session, in half the window.

    A newly started process runs its first iterations slower (thread pools, memory arenas):
    at least 10 warm-up runs, so that a short window does not flag a sound row."""
    session = _load(job)
    cfg = replace(job.cfg, warmup=max(job.cfg.warmup, 10), budget_s=max(0.5, job.cfg.budget_s / 2))
    return _time(session, job, cfg, min(cfg.batch_sizes), cfg.seq_len)["p50_ms"]


def timing_flag(p50_ms: float | None, recheck_ms: float | None) -> str | None:
    """Why a row's latency should not be trusted as is; None when its re-timing agrees."""
    if not p50_ms or not recheck_ms:
        return None
    ratio = recheck_ms / p50_ms
    if 1 / RECHECK_TOLERANCE <= ratio <= RECHECK_TOLERANCE:
        return None
    return (f"re-timed at the end of the bench: p50 {recheck_ms:.2f} ms against {p50_ms:.2f} ms "
            f"({ratio:.2f}x); the machine was busy or the row is unstable: rerun the bench")


def quiet_worker(slimbert_level: int, root_level: int) -> None:
    """Logging in a spawned worker as the parent set it up: a new interpreter starts with
    Python's defaults, so every row printed torchao's "Failed to load ... _C_mxfp8" and
    torch's pytree deprecation notices on import. Library chatter shows at -vv only."""
    import logging
    import warnings

    logging.basicConfig(level=root_level, format="%(levelname).1s %(name)s: %(message)s", force=True)
    logging.getLogger("slimbert").setLevel(slimbert_level)
    if root_level > logging.DEBUG:
        for name in ("torchao", "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")


class Worker:
    """Where rows are measured: a new process per call (``isolated``) or this one.

    The pool's one process is replaced after every call (``maxtasksperchild=1``), so no row
    inherits what the one before it left; the pool is closed when the bench ends (also on
    error or Ctrl-C).
    """

    def __init__(self, isolated: bool = True) -> None:
        self.isolated = isolated
        self._pool = None

    def __enter__(self) -> Worker:
        if self.isolated:
            import logging

            levels = (logging.getLogger("slimbert").getEffectiveLevel(), logging.getLogger().level)
            self._pool = multiprocessing.get_context("spawn").Pool(
                1, maxtasksperchild=1, initializer=quiet_worker, initargs=levels)
        return self

    def call(self, fn, *args):
        return self._pool.apply(fn, args) if self._pool is not None else fn(*args)

    def __exit__(self, exc_type, *_) -> None:
        if self._pool is not None:
            (self._pool.terminate if exc_type else self._pool.close)()
            self._pool.join()
            self._pool = None
