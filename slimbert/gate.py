"""An accuracy-regression gate for CI: may the candidate model replace the baseline?

The gate compares two rows of bench reports that scored the *same* evaluation examples,
so it can pair their predictions. Pairing is what makes a 1-point threshold testable on a
test split of a few thousand sentences: the examples both models find hard cancel out, so
for models that mostly agree (a student and its INT8 copy) the paired bootstrap interval of
the difference is two to three times narrower than an unpaired one, and McNemar's test
looks only at the examples they disagree on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimbert.bench.report import BenchReport, BenchRow, as_report, as_row, load_report
from slimbert.data.metrics import classification_metrics
from slimbert.errors import GateError
from slimbert.tasks import get_task, per_example_metrics

log = logging.getLogger(__name__)

METRICS = per_example_metrics()  # name -> how the summary says it, for every task
LABEL_METRICS = ("accuracy", "macro_f1")  # what rows of predicted labels (classification) are gated on
# Drops are differences of floats: 86% - 85% is 1.0000000000000009 points, which must pass
# a 1-point threshold.
_EPS = 1e-9
# Beyond this many discordant pairs the continuity-corrected chi-square is as good as the
# exact binomial, and the exact big-integer sum grows quadratically in cost.
_EXACT_MCNEMAR_LIMIT = 1000
# Index matrices are drawn in chunks of about this many entries: bounded memory at any n.
_BOOTSTRAP_CHUNK = 2_000_000
_REPORT_HINT = "give the report.json a bench stage writes (<run folder>/report.json)."
_RERUN_HINT = "re-run the bench with this version of slimbert; older reports lack it."


@dataclass
class GateConfig:
    """Thresholds of the gate; every one that is set must hold for the gate to pass."""

    metric: str | None = None  # one of METRICS; None: the report task's first (accuracy for classification)
    max_drop: float | None = 1.0  # points (percentage points), baseline minus candidate
    min_retention: float | None = None  # candidate / baseline, e.g. 0.985
    confidence: float = 0.95
    # the CI's upper bound of the drop must be <= max_drop too. None (the default): whenever
    # max_drop is set, since on small splits the point estimate alone lets real drops through
    # (simulated: a true 3-point drop passes a 1-point gate 27% of the time at n=100); False:
    # the point estimate alone
    require_significance: bool | None = None
    bootstrap_samples: int = 2000
    seed: int = 0
    max_latency_ratio: float | None = None  # candidate / baseline p50 at batch 1, same report only

    def __post_init__(self) -> None:
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.max_drop is not None and not 0 <= self.max_drop <= 100:
            raise ValueError(f"max_drop is in percentage points, 0 to 100; got {self.max_drop}")
        if self.min_retention is not None and not 0 < self.min_retention <= 1:
            raise ValueError(f"min_retention is a ratio in (0, 1], e.g. 0.985; got {self.min_retention}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1, e.g. 0.95; got {self.confidence}")
        if self.bootstrap_samples < 100:
            raise ValueError(f"bootstrap_samples must be >= 100 for a percentile interval, "
                             f"got {self.bootstrap_samples}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.max_latency_ratio is not None and self.max_latency_ratio <= 0:
            raise ValueError(f"max_latency_ratio must be positive, e.g. 1.1; got {self.max_latency_ratio}")
        if self.require_significance is True and self.max_drop is None:
            raise ValueError("require_significance tests the drop against max_drop; set max_drop too")
        if self.max_drop is None and self.min_retention is None and self.max_latency_ratio is None:
            raise ValueError("the gate has no threshold: set max_drop, min_retention or max_latency_ratio")


@dataclass
class GateResult:
    """The verdict and the evidence behind it, ready for the renderers."""

    passed: bool
    checks: list[dict[str, Any]]  # name, value, threshold, passed, message
    metric: str
    baseline: str  # "artifact on target"
    candidate: str
    baseline_value: float  # metric as a fraction, 0..1
    candidate_value: float
    drop_points: float  # 100 * (baseline - candidate); negative: the candidate is better
    retention: float  # candidate / baseline
    drop_ci: tuple[float, float]  # paired bootstrap interval of drop_points
    mcnemar_p: float
    discordant: tuple[int, int]  # (only the baseline right, only the candidate right): or better, for scores
    n: int
    split: str | None
    config: GateConfig = field(default_factory=GateConfig)
    # the content hash of the candidate's artifact as its bench row recorded it: `deploy
    # --require-gate` ships only that model
    candidate_fingerprint: str | None = None
    # what the reader of the verdict must know about the rows (a quantization that missed its
    # tolerance, an INT8 scheme measured on another CPU than the bench's)
    notes: list[str] = field(default_factory=list)
    # what gave ``mcnemar_p``: McNemar's test on right/wrong examples, or for graded per-example
    # scores (cosine, recall) the paired bootstrap's two-sided p-value of "no drop"
    test: str = "McNemar"


def row_notes(report: BenchReport, row: BenchRow) -> list[str]:
    """``row``'s own notes, and a warning when its INT8 scheme was tuned on another CPU than the
    one that benched it (the numbers gated are that machine's)."""
    from slimbert.hw import isa_mismatch

    notes = list(row.notes)
    mismatch = isa_mismatch(row.tuned_isa, report.environment.get("isa")) if report.environment.get(
        "isa") else None
    if mismatch and mismatch not in notes:
        notes.append(mismatch)
    return [f"{row.label}: {note}" for note in notes]


# -- reading reports -----------------------------------------------------------------------


def row_label(row: BenchRow | dict[str, Any]) -> str:
    return as_row(row).label


def select_row(report: BenchReport | dict[str, Any], artifact: str | None,
               target: str | None) -> BenchRow | dict[str, Any]:
    """The one row for ``artifact`` (and ``target``); None matches anything but must be unique.

    Given the report's JSON mapping, the row is returned as that mapping's row.
    """
    typed = as_report(report)
    matches = typed.find(artifact, target)
    if len(matches) == 1:
        return report["rows"][typed.rows.index(matches[0])] if isinstance(report, dict) else matches[0]
    available = ", ".join(r.label for r in typed.rows) or "none"
    wanted = " on ".join(x for x in (artifact or "any artifact", target) if x)
    hint = "name one of the available artifacts (CLI: --baseline-artifact/--candidate-artifact, --target)."
    if matches:
        raise GateError(f"{len(matches)} rows of the bench report match {wanted}; available: {available}.",
                        hint=hint)
    skipped = [u for u in typed.unavailable
               if u.get("artifact") == artifact and target in (None, u.get("target"))]
    why = "".join(f" ({artifact} was not measured on {u.get('target')}: {u.get('reason')})" for u in skipped)
    name = f" {typed.name!r}" if typed.name else ""
    raise GateError(f"no row for {wanted} in the bench report{name}{why}; available: {available}.",
                    hint=hint + " A run folder's report.json is the last bench that ran there; each "
                    "bench stage keeps its own in <run>/<stage>/report.json.")


def _int_array(values: Any, what: str) -> np.ndarray:
    """Labels and predictions as non-negative ints: a negative id would index silently wrong."""
    try:
        array = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise GateError(f"the {what} are not a list of integer class ids.", hint=_RERUN_HINT) from exc
    if array.ndim != 1 or array.size == 0 or (array < 0).any():
        raise GateError(f"the {what} are not a non-empty list of class ids >= 0.", hint=_RERUN_HINT)
    return array


def _report_labels(report: BenchReport, role: str) -> np.ndarray:
    if report.labels is None:
        raise GateError(f"the {role} report has no 'labels' of its evaluation split.", hint=_RERUN_HINT)
    return _int_array(report.labels, f"{role} report's labels")


def comparable_data_source(baseline_report: BenchReport, candidate_report: BenchReport) -> None:
    """Refuse reports evaluated on different data (dataset fingerprint or split)."""
    base_ds, cand_ds = baseline_report.dataset or {}, candidate_report.dataset or {}
    for key in ("fingerprint", "split"):
        if base_ds.get(key) != cand_ds.get(key):
            raise GateError(
                f"the reports were evaluated on different data: dataset {key} {base_ds.get(key)!r} "
                f"(baseline) vs {cand_ds.get(key)!r} (candidate); a baseline from a different dataset "
                "or split cannot gate this candidate.",
                hint="bench the baseline and the candidate with the same dataset, seed and split.")


def comparable_data(baseline_report: BenchReport, baseline_row: BenchRow, candidate_report: BenchReport,
                    candidate_row: BenchRow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, baseline predictions, candidate predictions), or refuse to compare.

    A paired comparison is only meaningful on the same examples in the same order; a
    baseline from a different dataset or split would turn a data change into a "regression".
    """
    comparable_data_source(baseline_report, candidate_report)
    labels = _report_labels(baseline_report, "baseline")
    if not np.array_equal(labels, _report_labels(candidate_report, "candidate")):
        raise GateError("the reports' evaluation labels differ: a baseline from a different dataset or "
                        "split cannot gate this candidate.",
                        hint="bench the baseline and the candidate with the same dataset, seed and split.")
    for row, role in ((baseline_row, "baseline"), (candidate_row, "candidate")):
        if row.predictions is None:
            raise GateError(f"the {role} row {row.label} has no per-example predictions.",
                            hint=_RERUN_HINT)
    base = _int_array(baseline_row.predictions, f"baseline predictions of {baseline_row.label}")
    cand = _int_array(candidate_row.predictions, f"candidate predictions of {candidate_row.label}")
    if base.size != cand.size or base.size != labels.size:
        raise GateError(f"prediction counts differ: {base.size} (baseline), {cand.size} (candidate), "
                        f"{labels.size} labels; the rows did not score the same examples.",
                        hint="bench both on the same split of the same dataset.")
    return labels, base, cand


# -- statistics ----------------------------------------------------------------------------


def score(labels: np.ndarray, preds: np.ndarray, metric: str, num_classes: int) -> float:
    """The metric as the bench computes it, so the gate and the report never disagree."""
    return classification_metrics(labels, preds, num_classes)[metric]


def _resampled_drops(labels: np.ndarray, base: np.ndarray, cand: np.ndarray, index: np.ndarray,
                     metric: str, num_classes: int) -> np.ndarray:
    if metric == "accuracy":  # a mean of per-example differences: vectorised
        diff = (base == labels).astype(np.float64) - (cand == labels)
        return 100 * diff[index].mean(axis=1)
    return np.array([100 * (score(labels[i], base[i], metric, num_classes)
                            - score(labels[i], cand[i], metric, num_classes)) for i in index])


def paired_bootstrap_ci(labels: np.ndarray, base: np.ndarray, cand: np.ndarray, *, metric: str,
                        num_classes: int, samples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile interval of the drop in points, resampling the same examples for both models.

    Drawing one index set per resample for both keeps the pairing, which is what cancels
    the examples that are hard for any model; a fixed seed makes CI verdicts reproducible.
    """
    drops = bootstrap_drops(labels.size, samples, seed,
                            lambda index: _resampled_drops(labels, base, cand, index, metric, num_classes))
    return percentile_interval(drops, confidence)


def percentile_interval(drops: np.ndarray, confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval of resampled drops at ``confidence``."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(drops, [tail, 100 - tail])
    return float(low), float(high)


def discordant_pairs(labels: np.ndarray, base: np.ndarray, cand: np.ndarray) -> tuple[int, int]:
    """(b, c): examples only the baseline gets right, and only the candidate gets right."""
    base_ok, cand_ok = base == labels, cand == labels
    return int(np.sum(base_ok & ~cand_ok)), int(np.sum(~base_ok & cand_ok))


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided McNemar p-value for discordant counts ``b`` and ``c``.

    Only disagreements carry evidence; if the models were equally good each would be a fair
    coin flip, hence the exact binomial test (chi-square with continuity correction when large).
    """
    n = b + c
    if n == 0:
        return 1.0
    if n > _EXACT_MCNEMAR_LIMIT:
        statistic = max(abs(b - c) - 1, 0) ** 2 / n
        return math.erfc(math.sqrt(statistic / 2))  # survival function of chi-square, 1 dof
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def _mcnemar_method(b: int, c: int) -> str:
    return "exact binomial" if b + c <= _EXACT_MCNEMAR_LIMIT else "chi-square, continuity-corrected"


# -- checks --------------------------------------------------------------------------------


def _check(name: str, value: float, threshold: float, passed: bool, message: str) -> dict[str, Any]:
    return {"name": name, "value": value, "threshold": threshold, "passed": bool(passed), "message": message}


def _describe_drop(metric: str, drop: float) -> str:
    if abs(drop) < _EPS:
        return f"{METRICS[metric]} is unchanged"
    return f"{METRICS[metric]} {'dropped' if drop > 0 else 'rose'} {abs(drop):.2f} points"


def _metric_checks(cfg: GateConfig, drop: float, retention: float, ci_high: float) -> list[dict[str, Any]]:
    checks = []
    if cfg.max_drop is not None:
        ok = drop <= cfg.max_drop + _EPS
        bound = "within" if ok else "more than"
        checks.append(_check("max_drop", drop, cfg.max_drop, ok,
                             f"{_describe_drop(cfg.metric, drop)}, {bound} the {cfg.max_drop:g} allowed"))
    if cfg.require_significance is not False and cfg.max_drop is not None:
        ok = ci_high <= cfg.max_drop + _EPS
        verdict = "significantly within" if ok else "not significantly within"
        checks.append(_check("max_drop_ci_upper", ci_high, cfg.max_drop, ok,
                             f"the drop's {cfg.confidence:.0%} CI reaches {ci_high:.2f} points, "
                             f"so it is {verdict} the {cfg.max_drop:g}-point tolerance"))
    if cfg.min_retention is not None:
        ok = retention >= cfg.min_retention - _EPS
        bound = "at least" if ok else "less than"
        checks.append(_check("min_retention", retention, cfg.min_retention, ok,
                             f"the candidate keeps {retention:.4f} of the baseline's {METRICS[cfg.metric]}, "
                             f"{bound} the {cfg.min_retention:g} required"))
    return checks


def _p50_batch1(row: BenchRow) -> float:
    p50 = row.p50(1)
    if p50 is None:
        measured = ", ".join(str(s.get("batch_size")) for s in row.latency) or "none"
        raise GateError(f"{row.label} has no p50 latency at batch size 1 (batch sizes measured: "
                        f"{measured}).", hint="bench with batch size 1 included, e.g. --batch-sizes 1,32.")
    return p50


def _latency_check(cfg: GateConfig, baseline_report: BenchReport, baseline_row: BenchRow,
                   candidate_report: BenchReport, candidate_row: BenchRow) -> list[dict[str, Any]]:
    """Latency is only compared within one report: other runs mean other machines and load."""
    if cfg.max_latency_ratio is None:
        return []
    if baseline_report is not candidate_report and baseline_report != candidate_report:
        raise GateError("the latency check needs both rows from one bench report: latencies measured in "
                        "different runs (machine, load, threads) are not comparable.",
                        hint="bench baseline and candidate side by side and pass that one report with "
                             "--baseline-artifact and --candidate-artifact, or drop --max-latency-ratio.")
    ratio = _p50_batch1(candidate_row) / _p50_batch1(baseline_row)
    flagged = [row for row in (baseline_row, candidate_row) if row.timing_flag]
    if flagged:  # fail closed: the bench itself said these latencies are not to be trusted
        return [_check("max_latency_ratio", ratio, cfg.max_latency_ratio, False,
                       f"{flagged[0].label}'s latency was flagged by the bench ({flagged[0].timing_flag}); "
                       "a ratio of untrusted timings cannot pass")]
    ok = ratio <= cfg.max_latency_ratio + _EPS
    bound = "within" if ok else "more than"
    return [_check("max_latency_ratio", ratio, cfg.max_latency_ratio, ok,
                   f"the candidate's p50 latency at batch 1 is {ratio:.2f}x the baseline's, "
                   f"{bound} the {cfg.max_latency_ratio:g}x allowed")]


def evaluate_gate(baseline_report: BenchReport | dict[str, Any], baseline_row: BenchRow | dict[str, Any],
                  candidate_report: BenchReport | dict[str, Any], candidate_row: BenchRow | dict[str, Any],
                  cfg: GateConfig) -> GateResult:
    """Compare the candidate row against the baseline row; raises GateError if they are not comparable.

    Reports and rows may be typed or the report JSON's mappings.
    """
    same = baseline_report is candidate_report
    baseline_report, candidate_report = as_report(baseline_report), as_report(candidate_report)
    candidate_report = baseline_report if same else candidate_report
    baseline_row, candidate_row = as_row(baseline_row), as_row(candidate_row)
    if cfg.metric is None:
        cfg = dataclasses.replace(cfg, metric=get_task(baseline_report.task).default_metric)
    if baseline_row.example_scores is not None or candidate_row.example_scores is not None:
        return _evaluate_scores(baseline_report, baseline_row, candidate_report, candidate_row, cfg)
    if cfg.metric not in LABEL_METRICS:
        raise GateError(f"--metric {cfg.metric} is not a metric of these rows: they hold per-example labels, "
                        f"gated on {' or '.join(LABEL_METRICS)}.", hint="use --metric accuracy or macro_f1.")
    labels, base, cand = comparable_data(baseline_report, baseline_row, candidate_report, candidate_row)
    num_classes = int(max(labels.max(), base.max(), cand.max())) + 1
    base_value = score(labels, base, cfg.metric, num_classes)
    cand_value = score(labels, cand, cfg.metric, num_classes)
    ci = paired_bootstrap_ci(labels, base, cand, metric=cfg.metric, num_classes=num_classes,
                             samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed)
    b, c = discordant_pairs(labels, base, cand)
    return _verdict(cfg, baseline_report, baseline_row, candidate_report, candidate_row, base_value,
                    cand_value, ci, mcnemar_p(b, c), (b, c), int(labels.size), "McNemar")


def _verdict(cfg: GateConfig, baseline_report: BenchReport, baseline_row: BenchRow,
             candidate_report: BenchReport, candidate_row: BenchRow, base_value: float, cand_value: float,
             ci: tuple[float, float], p: float, discordant: tuple[int, int], n: int, test: str) -> GateResult:
    """The checks on the measured values and the result, whatever the rows hold (labels or scores)."""
    drop = 100 * (base_value - cand_value)
    retention = cand_value / base_value if base_value > 0 else (1.0 if cand_value == 0 else math.inf)
    notes = row_notes(baseline_report, baseline_row) + row_notes(candidate_report, candidate_row)
    for note in notes:
        log.warning("%s", note)
    checks = _metric_checks(cfg, drop, retention, ci[1])
    checks += _latency_check(cfg, baseline_report, baseline_row, candidate_report, candidate_row)
    return GateResult(
        passed=all(check["passed"] for check in checks), checks=checks, metric=cfg.metric,
        baseline=baseline_row.label, candidate=candidate_row.label,
        baseline_value=base_value, candidate_value=cand_value, drop_points=drop, retention=retention,
        drop_ci=ci, mcnemar_p=p, discordant=discordant, n=n,
        split=baseline_report.dataset.get("split"), config=cfg,
        candidate_fingerprint=candidate_row.fingerprint, notes=notes, test=test,
    )


def _row_scores(row: BenchRow, metric: str, role: str) -> np.ndarray:
    scores = (row.example_scores or {}).get(metric)
    if scores is None:
        have = ", ".join(row.example_scores or {}) or "none"
        raise GateError(f"the {role} row {row.label} has no per-example {metric!r} scores (it has: {have}).",
                        hint=f"gate on one of its metrics with --metric ({have}), or bench both rows "
                             "in one embedding recipe.")
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise GateError(f"the {role} row {row.label}'s {metric!r} scores are not a list of numbers.",
                        hint=_RERUN_HINT)
    return array


def _evaluate_scores(baseline_report: BenchReport, baseline_row: BenchRow, candidate_report: BenchReport,
                     candidate_row: BenchRow, cfg: GateConfig) -> GateResult:
    """The gate on per-example scores (tasks scored against a reference row: embeddings).

    The metric is a mean of per-example scores, so the paired bootstrap resamples their
    differences. Scores that are 0/1 (kNN correctness) get McNemar's test as labels do; graded
    ones (cosine, recall) the bootstrap's two-sided p-value of no difference."""
    comparable_data_source(baseline_report, candidate_report)
    base = _row_scores(baseline_row, cfg.metric, "baseline")
    cand = _row_scores(candidate_row, cfg.metric, "candidate")
    if base.size != cand.size:
        raise GateError(f"score counts differ: {base.size} (baseline), {cand.size} (candidate); the rows "
                        "did not score the same examples.",
                        hint="bench both on the same split of the same dataset.")
    diff = base - cand
    drops = bootstrap_drops(diff.size, cfg.bootstrap_samples, cfg.seed,
                            lambda index: 100 * diff[index].mean(axis=1))
    b, c = int(np.sum(base > cand)), int(np.sum(cand > base))
    binary = bool(np.isin(base, (0.0, 1.0)).all() and np.isin(cand, (0.0, 1.0)).all())
    p = mcnemar_p(b, c) if binary else min(1.0, 2 * float(min(np.mean(drops <= 0), np.mean(drops >= 0))))
    return _verdict(cfg, baseline_report, baseline_row, candidate_report, candidate_row, float(base.mean()),
                    float(cand.mean()), percentile_interval(drops, cfg.confidence), p, (b, c), int(base.size),
                    "McNemar" if binary else "paired bootstrap")


def bootstrap_drops(n: int, samples: int, seed: int, drops_of) -> np.ndarray:
    """``samples`` resampled drops in points: ``drops_of(index)`` for index sets of n examples
    drawn with replacement, in chunks (bounded memory); one seed, so verdicts reproduce."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK // n)
    drops = np.empty(samples)
    for start in range(0, samples, chunk):
        index = rng.integers(0, n, size=(min(chunk, samples - start), n))
        drops[start:start + len(index)] = drops_of(index)
    return drops


# -- rendering -----------------------------------------------------------------------------

_CHECK_TITLES = {
    "max_drop": "{metric} drop",
    "max_drop_ci_upper": "{metric} drop, CI upper bound",
    "min_retention": "{metric} retention",
    "max_latency_ratio": "p50 latency ratio, batch 1",
}


def _format_check(check: dict[str, Any], metric: str) -> tuple[str, str, str]:
    """(title, value, threshold) in the check's own unit."""
    title = _CHECK_TITLES.get(check["name"], check["name"]).format(metric=METRICS[metric])
    value, threshold = check["value"], check["threshold"]
    if check["name"].startswith("max_drop"):
        return title, f"{value:.2f} points", f"<= {threshold:.2f} points"
    if check["name"] == "min_retention":
        return title, f"{value:.4f}", f">= {threshold:g}"
    return title, f"{value:.2f}x", f"<= {threshold:g}x"


def _explain(result: GateResult) -> str:
    """One sentence a reviewer can act on, including whether the difference may be noise."""
    alpha = 1 - result.config.confidence
    significant = result.mcnemar_p < alpha
    if result.passed:
        note = ""
        if significant and result.drop_points > 0:
            note = (f" Its {METRICS[result.metric]} is lower by a statistically significant margin "
                    f"(p = {result.mcnemar_p:.3g}), but within tolerance.")
        return f"The candidate may replace the baseline: every threshold holds.{note}"
    failed = [check for check in result.checks if not check["passed"]]
    text = f"The candidate must not replace the baseline: {'; '.join(c['message'] for c in failed)}."
    if any(c["name"] in ("max_drop", "min_retention") for c in failed) and not significant:
        text += (f" The difference is not statistically significant ({result.test} p = "
                 f"{result.mcnemar_p:.3g}), "
                 f"so it may be noise of a {result.n}-example split; a larger split would tell.")
    return text


def render_markdown(result: GateResult) -> str:
    """A summary for a CI job page ($GITHUB_STEP_SUMMARY) and the terminal alike."""
    metric = METRICS[result.metric]
    low, high = result.drop_ci
    b, c = result.discordant
    lines = [
        f"## slimbert gate: {'PASS' if result.passed else 'FAIL'}",
        "",
        f"Candidate **{result.candidate}** vs baseline **{result.baseline}**: {metric} on "
        f"{result.n} examples of the {result.split or 'evaluation'} split.",
        "",
        "| check | value | threshold | result |",
        "|---|---|---|---|",
    ]
    for check in result.checks:
        title, value, threshold = _format_check(check, result.metric)
        lines.append(f"| {title} | {value} | {threshold} | {'pass' if check['passed'] else '**FAIL**'} |")
    lines += [
        "",
        f"- {metric}: baseline {result.baseline_value:.2%}, candidate {result.candidate_value:.2%} "
        f"(drop {result.drop_points:+.2f} points, retention {result.retention:.4f})",
        f"- {result.config.confidence:.0%} paired bootstrap CI of the drop: [{low:+.2f}, {high:+.2f}] points "
        f"({result.config.bootstrap_samples} resamples, seed {result.config.seed})",
        _test_line(result),
        *[f"- note: {note}" for note in result.notes],
        "",
        _explain(result),
        "",
    ]
    return "\n".join(lines)


def _test_line(result: GateResult) -> str:
    b, c = result.discordant
    if result.test == "McNemar":
        return (f"- McNemar test ({_mcnemar_method(b, c)}): p = {result.mcnemar_p:.3g}; {b} examples only "
                f"the baseline gets right, {c} only the candidate")
    floor = 1 / result.config.bootstrap_samples  # no resample crossed zero: p is below one in that many
    p = f"< {floor:.2g}" if result.mcnemar_p < floor else f"= {result.mcnemar_p:.3g}"
    return (f"- paired bootstrap test of no drop: p {p}; {b} examples score higher on the baseline, "
            f"{c} on the candidate")


def render_junit(result: GateResult) -> str:
    """JUnit XML, one testcase per check, so CI dashboards show which threshold failed."""
    failures = sum(not check["passed"] for check in result.checks)
    suite = ET.Element("testsuite", name="slimbert-gate", tests=str(len(result.checks)),
                       failures=str(failures), errors="0", skipped="0")
    properties = ET.SubElement(suite, "properties")
    for name, value in (("baseline", result.baseline), ("candidate", result.candidate),
                        ("metric", result.metric), ("n", result.n), ("mcnemar_p", f"{result.mcnemar_p:.6g}"),
                        ("drop_ci", f"{result.drop_ci[0]:.4f},{result.drop_ci[1]:.4f}")):
        ET.SubElement(properties, "property", name=name, value=str(value))
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", classname="slimbert.gate", name=check["name"])
        if not check["passed"]:
            failure = ET.SubElement(case, "failure", type="threshold", message=check["message"])
            failure.text = f"value {check['value']:.6g}, threshold {check['threshold']:g}"
    ET.SubElement(suite, "system-out").text = render_markdown(result)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


# -- the whole check, as `slimbert gate` runs it ------------------------------------------


def gate_reports(baseline: Path | str, candidate: Path | str | None = None, *,
                 baseline_artifact: str | None = None, candidate_artifact: str | None = None,
                 target: str | None = None, config: GateConfig | None = None,
                 junit: Path | str | None = None, summary: Path | str | None = None,
                 verdict: Path | str | None = None) -> GateResult:
    """Gate a candidate row against a baseline row of bench report.json files, as `slimbert gate` does.

    ``candidate`` defaults to the baseline report (two artifacts benched side by side). The
    Markdown summary is also written to ``summary`` and appended to $GITHUB_STEP_SUMMARY when
    set, the JUnit XML to ``junit``, the verdict as JSON to ``verdict`` (what `deploy
    --require-gate` reads). Raises GateError when the rows cannot be compared; a
    failed threshold is the result's ``passed`` (the CLI exits 1 on it).
    """
    baseline_report = load_report(Path(baseline), GateError, _REPORT_HINT, required=("rows", "dataset"))
    candidate_report = (load_report(Path(candidate), GateError, _REPORT_HINT, required=("rows", "dataset"))
                        if candidate else baseline_report)
    baseline_row = select_row(baseline_report, baseline_artifact, target)
    candidate_row = select_row(candidate_report, candidate_artifact, target)
    if baseline_row is candidate_row:
        raise GateError("the baseline and the candidate are the same row; name the candidate with "
                        "--candidate-artifact (or give --candidate REPORT.json).")
    result = evaluate_gate(baseline_report, baseline_row, candidate_report, candidate_row,
                           config or GateConfig())
    write_gate_outputs(result, junit=junit, summary=summary, verdict=verdict)
    return result


def verdict_dict(result: GateResult) -> dict[str, Any]:
    """The verdict a deploy can check: passed or not, of which model (content fingerprint)."""
    return {"passed": result.passed, "candidate": result.candidate, "baseline": result.baseline,
            "candidate_fingerprint": result.candidate_fingerprint, "metric": result.metric,
            "drop_points": result.drop_points, "drop_ci": list(result.drop_ci), "n": result.n,
            "checks": result.checks}


def write_gate_outputs(result: GateResult, *, junit: Path | str | None = None,
                       summary: Path | str | None = None, verdict: Path | str | None = None) -> None:
    """The JUnit XML and the Markdown summary where asked, and the summary on the CI job page."""
    from slimbert.artifacts import write_text_atomic

    if verdict is not None:
        from slimbert.artifacts import write_json_atomic

        write_json_atomic(Path(verdict), verdict_dict(result))
    markdown = render_markdown(result)
    for path, text in ((junit, render_junit(result)), (summary, markdown)):
        if path is None:
            continue
        try:
            write_text_atomic(Path(path), text)
        except OSError as exc:
            raise GateError(f"cannot write {path}: {exc.strerror or exc}.",
                            hint="choose a writable path.") from exc
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:  # GitHub Actions shows this file on the job page; other CIs ignore it
        try:
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write(markdown + "\n")
        except OSError as exc:
            log.warning("cannot append to $GITHUB_STEP_SUMMARY (%s): %s", step_summary, exc)
