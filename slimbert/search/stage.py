"""`optimize` as a recipe stage: a search is cached, resumed and reported like any stage."""

from __future__ import annotations

import logging
from typing import Any

from slimbert.schema import to_dict
from slimbert.search.report import write_report
from slimbert.search.select import Point
from slimbert.search.strategy import run_search

log = logging.getLogger(__name__)


def _announce(point: Point) -> None:
    log.info("%-16s %-28s %-16s %6.2f%% (%+.2f, bound %+.2f)  p50 %7.2f ms  %6.1f MB", point.target,
             point.artifact, point.runtime, point.score, -point.drop, -point.drop_bound, point.p50_ms,
             point.size_mb)


def run_optimize(ctx) -> dict[str, Any]:
    """Search for the fastest artifact per target within the budget; the stage's metrics
    are each target's choice and its confirmation on test."""
    cfg = ctx.config
    dataset = to_dict(ctx.dataset_config)
    result = run_search(ctx.input.path, dataset, ctx.seed, cfg,
                        candidates_dir=ctx.run_dir / "candidates", publish_dir=ctx.out,
                        progress=ctx.progress, on_point=_announce)
    report = write_report(result, to_dict(cfg), ctx.out)
    return {"chosen": {target: {"artifact": (c.get("point") or {}).get("artifact"),
                                "runtime": (c.get("point") or {}).get("runtime"),
                                **{k: (c.get("confirmation") or {}).get(k) for k in
                                   ("test_drop_points", "ci_high", "mcnemar_p", "within_budget",
                                    "speedup_vs_teacher_onnx", "speedup_vs_teacher_torch")}}
                       for target, c in report["chosen"].items()},
            "candidates": len(result.points), "not_tried": len(result.not_tried),
            "stopped_by_time": result.stopped_by_time, "search_seconds": result.seconds}
