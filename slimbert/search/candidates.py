"""Runs candidate stages through the engine, in one folder shared by every search.

Every candidate stage, and the bench of every artifact on the ranking split, is an ordinary
recipe stage in ``<out>/candidates``: the engine hashes its inputs, reuses it when nothing
changed, and resumes an interrupted one from its checkpoint. The selection data withholds the test
split (see ``run_recipe(withhold_test=True)``), so no candidate stage can read it. Candidates
are measured on ``split``: the selection split held out of training, or dev.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimbert.artifacts import write_json_atomic
from slimbert.progress import quiet_logger

log = logging.getLogger(__name__)

CANDIDATES_RECIPE = "optimize-candidates"


@dataclass
class SplitRow:
    """One artifact on one runtime, measured on the split the search ranks on."""

    artifact: str
    runtime: str
    score: float  # the metric, 0-1
    p50_ms: float  # batch 1
    size_mb: float
    predictions: np.ndarray
    labels: np.ndarray


class Candidates:
    """The candidates folder: runs stages by name, remembers what each cost to make."""

    def __init__(self, folder: Path, teacher_dir: Path, dataset: dict[str, Any], seed: int, *,
                 metric: str, seq_len: int, bench_budget_s: float, progress: bool, split: str = "dev"):
        self.folder = folder
        self.split = split
        self.teacher_dir = teacher_dir
        self.dataset = dataset
        self.seed = seed
        self.metric = metric
        self.seq_len = seq_len
        self.bench_budget_s = bench_budget_s
        self.progress = progress
        self.stages: dict[str, dict] = {}  # every stage asked for so far, by name
        self._costs_path = folder / "costs.json"
        self.costs: dict[str, float] = (json.loads(self._costs_path.read_text())
                                        if self._costs_path.is_file() else {})
        self._measured: dict[tuple[str, str], SplitRow] = {}  # a search asks for some rows twice

    def run(self, stages: list[dict], *, withhold_test: bool = True) -> None:
        """Make these stages (and the earlier ones they read), reusing finished ones.

        The test split stays withheld unless the caller is the one confirmation on test.
        """
        from slimbert.pipeline import run_recipe
        from slimbert.recipe import recipe_from_dict

        for stage in stages:
            self.stages.setdefault(stage["name"], stage)
        wanted = self._with_inputs([s["name"] for s in stages])
        recipe = {"name": CANDIDATES_RECIPE, "model": str(self.teacher_dir), "seed": self.seed,
                  "dataset": self.dataset, "stages": [self.stages[n] for n in wanted]}
        # one line per candidate (strategy.py), not the dataset and every reused stage again each time
        chatty = logging.getLogger("slimbert").isEnabledFor(logging.DEBUG)
        with contextlib.nullcontext() if chatty else quiet_logger("slimbert.data.loading", logging.WARNING):
            result = run_recipe(recipe_from_dict(recipe, str(self.folder / "recipe.json")), self.folder,
                                progress=self.progress, withhold_test=withhold_test, log_reuse=chatty)
        for outcome in result.stages:
            if outcome.status == "ran":
                self.costs[outcome.name] = round(outcome.seconds, 1)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._costs_path, self.costs)

    def _with_inputs(self, names: list[str]) -> list[str]:
        """``names`` and every stage they read, in an order the engine can run."""
        ordered: list[str] = []

        def visit(name: str) -> None:
            if name in ordered or name not in self.stages:
                return  # "model": the teacher, the candidates recipe's base model
            stage = self.stages[name]
            for parent in [stage.get("input"), (stage.get("recovery") or {}).get("teacher"),
                           *(stage.get("artifacts") or [])]:
                if parent:
                    visit(parent)
            ordered.append(name)

        for name in names:
            visit(name)
        return ordered

    def measure(self, artifact: str, runtime: str) -> SplitRow:
        """``artifact`` on ``runtime`` over the ranking split: score, p50 at batch 1, size."""
        from slimbert.bench.report import load_report

        if (artifact, runtime) in self._measured:
            return self._measured[artifact, runtime]
        name = f"{self.split}-{artifact}@{runtime}"
        self.run([{"name": name, "type": "bench", "artifacts": [artifact], "targets": [runtime],
                   "split": self.split, "batch_sizes": [1], "seq_len": self.seq_len,
                   "budget_s": self.bench_budget_s}])
        report = load_report(self.folder / name / "report.json")
        row = report.rows[0]
        measured = SplitRow(artifact, runtime, float(row.accuracy[self.metric]), row.p50(1),
                            float(row.size_mb), np.asarray(row.predictions), np.asarray(report.labels))
        self._measured[artifact, runtime] = measured
        return measured

    def kind(self, name: str) -> str:
        """The artifact kind stage ``name`` made ("model", the teacher, is an hf-model)."""
        from slimbert.artifacts import read_artifact

        return "hf-model" if name not in self.stages else read_artifact(self.folder / name).kind

    def cost(self, lineage: list[str]) -> float:
        """Seconds it took to make these stages (as first made; reuse is free)."""
        return round(sum(self.costs.get(name, 0.0) for name in lineage), 1)

    def lineage(self, name: str) -> list[str]:
        """The stages from the teacher to ``name``, in order."""
        return [n for n in self._with_inputs([name]) if self.stages[n]["type"] != "bench"]
