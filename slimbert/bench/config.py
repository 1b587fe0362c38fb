"""The bench stage's settings and what it measures, importable without any runtime.

Parsing a recipe and planning a run (`slimbert run --dry-run`) read them; run.py, which
loads the runtimes (torch, ONNX Runtime, ...), measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class BenchConfig:
    """What to measure. Latency uses full-length synthetic inputs; accuracy real text."""

    artifacts: list[str] | None = None  # stage names or artifact folders; None: all models
    targets: list[str] | None = None  # runtime names; None: every available CPU runtime per kind
    reference: str | None = None  # row that 'vs ref' and speed-ups compare to; default: first
    batch_sizes: list[int] | None = None
    seq_len: int = 128
    # extra sweep: p50 and throughput at the largest batch size for each of these lengths
    sweep_seq_lens: list[int] | None = None
    threads: int | None = None  # None: all cores
    warmup: int = 3
    min_iters: int = 10
    max_iters: int = 200
    budget_s: float = 3.0  # timing budget per artifact, target and batch size
    split: Literal["test", "dev", "selection"] = "test"  # selection: see SplitFractions
    eval_batch_size: int = 64
    # rows are measured in a fresh worker process, away from what earlier stages left in this
    # one (bench/measure.py); false measures in this process (quicker to start, less trusted)
    isolate: bool = True
    # every row timed again briefly at the end; a row whose p50 moved by more than 1.5x is flagged
    recheck: bool = True

    def __post_init__(self) -> None:
        if self.batch_sizes is None:
            self.batch_sizes = [1, 32]
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive integers, got {self.batch_sizes}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        if self.sweep_seq_lens is not None and (not self.sweep_seq_lens or min(self.sweep_seq_lens) < 2):
            raise ValueError(f"sweep_seq_lens must be lengths >= 2, got {self.sweep_seq_lens}")


@dataclass
class BenchEntry:
    name: str
    path: Path
    kind: str  # a model kind: "hf-model", "onnx", "ort-mobile", "executorch"
