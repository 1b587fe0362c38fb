"""The search's report: every candidate with its lineage, the front, the choice and its proof."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from slimbert.search.select import pareto_front
from slimbert.search.strategy import SearchResult


def report_dict(result: SearchResult, settings: dict[str, Any]) -> dict[str, Any]:
    fronts = {t: [f"{p.artifact}@{p.runtime}"
                  for p in pareto_front([q for q in result.points if q.target == t])]
              for t in result.targets}
    return {
        "settings": settings,
        "teacher_score": result.teacher_score,  # on the ranking split
        "rank_split": result.rank_split,
        "rank_examples": result.rank_examples,
        "resolution_points": result.resolution_points,
        "candidates": [p.to_dict() for p in result.points],  # ranking-split numbers only
        "pareto_front": fronts,
        "chosen": result.chosen,  # test numbers: for these artifacts only
        "not_tried": result.not_tried,
        "stopped_by_time": result.stopped_by_time,
        "seconds": result.seconds,
        "stages_used": result.stages_used,
        "made_seconds": result.made_seconds,
    }


def _chosen_lines(target: str, chosen: dict[str, Any], max_drop: float) -> list[str]:
    point = chosen.get("point")
    if point is None:
        return [f"### {target}", "", f"Nothing chosen: {chosen['why']}.", ""]
    c = chosen["confirmation"]
    verdict = ("within the budget" if c["within_budget"] else
               f"**beyond the budget of {max_drop:g} points on test**")
    lines = [f"### {target}: `{point['artifact']}` on {point['runtime']}", "",
             chosen["why"], "",
             f"- test: {c['test_score']:.2f}% vs the teacher's {c['teacher_score']:.2f}%: drop "
             f"{c['test_drop_points']:+.2f} points, 95% CI [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}], "
             f"McNemar p = {c['mcnemar_p']:.3g}: {verdict}" + _gate_note(c, max_drop),
             f"- p50 at batch 1 on test inputs: {c['test_p50_ms']:.2f} ms; speed-up vs the teacher's "
             f"fp32 ONNX: {_x(c['speedup_vs_teacher_onnx'])}, vs the PyTorch teacher: "
             f"{_x(c['speedup_vs_teacher_torch'])}",
             f"- folder: `{chosen['folder']}/` beside this report (model/ for `slimbert deploy`, "
             "report.json for `slimbert gate`)"]
    if chosen.get("proxy"):
        lines.append(f"- latency is a proxy: {chosen['proxy']}")
    for row, flag in (c.get("timing_flags") or {}).items():
        lines.append(f"- **speed-ups not to be trusted as measured**: `{row}` {flag}")
    if not c["within_budget"]:
        nxt = c.get("next_candidate")
        lines.append("- the choice stands (it is never remade on test); the next candidate: "
                     + (f"`{nxt['artifact']}` on {nxt['runtime']}, {nxt['p50_ms']:.2f} ms, "
                        f"{nxt['drop']:+.2f} points (bound {nxt['drop_bound']:+.2f}) before test"
                        if nxt else "none"))
    return lines + [""]


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value else "n/a"


def render_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    split = report["rank_split"]
    held_out = ("held out of the training data: no candidate trained or early-stopped on it"
                if split == "selection" else "training stages early-stop on it too: the data was too "
                "small to hold out a selection split")
    lines = ["# slimbert optimize", "",
             f"Targets {', '.join(s['targets'])}; budget {s['max_drop']:g} points of {s['metric']} against "
             f"the teacher ({report['teacher_score']:.2f}% on {split}). Chosen on the {split} split "
             f"({report['rank_examples']} examples, {held_out}; a paired drop resolves about "
             f"+-{report['resolution_points']:.1f} points), held to the budget at "
             f"{s['selection_confidence']:.0%} one-sided confidence, confirmed once on test. "
             f"{report['seconds'] / 60:.1f} min; the stages it used took "
             f"{report.get('made_seconds', 0) / 60:.1f} min to make (here or in an earlier search).", "",
             "## Chosen", ""]
    for target, chosen in report["chosen"].items():
        lines += _chosen_lines(target, chosen, s["max_drop"])
    lines += [f"## Every candidate ({split})", "",
              f"| target | artifact | runtime | {split} % | drop (points) | bound | agrees | p50 b1 (ms) | "
              "size (MB) | training (s) | lineage |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in report["candidates"]:
        front = "**" if f"{p['artifact']}@{p['runtime']}" in report["pareto_front"][p["target"]] else ""
        lines.append(f"| {p['target']} | {front}{p['artifact']}{front} | {p['runtime']} | "
                     f"{p['score']:.2f} | {p['drop']:+.2f} | {p['drop_bound']:+.2f} | {p['agreement']:.1%} | "
                     f"{p['p50_ms']:.2f} | {p['size_mb']:.1f} | {p['train_seconds']:.0f} | "
                     f"{' > '.join(p['lineage']) or 'teacher'} |")
    lines += ["", "Bold: on the Pareto front (score, latency, size) of its target. Bound: the upper end of "
              "the drop's one-sided interval, which the budget is held to."]
    if report["not_tried"]:
        lines += ["", "## Not tried", ""] + [f"- {item}" for item in report["not_tried"]]
    return "\n".join(lines) + "\n"


def pareto_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Ranking-split score against p50 latency per target, the front joined and the choice marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = report["settings"]["targets"]
    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4.5), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        points = [p for p in report["candidates"] if p["target"] == target]
        if not points:
            continue
        ax.scatter([p["p50_ms"] for p in points], [p["score"] for p in points], s=18, alpha=0.6)
        on_front = set(report["pareto_front"][target])
        front = sorted((p for p in points if f"{p['artifact']}@{p['runtime']}" in on_front),
                       key=lambda p: p["p50_ms"])
        ax.plot([p["p50_ms"] for p in front], [p["score"] for p in front], "--", lw=1)
        floor = report["teacher_score"] - report["settings"]["max_drop"]
        ax.axhline(floor, color="grey", lw=0.8, ls=":")
        chosen = report["chosen"].get(target, {}).get("point")
        if chosen:
            ax.scatter([chosen["p50_ms"]], [chosen["score"]], marker="*", s=220, color="red", zorder=3)
            ax.annotate(chosen["artifact"], (chosen["p50_ms"], chosen["score"]), fontsize=8,
                        xytext=(6, 6), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency at batch 1 (ms, log)")
        ax.set_ylabel(f"{report['rank_split']} {report['settings']['metric']} (%)")
        ax.set_title(f"{target}: budget line dotted, choice starred")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_html(report: dict[str, Any], markdown: str, plot: Path | None) -> str:
    image = f'<img src="{plot.name}" alt="Pareto plot">' if plot else ""
    return (f"<!doctype html><meta charset=utf-8><title>slimbert optimize</title>{image}"
            f"<pre>{html.escape(markdown)}</pre>")


def write_report(result: SearchResult, settings: dict[str, Any], folder: Path) -> dict[str, Any]:
    from slimbert.artifacts import write_json_atomic, write_text_atomic

    report = report_dict(result, settings)
    write_json_atomic(folder / "report.json", report)
    markdown = render_markdown(report)
    write_text_atomic(folder / "report.md", markdown)
    plot = pareto_plot(report, folder / "pareto.png")
    write_text_atomic(folder / "report.html", render_html(report, markdown, plot))
    return report


def _gate_note(confirmation: dict, max_drop: float) -> str:
    """`slimbert gate`'s default verdict needs the interval's upper end within the budget."""
    if confirmation.get("gate_passes", True):
        return ""
    return (f" (`slimbert gate --max-drop {max_drop:g}` on this folder fails by default: the interval's "
            f"upper end, {confirmation['ci_high']:+.2f}, is beyond the budget; `--point-estimate` judges "
            "the point alone)")
