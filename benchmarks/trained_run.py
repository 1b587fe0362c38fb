"""What the benchmark scripts that start from a finished default run share."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from slimbert.artifacts import write_json_atomic


@dataclass(frozen=True)
class TrainedRun:
    """A finished run's teacher and student folders and the data settings they were trained on."""

    seed: int
    dataset: dict
    teacher: str
    student: str

    @classmethod
    def load(cls, run: Path) -> TrainedRun:
        trained = json.loads((run / "recipe.json").read_text())
        return cls(seed=trained["seed"],
                   dataset={k: v for k, v in trained["dataset"].items() if v is not None},
                   teacher=str((run / "teacher").resolve()), student=str((run / "student").resolve()))


def write_bench_summary(out: Path, results: Path, summary: dict) -> None:
    """Write ``summary`` plus the bench report of run folder ``out`` to ``results``; print the table."""
    write_json_atomic(results, {**summary, "bench": json.loads((out / "report.json").read_text())})
    print((out / "report.md").read_text())
    print(f"wrote {results}")
