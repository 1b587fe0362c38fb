"""Latency of a session on a fixed batch: warm-up, then timed runs until a budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from slimbert.runtimes import Session


@dataclass
class LatencyStats:
    batch_size: int
    seq_len: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # examples per second at p50

    @classmethod
    def from_times(cls, times_s: list[float], batch_size: int, seq_len: int) -> LatencyStats:
        ms = np.asarray(times_s) * 1e3
        p50 = float(np.percentile(ms, 50))
        return cls(batch_size, seq_len, len(ms), p50, float(np.percentile(ms, 90)),
                   float(np.percentile(ms, 99)), float(ms.mean()), batch_size / (p50 / 1e3))


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, input_names: tuple[str, ...],
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Full-length inputs (no padding): the standard fixed-shape latency workload."""
    rng = np.random.default_rng(seed)
    # skip the low ids, where BERT vocabularies keep special and unused tokens
    ids = rng.integers(min(1000, vocab_size // 4), vocab_size, size=(batch_size, seq_len), dtype=np.int64)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in input_names:
        batch["token_type_ids"] = np.zeros_like(ids)
    return {k: v for k, v in batch.items() if k in input_names}


def measure_latency(session: Session, batch: dict[str, np.ndarray], *, warmup: int = 3,
                    min_iters: int = 10, max_iters: int = 200, budget_s: float = 3.0) -> LatencyStats:
    """Time ``session.run(batch)`` at least ``min_iters`` times and until ``budget_s``."""
    for _ in range(warmup):
        session.run(batch)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        session.run(batch)
        times.append(time.perf_counter() - t0)
    batch_size, seq_len = next(iter(batch.values())).shape
    return LatencyStats.from_times(times, batch_size, seq_len)


def interleaved_p50_ms(runs: dict[str, Callable[[], object]], *, rounds: int = 8, per_round: int = 15,
                       warmup: int = 5) -> dict[str, float]:
    """p50 in ms of each callable, timed in alternating rounds: on a noisy shared machine a
    slow spell lands on every variant alike, so their ratio holds where two runs would not."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            for _ in range(per_round):
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
    return {key: round(float(np.median(values)) * 1e3, 3) for key, values in times.items()}
