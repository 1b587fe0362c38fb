"""`slimbert.optimize(...)`: one call from a model and data to the best artifact per target."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimbert.search.config import OptimizeConfig

STAGE = "optimize"


@dataclass
class OptimizeResult:
    out_dir: Path
    report: dict[str, Any]

    def summary(self) -> str:
        """Each target's choice and its proof, as `slimbert optimize` prints it."""
        lines = []
        for target, chosen in self.report["chosen"].items():
            point, c = chosen.get("point"), chosen.get("confirmation") or {}
            if point is None:
                lines.append(f"{target}: nothing chosen: {chosen['why']}")
                continue
            verdict = "within budget" if c["within_budget"] else "BEYOND the budget on test"
            speedup = c.get("speedup_vs_teacher_onnx") or c.get("speedup_vs_teacher_torch")
            lines.append(f"{target}: {point['artifact']} on {point['runtime']}: test drop "
                         f"{c['test_drop_points']:+.2f} points (95% CI {c['ci_low']:+.2f} to "
                         f"{c['ci_high']:+.2f}, McNemar p {c['mcnemar_p']:.3g}), {verdict}; "
                         f"{c['test_p50_ms']:.2f} ms at batch 1, {speedup:.2f}x the teacher"
                         f"{' (timing flagged: see the report)' if c.get('timing_flags') else ''}; "
                         f"{self.folder(target)}")
        skipped = f"; {len(self.report['not_tried'])} not tried" if self.report["not_tried"] else ""
        count = len(self.report["candidates"])
        lines.append(f"report: {self.out_dir / 'report.md'} ({count} candidates{skipped})")
        return "\n".join(lines)

    def folder(self, target: str) -> Path:
        """The chosen artifact's folder for ``target``: model/ to deploy, report.json to gate."""
        return self.out_dir / STAGE / self.report["chosen"][target]["folder"]


def needs_finetune(model_dir: Path, label_names: list[str]) -> bool:
    """Whether ``model_dir`` lacks a classification head for exactly these labels."""
    from slimbert.models import has_classification_head

    if not has_classification_head(model_dir):
        return True
    config = json.loads((model_dir / "config.json").read_text())
    names = [str(v) for _, v in sorted((int(k), v) for k, v in (config.get("id2label") or {}).items())]
    generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))  # unnamed: matched by position
    return len(names) != len(label_names) or not (generic or names == [str(n) for n in label_names])


def optimize_recipe(model: str | None, dataset: dict[str, Any] | None, cfg: OptimizeConfig, *,
                    seed: int | None = None) -> dict[str, Any]:
    """The recipe `slimbert optimize` runs: a teacher fine-tune where MODEL needs one, then the search.

    Without MODEL it is the built-in default's model, data and teacher settings, so a
    search in the default run's folder starts from the teacher that run trained.
    """
    from transformers import AutoConfig

    from slimbert.adhoc import dataset_and_seed
    from slimbert.models import resolve_model
    from slimbert.recipe import default_recipe_dict
    from slimbert.schema import to_dict
    from slimbert.search.strategy import (
        check_rank_split,
        check_targets,
        check_time_budget,
        load_with_selection_split,
    )

    default = default_recipe_dict()
    teacher_stage = next(s for s in default["stages"] if s["type"] == "finetune")
    if model is None and not dataset:  # the built-in default, data settings included
        dataset, seed = default["dataset"], default["seed"] if seed is None else seed
    else:  # a model slimbert made keeps the split it was trained on (never scored on its training data)
        dataset, seed = dataset_and_seed(model or default["model"], dataset, seed)
    model = model or default["model"]
    # held out before the teacher is fine-tuned here, so the teacher does not fit it either
    dataset, data_cfg, data = load_with_selection_split(dataset, cfg, seed)
    # what can be checked before anything is trained or written: targets, the ranking split's size
    check_targets(cfg.targets)
    check_rank_split(data, cfg.max_drop)
    stages = []
    teacher = resolve_model(model)
    if cfg.time_budget_min is not None and cfg.depths:  # measured now: the base model runs as fast
        check_time_budget(teacher, data, cfg, AutoConfig.from_pretrained(teacher).num_hidden_layers,
                          data_cfg.max_length)
    if needs_finetune(teacher, data.label_names):
        stages.append(dict(teacher_stage))
    stages.append({"name": STAGE, "type": "optimize", "input": stages[0]["name"] if stages else "model",
                   **to_dict(cfg)})
    return {"name": "optimize", "model": model, "seed": seed, "dataset": dataset, "stages": stages}


def optimize(model: str | None = None, dataset: dict[str, Any] | None = None, *,
             out: Path | str = "runs/optimize", seed: int | None = None, progress: bool = True,
             **settings: Any) -> OptimizeResult:
    """Find the fastest artifact per target within an accuracy budget (see OptimizeConfig).

    >>> slimbert.optimize(targets=["ort-cpu"], max_drop=2.0)          # the built-in default
    >>> slimbert.optimize("my-model/", {"source": "reviews.csv"}, targets=["ort-cpu"])
    """
    from slimbert.pipeline import run_recipe
    from slimbert.recipe import recipe_from_dict
    from slimbert.schema import from_dict

    cfg = from_dict(OptimizeConfig, settings, source="optimize settings")
    recipe = recipe_from_dict(optimize_recipe(model, dataset, cfg, seed=seed), "optimize settings")
    result = run_recipe(recipe, out, progress=progress)
    report = json.loads((result.artifact(STAGE).path / "report.json").read_text())
    return OptimizeResult(Path(out), report)
