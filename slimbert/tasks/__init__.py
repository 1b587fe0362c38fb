"""The task registry: what a model is trained and scored to do, behind one seam.

A task owns everything that differs between jobs an encoder does (sentence labels,
sentence embeddings, ...): how its model is loaded and saved, what its exported graph
returns, and how its outputs are scored per example, so that the gate's paired bootstrap
and ``optimize``'s confidence bound work for every task. One shape with the other
registries (stages, runtimes): a name -> a torch-free description plus a "module:object"
string for the implementation, imported only when used, so parsing a recipe that names a
task imports no torch (optimum's TasksManager maps task names the same way).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

from slimbert.errors import RecipeError

DEFAULT_TASK = "text-classification"


@dataclass(frozen=True)
class TaskType:
    name: str
    implementation: str  # "module:object" of the Task instance, imported on first use
    help: str
    metrics: tuple[str, ...]  # per-example metrics, the first the default for budgets and gates
    stages: tuple[str, ...]  # the stage types a recipe may run on this task today
    # stage type -> "module:function" runner where the task runs it its own way
    runners: dict[str, str] = field(default_factory=dict)

    @property
    def default_metric(self) -> str:
        return self.metrics[0]

    def load(self) -> Any:
        module, _, attribute = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def check_metric(self, metric: str) -> None:
        if metric not in self.metrics:
            close = difflib.get_close_matches(metric, self.metrics, n=1)
            raise RecipeError(
                f"the {self.name} task has no metric {metric!r}; its metrics: {', '.join(self.metrics)}.",
                hint=f"did you mean {close[0]!r}?" if close else f"use --metric {self.default_metric}.",
            )

    def check_stage(self, stage_type: str, where: str) -> None:
        if stage_type not in self.stages:
            raise RecipeError(
                f"{where}: stage type {stage_type!r} does not run on the {self.name} task yet; "
                f"stages that do: {', '.join(self.stages)}.",
                hint="remove the stage, or run it in a text-classification recipe.",
            )


_ALL_STAGES = ("finetune", "distill", "prune", "export-onnx", "quantize-onnx", "quantize-torch", "qat",
               "export-ort-mobile", "export-executorch", "export-tensorrt", "optimize", "bench")

TASKS: dict[str, TaskType] = {
    t.name: t
    for t in (
        TaskType("text-classification", "slimbert.tasks.classification:TASK",
                 "a label per sentence or sentence pair (the classifier's logits)",
                 ("accuracy",), _ALL_STAGES),
        TaskType("sentence-embedding", "slimbert.tasks.embedding:TASK",
                 "a vector per sentence for search and retrieval (pooling, dense layers and "
                 "normalisation read from the sentence-transformers config, inside the exported graph)",
                 ("cosine", "recall_at_10", "knn_accuracy", "spearman"),
                 ("distill", "export-onnx", "quantize-onnx", "bench"),
                 {"distill": "slimbert.stage_runners:run_distill_embedding"}),
    )
}


# how reports and the gate say each metric
METRIC_TITLES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "cosine": "cosine fidelity",
                 "recall_at_10": "neighbour recall@10", "knn_accuracy": "kNN accuracy",
                 "spearman": "Spearman"}


def per_example_metrics() -> dict[str, str]:
    """Every task's metrics that a gate can judge example by example (Spearman is a rank
    correlation of the whole split, not a mean of per-example scores), with their titles."""
    names = [m for task in TASKS.values() for m in task.metrics if m != "spearman"] + ["macro_f1"]
    return {m: METRIC_TITLES.get(m, m) for m in dict.fromkeys(names)}


def get_task(name: str) -> TaskType:
    """The task named ``name``; a RecipeError naming the known ones and the closest."""
    try:
        return TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(TASKS), n=1)
        raise RecipeError(
            f"unknown task {name!r}; known: {', '.join(TASKS)}.",
            hint=f"did you mean {close[0]!r}?" if close else "leave `task` out for text classification.",
        ) from None
