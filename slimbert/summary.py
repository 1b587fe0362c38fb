"""One line per finished stage: what it did to accuracy and size, for the terminal.

The manifest holds everything; this picks what a user checks first after a command, so
that a prune that destroyed the model is seen at once, not found later in a JSON file.
"""

from __future__ import annotations

from typing import Any

from slimbert.artifacts import Artifact
from slimbert.formats import size_suffixes

LARGE_DROP_POINTS = 5.0  # a drop this large is called out as a warning


def _pct(value: float) -> str:
    return f"{value:.2%}"


def _accuracy(metrics: dict[str, Any]) -> tuple[str, float | None]:
    """The accuracy change the stage reports, and its drop in points (None: no change known)."""
    test = (metrics.get("test") or {}).get("accuracy")
    for before_key, before_label in (("test_before", ""), ("teacher_test", " (teacher)")):
        before = (metrics.get(before_key) or {}).get("accuracy")
        if test is not None and before is not None:
            return f"test acc {_pct(before)}{before_label} -> {_pct(test)}", (before - test) * 100
    if test is not None:
        return f"test acc {_pct(test)}", None
    dev, dev_fp32 = metrics.get("dev_accuracy"), metrics.get("dev_accuracy_fp32")
    if dev is not None and dev_fp32 is not None:
        name = {"accuracy": "acc"}.get(metrics.get("dev_metric", "accuracy"), metrics.get("dev_metric"))
        return f"dev {name} {_pct(dev_fp32)} -> {_pct(dev)}", (dev_fp32 - dev) * 100
    validation = metrics.get("validation") or {}
    if "max_abs_diff" in validation:
        return (f"max |logit diff| {validation['max_abs_diff']:.1e}, "
                f"{_pct(validation.get('agreement', 0))} agree"), None
    return "", None


def stage_headline(artifact: Artifact) -> tuple[str, str | None]:
    """The stage's headline, and a warning when it lost a lot of accuracy."""
    metrics = artifact.manifest.metrics or {}
    accuracy, drop = _accuracy(metrics)
    parts = [accuracy] if accuracy else []
    params, params_before = metrics.get("params"), metrics.get("params_before")
    if params and params_before and params != params_before:
        parts.append(f"params {params_before / 1e6:.1f}M -> {params / 1e6:.1f}M")
    if metrics.get("prunable_sparsity") is not None:
        parts.append(f"sparsity {metrics['prunable_sparsity']:.0%} of prunable weights")
    size = artifact.size_bytes(size_suffixes(artifact.kind))  # as bench reports it
    if size and artifact.kind != "report":
        parts.append(f"{size / 1e6:.1f} MB")
    if metrics.get("schemes"):
        parts.append(f"INT8 scheme {metrics['schemes']['chosen']} (of {len(metrics['schemes']['tried'])} "
                     f"measured)")
    warning = None
    if metrics.get("tolerance_met") is False:
        warning = (f"{artifact.name} lost {drop:.2f} dev points, more than its tolerance of "
                   f"{metrics['tolerance_points']:g}: no scheme or fallback held it "
                   f"({artifact.path / 'manifest.json'} lists what was tried). Raise the tolerance "
                   "or max_fallback_nodes/layers, or keep the fp32 artifact.")
    elif drop is not None and drop >= LARGE_DROP_POINTS:
        warning = (f"{artifact.name} lost {drop:.1f} points of accuracy; check its settings "
                   f"({artifact.path / 'manifest.json'} has the details).")
    return ", ".join(parts), warning


def render_run(result: Any) -> tuple[str, list[str]]:
    """What a finished run says on the terminal: its folder, one line per stage (status,
    seconds, artifact) with the stage's headline under it, then the bench report if it has
    one; and the warnings about stages that lost a lot of accuracy."""
    lines, warnings = ["", f"run folder: {result.out_dir}"], []
    width = max([16, *(len(s.name) for s in result.stages)])
    for stage in result.stages:
        lines.append(f"  {stage.name:<{width}} {stage.type:<18} {stage.status:<7} {stage.seconds:7.1f}s  "
                     f"{stage.artifact.path}")
        headline, warning = stage_headline(stage.artifact)
        if headline:
            lines.append(f"  {'':<{width}} {headline}")
        warnings += [warning] if warning else []
    if result.report_path is not None:
        lines += ["", result.report_path.read_text()]
    return "\n".join(lines), warnings


def render_plan(planned: list[Any]) -> str:
    """`slimbert run --dry-run`: each stage, reused or run, and why."""
    width = max([16, *(len(s.name) for s in planned)])
    return "\n".join(f"  {stage.name:<{width}} {stage.type:<18} "
                     + ("reuse" if stage.reason is None else f"run    ({stage.reason})") for stage in planned)
