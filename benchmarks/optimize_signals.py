"""Which signal ranks `slimbert optimize`'s candidates as the test split does, and which rule
chooses within the budget on test?

    python benchmarks/optimize_signals.py --out runs/optimize [--budgets 1.0 2.0] \
        [--results benchmarks/results/optimize_signals.json]

After a search (benchmarks/optimize.py), every candidate artifact in ``<out>/candidates`` has a
bench row on the split the search ranked on (the selection split held out of training, or dev
for older searches). This script, an analysis made after the search and never part of it,
benches every candidate once more on test (``<out>/signals``) and, when the search ranked on
the selection split, on dev (``<out>/signals-dev``), and compares against the test ranking:

- ``rank_score`` / ``rank_agreement``: the metric, and the share of the teacher's predictions
  reproduced, on the ranking split (what the search uses);
- ``dev_score`` / ``dev_agreement``: the same on dev, which every training stage early-stops on.

Per signal: Spearman's rank correlation with the test score, and the share of candidate pairs
it orders as the test split does (pairs the test split calls a tie are skipped). Per budget:
which ort-cpu artifact each selection rule picks (the fastest whose drop bound is within the
budget, at one-sided confidence 0.5 = the point estimate, 0.7, 0.8, 0.9; and the point estimate
on dev, the rule before the selection split) and that artifact's test drop. The rules are
compared over every candidate in the folder (the union of the budgets' searches).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

import slimbert
from slimbert.artifacts import write_json_atomic
from slimbert.bench.report import load_report
from slimbert.search.select import drop_bound

RESULTS = Path(__file__).parent / "results" / "optimize_signals.json"
CONFIDENCES = (0.5, 0.7, 0.8, 0.9)


def ranks(values: list[float]) -> np.ndarray:
    """Ranks with ties averaged (Spearman's convention)."""
    values = np.asarray(values, dtype=float)
    order = values.argsort(kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        out[tied] = out[tied].mean()
    return out


def spearman(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def pairwise_order(signal: list[float], truth: list[float]) -> float:
    same = total = 0
    for i, j in itertools.combinations(range(len(truth)), 2):
        if truth[i] == truth[j]:
            continue
        total += 1
        same += (signal[i] - signal[j]) * (truth[i] - truth[j]) > 0
    return same / total if total else float("nan")


def bench_rows(artifacts: list[Path], folder: Path, split: str, targets: list[str]) -> dict:
    """Every artifact on ``split`` (predictions only: timing is the search's); cached in ``folder``."""
    report = folder / "bench" / "report.json"  # delete it to measure again
    if not report.is_file():
        slimbert.bench_models(artifacts, out=folder, batch_sizes=[1], seq_len=16, budget_s=0.05, min_iters=1,
                              warmup=0, recheck=False, targets=targets, split=split)
    loaded = load_report(report)
    return {"labels": np.asarray(loaded.labels),
            "rows": {(Path(r.path), r.target): np.asarray(r.predictions) for r in loaded.rows}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/optimize"))
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    folder = args.out / "candidates"
    split = "selection" if list(folder.glob("selection-*@*")) else "dev"
    rank_rows = {}
    for path in sorted(folder.glob(f"{split}-*@*/report.json")):
        report = load_report(path)
        row = report.rows[0]
        rank_rows[row.artifact, row.target] = (row, np.asarray(report.labels))
    teacher, rank_labels = rank_rows["model", "torch-cpu"]
    teacher_path = Path(teacher.path)
    targets = sorted({t for _, t in rank_rows})
    artifacts = sorted({Path(row.path) for row, _ in rank_rows.values()})
    test = bench_rows(artifacts, args.out / "signals", "test", targets)
    dev = bench_rows(artifacts, args.out / "signals-dev", "dev", targets) if split == "selection" else None
    on = {"rank": (rank_labels, {(Path(r.path), r.target): np.asarray(r.predictions)
                                 for r, _ in rank_rows.values()}), "test": (test["labels"], test["rows"])}
    if dev:
        on["dev"] = (dev["labels"], dev["rows"])
    reference = {name: preds[teacher_path, "torch-cpu"] for name, (_, preds) in on.items()}
    candidates = []
    for (artifact, target), (row, _) in rank_rows.items():
        key = (Path(row.path), target)
        if any(key not in preds for _, preds in on.values()):
            continue
        c = {"artifact": artifact, "runtime": target, "p50_ms": round(row.p50(1), 3)}
        for name, (labels, preds) in on.items():
            c[f"{name}_score"] = float(np.mean(preds[key] == labels))
            c[f"{name}_agreement"] = float(np.mean(preds[key] == reference[name]))
            c[f"{name}_drop"] = round(100 * (np.mean(reference[name] == labels) - c[f"{name}_score"]), 2)
        for confidence in CONFIDENCES:
            c[f"rank_bound_{confidence:g}"] = drop_bound(
                rank_labels, reference["rank"], on["rank"][1][key], metric="accuracy",
                num_classes=int(rank_labels.max()) + 1, confidence=confidence, seed=0)
        candidates.append(c)
    truth = [c["test_score"] for c in candidates]
    names = ["rank_score", "rank_agreement"] + (["dev_score", "dev_agreement"] if dev else [])
    signals = {name: {"spearman_vs_test": round(spearman([c[name] for c in candidates], truth), 3),
                      "pairs_ordered_as_test": round(pairwise_order([c[name] for c in candidates], truth), 3)}
               for name in names}
    ort = [c for c in candidates if c["runtime"] == "ort-cpu"]
    rules = {f"rank split, {confidence:.0%} one-sided": f"rank_bound_{confidence:g}"
             for confidence in CONFIDENCES}
    if dev:
        rules["dev point estimate (before the selection split)"] = "dev_drop"
    choices = []
    for budget, (rule, key) in itertools.product(args.budgets, rules.items()):
        within = sorted((c for c in ort if c[key] <= budget), key=lambda c: c["p50_ms"])
        pick = within[0] if within else None
        choices.append({"max_drop": budget, "rule": rule, "artifact": pick and pick["artifact"],
                        "p50_ms": pick and pick["p50_ms"], "test_drop": pick and pick["test_drop"],
                        "within_budget_on_test": pick is not None and pick["test_drop"] <= budget})
    gap = float(np.mean([c["test_drop"] - c["rank_drop"] for c in candidates if c["artifact"] != "model"]))
    write_json_atomic(args.results, {
        "rank_split": split, "candidates": candidates, "signals": signals, "choices": choices,
        "mean_test_minus_rank_drop_points": round(gap, 2),
        "examples": {name: len(labels) for name, (labels, _) in on.items()}})
    for name, stats in signals.items():
        print(f"{name:16s} Spearman {stats['spearman_vs_test']:+.3f}, pairs ordered as on test "
              f"{stats['pairs_ordered_as_test']:.1%} ({len(candidates)} candidates)")
    for choice in choices:
        print(f"budget {choice['max_drop']:g}, {choice['rule']}: {choice['artifact']} "
              f"({choice['p50_ms']} ms), test drop {choice['test_drop']}")
    print(f"test drops exceed {split} drops by {gap:+.2f} points on average")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
