"""The CI gate: paired statistics, refusals, renderers and exit codes, on synthetic reports."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from slimbert.cli import main
from slimbert.data.metrics import classification_metrics
from slimbert.errors import GateError
from slimbert.gate import (
    GateConfig,
    evaluate_gate,
    mcnemar_p,
    paired_bootstrap_ci,
    render_junit,
    render_markdown,
    select_row,
)

N = 2000


@pytest.fixture(autouse=True)
def _no_ci_step_summary(monkeypatch):
    """Tests run inside GitHub Actions must not append to the real job page."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def make_labels(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n)


def predict(labels: np.ndarray, wrong: np.ndarray | range) -> list[int]:
    """Predictions that are right everywhere except at the indices ``wrong``."""
    preds = labels.copy()
    preds[list(wrong)] = 1 - preds[list(wrong)]
    return preds.tolist()


def make_row(artifact: str, preds: list[int]) -> dict:
    """The fields of a bench row the gate reads (accuracy is recomputed from predictions)."""
    return {"artifact": artifact, "target": "ort-cpu", "accuracy": {"accuracy": 0.0, "n": len(preds)},
            "latency": [{"batch_size": 1, "p50_ms": 2.0}, {"batch_size": 32, "p50_ms": 60.0}],
            "predictions": preds}


def make_report(labels: np.ndarray, rows: list[dict]) -> dict:
    return {"name": "bench", "reference": rows[0]["artifact"],
            "dataset": {"source": "synthetic", "fingerprint": "fp-1", "split": "test",
                        "examples": len(labels)},
            "labels": labels.tolist(), "rows": rows, "unavailable": []}


def base_and(candidate_wrong, *, n: int = N, base_wrong=None) -> tuple[dict, dict, dict]:
    """A report with a baseline (86% right unless given) and a candidate, plus both rows."""
    labels = make_labels(n)
    base_wrong = range(n - round(0.14 * n), n) if base_wrong is None else base_wrong
    base = make_row("student-onnx", predict(labels, base_wrong))
    cand = make_row("student-int8", predict(labels, candidate_wrong))
    return make_report(labels, [base, cand]), base, cand


def gate_same_report(candidate_wrong, cfg: GateConfig | None = None, **kw):
    report, base, cand = base_and(candidate_wrong, **kw)
    return evaluate_gate(report, base, report, cand, cfg or GateConfig())


BASE_WRONG = range(N - 280, N)  # 86% right


# -- verdicts ------------------------------------------------------------------------------


def test_identical_predictions_pass():
    result = gate_same_report(BASE_WRONG)
    assert result.passed and result.drop_points == 0 and result.retention == 1
    assert result.drop_ci == (0.0, 0.0) and result.mcnemar_p == 1.0 and result.discordant == (0, 0)
    assert result.baseline_value == pytest.approx(0.86) and result.n == N
    assert "PASS" in render_markdown(result)


def test_five_points_worse_fails_with_readable_summary():
    result = gate_same_report(range(N - 380, N))  # 100 more mistakes: 81%
    assert not result.passed
    assert result.drop_points == pytest.approx(5.0)
    check, ci_check = result.checks  # by default the CI's upper bound is held to the budget too
    assert check["name"] == "max_drop" and not check["passed"] and check["threshold"] == 1.0
    assert ci_check["name"] == "max_drop_ci_upper" and not ci_check["passed"]
    summary = render_markdown(result)
    assert "FAIL" in summary and "accuracy drop" in summary and "5.00 points" in summary
    assert "<= 1.00 points" in summary and "accuracy dropped 5.00 points, more than the 1 allowed" in summary
    assert "student-int8 on ort-cpu" in summary and "student-onnx on ort-cpu" in summary


def test_drop_exactly_at_threshold_passes_on_its_point_estimate():
    result = gate_same_report(range(N - 300, N), GateConfig(require_significance=False))  # 85%: 1.000 points
    assert result.passed
    assert not gate_same_report(range(N - 300, N)).passed  # its CI reaches past 1 point: the default fails


def test_macro_f1_metric_matches_the_bench_metric():
    report, base, cand = base_and(range(N - 380, N))
    result = evaluate_gate(report, base, report, cand, GateConfig(metric="macro_f1", max_drop=10,
                                                                 bootstrap_samples=200))
    labels = np.asarray(report["labels"])
    expected = classification_metrics(labels, np.asarray(cand["predictions"]), 2)["macro_f1"]
    assert result.candidate_value == pytest.approx(expected) and result.passed
    assert "macro-F1" in render_markdown(result)


def test_min_retention():
    cand_wrong = range(N - 310, N)  # 84.5%: retention 0.9826
    fails = gate_same_report(cand_wrong, GateConfig(max_drop=None, min_retention=0.985))
    passes = gate_same_report(cand_wrong, GateConfig(max_drop=None, min_retention=0.98))
    assert fails.retention == pytest.approx(0.845 / 0.86)
    assert [c["name"] for c in fails.checks] == ["min_retention"]
    assert not fails.passed and passes.passed


# -- statistics ----------------------------------------------------------------------------


def test_mcnemar_exact_matches_hand_computed_binomial():
    expected = 2 * sum(math.comb(12, k) for k in range(3)) / 2**12  # 158 / 4096
    assert mcnemar_p(10, 2) == pytest.approx(expected) and expected == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar_p(2, 10) == mcnemar_p(10, 2)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0


def test_mcnemar_large_counts_use_chi_square_close_to_exact():
    b, c = 600, 520
    exact = 2 * sum(math.comb(b + c, k) for k in range(c + 1)) / 2 ** (b + c)
    assert mcnemar_p(b, c) == pytest.approx(exact, rel=0.05)


def test_discordant_pairs_feed_mcnemar():
    # baseline wrong on the last 280; candidate fixes 2 of them and breaks 10 others
    cand_wrong = [*range(10), *range(N - 278, N)]
    result = gate_same_report(cand_wrong)
    assert result.discordant == (10, 2)
    assert result.mcnemar_p == pytest.approx(158 / 4096)


def test_bootstrap_ci_contains_drop_and_is_deterministic():
    report, base, cand = base_and([*range(40), *range(N - 260, N)])  # b=40, c=20: drop 1 point
    labels = np.asarray(report["labels"])
    args = labels, np.asarray(base["predictions"]), np.asarray(cand["predictions"])
    kw = {"metric": "accuracy", "num_classes": 2, "samples": 2000, "confidence": 0.95}
    low, high = paired_bootstrap_ci(*args, **kw, seed=0)
    assert low < 1.0 < high and high - low < 2.0  # paired: sd ~ sqrt(60)/2000 -> about +-0.76 points
    assert paired_bootstrap_ci(*args, **kw, seed=0) == (low, high)
    assert paired_bootstrap_ci(*args, **kw, seed=1) != (low, high)
    result = evaluate_gate(report, base, report, cand, GateConfig(seed=0))
    assert result.drop_ci == (low, high)


def test_the_default_fails_an_unproven_small_drop_and_the_point_estimate_passes_it():
    n = 200
    base_wrong = range(n - 28, n)  # 86%
    cand_wrong = [*range(6), *range(n - 23, n)]  # b=6, c=5: observed drop 0.5 points
    plain = gate_same_report(cand_wrong, GateConfig(max_drop=1.0, require_significance=False), n=n,
                             base_wrong=base_wrong)
    strict = gate_same_report(cand_wrong, GateConfig(max_drop=1.0), n=n, base_wrong=base_wrong)
    assert plain.drop_points == pytest.approx(0.5) and plain.passed
    assert strict.drop_ci[1] > 1.0 and not strict.passed
    by_name = {c["name"]: c for c in strict.checks}
    assert by_name["max_drop"]["passed"] and not by_name["max_drop_ci_upper"]["passed"]
    assert "not significantly within" in render_markdown(strict)


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["fingerprint", "split", "labels", "predictions", "no-labels"])
def test_refuses_reports_of_different_data(change):
    report, base, _ = base_and(BASE_WRONG)
    other = json.loads(json.dumps(report))
    if change in ("fingerprint", "split"):
        other["dataset"][change] = "other"
    elif change == "labels":
        other["labels"][0] = 1 - other["labels"][0]
    elif change == "predictions":
        other["rows"][1]["predictions"] = other["rows"][1]["predictions"][:-1]
    else:
        del other["labels"]
    with pytest.raises(GateError) as info:
        evaluate_gate(report, base, other, select_row(other, "student-int8", None), GateConfig())
    assert info.value.exit_code == 2
    expected = {"predictions": "prediction counts differ", "no-labels": "no 'labels'"}
    assert expected.get(change, "different dataset or split") in info.value.message


def test_select_row_names_the_available_rows():
    report, base, cand = base_and(BASE_WRONG)
    assert select_row(report, "student-int8", None) is cand
    assert select_row(report, "student-onnx", "ort-cpu") is base
    with pytest.raises(GateError, match="student-onnx on ort-cpu, student-int8 on ort-cpu"):
        select_row(report, "student-int9", None)
    with pytest.raises(GateError, match="no row for student-int8 on ort-cuda"):
        select_row(report, "student-int8", "ort-cuda")
    with pytest.raises(GateError, match="2 rows"):
        select_row(report, None, None)


@pytest.mark.parametrize("kwargs", [
    {"metric": "f1"}, {"max_drop": -1}, {"min_retention": 1.5}, {"confidence": 1.0},
    {"bootstrap_samples": 10}, {"max_latency_ratio": 0}, {"max_drop": None, "require_significance": True},
    {"max_drop": None},
])
def test_config_ranges(kwargs):
    with pytest.raises(ValueError):
        GateConfig(**kwargs)


# -- latency -------------------------------------------------------------------------------


def test_latency_ratio_same_report_only():
    report, base, cand = base_and(BASE_WRONG)
    cand["latency"][0]["p50_ms"] = 3.0  # 1.5x the baseline's 2.0 ms
    slow = evaluate_gate(report, base, report, cand, GateConfig(max_latency_ratio=1.2))
    fine = evaluate_gate(report, base, report, cand, GateConfig(max_latency_ratio=2.0))
    check = slow.checks[-1]
    assert check["name"] == "max_latency_ratio" and check["value"] == pytest.approx(1.5)
    assert not slow.passed and fine.passed
    copy = json.loads(json.dumps(report))
    copy["environment"] = {"cpu": "another machine"}
    with pytest.raises(GateError, match="one bench report"):
        evaluate_gate(report, base, copy, select_row(copy, "student-int8", None),
                      GateConfig(max_latency_ratio=1.2))
    cand["latency"] = [{"batch_size": 32, "p50_ms": 60.0}]
    with pytest.raises(GateError, match="batch size 1"):
        evaluate_gate(report, base, report, cand, GateConfig(max_latency_ratio=1.2))


def test_a_latency_the_bench_flagged_fails_the_latency_check():
    """A row whose end-of-bench re-timing disagreed is not timed well enough to pass a ratio."""
    report, base, cand = base_and(BASE_WRONG)
    assert evaluate_gate(report, base, report, cand, GateConfig(max_latency_ratio=2.0)).passed
    cand["timing_flag"] = "re-timed at the end of the bench: p50 9.00 ms against 2.00 ms (4.50x)"
    result = evaluate_gate(report, base, report, cand, GateConfig(max_latency_ratio=2.0))
    assert not result.passed
    message = result.checks[-1]["message"]
    assert "flagged by the bench" in message and "9.00 ms" in message
    # accuracy thresholds alone do not read latencies: a flag does not touch them
    assert evaluate_gate(report, base, report, cand, GateConfig(max_drop=50.0)).passed


# -- renderers -----------------------------------------------------------------------------


def test_junit_has_a_failure_exactly_for_failed_checks():
    report, base, cand = base_and(range(N - 380, N))
    result = evaluate_gate(report, base, report, cand,
                           GateConfig(max_drop=10, min_retention=0.99, max_latency_ratio=1.5))
    root = ET.fromstring(render_junit(result))
    assert root.tag == "testsuite" and root.get("name") == "slimbert-gate"
    assert root.get("tests") == "4" and root.get("failures") == "1"
    failed = {case.get("name") for case in root.iter("testcase") if case.find("failure") is not None}
    assert failed == {c["name"] for c in result.checks if not c["passed"]} == {"min_retention"}
    assert "0.9419" in root.find("testcase/failure").get("message")


# -- command line --------------------------------------------------------------------------


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def invoke(*args, env=None):
    return CliRunner().invoke(main, ["-q", "gate", *map(str, args)], env=env)


def test_cli_pass_side_by_side_writes_junit_summary_and_step_summary(tmp_path):
    report, _, _ = base_and([*range(4), *range(N - 276, N)])  # 0.2 points worse
    path = write_json(tmp_path / "report.json", report)
    step = tmp_path / "step.md"
    step.write_text("earlier step\n")
    result = invoke("--baseline", path, "--baseline-artifact", "student-onnx",
                    "--candidate-artifact", "student-int8", "--junit", tmp_path / "out" / "gate.xml",
                    "--summary", tmp_path / "gate.md", env={"GITHUB_STEP_SUMMARY": str(step)})
    assert result.exit_code == 0, result.output
    assert "slimbert gate: PASS" in result.output
    assert ET.parse(tmp_path / "out" / "gate.xml").getroot().get("failures") == "0"
    summary = (tmp_path / "gate.md").read_text()
    assert summary.startswith("## slimbert gate: PASS")
    assert step.read_text() == "earlier step\n" + summary + "\n"
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "out").glob(".*.tmp"))


def test_cli_fail_exits_1_with_message(tmp_path):
    labels = make_labels()
    baseline = make_report(labels, [make_row("student-int8", predict(labels, BASE_WRONG))])
    candidate = make_report(labels, [make_row("student-int8", predict(labels, range(N - 380, N)))])
    result = invoke("--baseline", write_json(tmp_path / "main.json", baseline),
                    "--candidate", write_json(tmp_path / "pr.json", candidate), "--junit", tmp_path / "g.xml")
    assert result.exit_code == 1, result.output
    assert "slimbert gate: FAIL" in result.output
    assert "error: gate failed: accuracy dropped 5.00 points, more than the 1 allowed;" in result.output
    assert "Traceback" not in result.output
    assert ET.parse(tmp_path / "g.xml").getroot().get("failures") == "2"  # the drop and its CI bound


def assert_usage_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_cli_usage_errors_exit_2(tmp_path):
    report, _, _ = base_and(BASE_WRONG)
    path = write_json(tmp_path / "report.json", report)
    other = dict(report, dataset=dict(report["dataset"], split="dev"))
    other_path = write_json(tmp_path / "other.json", other)
    (tmp_path / "bad.json").write_text("{not json")
    pair = ("--baseline-artifact", "student-onnx", "--candidate-artifact", "student-int8")
    assert_usage_error(invoke("--baseline", tmp_path / "missing.json"), "missing.json", "does not exist")
    assert_usage_error(invoke("--baseline", tmp_path / "bad.json"), "not valid JSON")
    assert_usage_error(invoke("--baseline", path, "--baseline-artifact", "student-onnx",
                              "--candidate-artifact", "nope"), "no row for nope", "student-int8 on ort-cpu",
                       "<run>/<stage>/report.json")
    assert_usage_error(invoke("--baseline", path, "--candidate", other_path, *pair),
                       "different dataset or split", "'test'", "'dev'")
    assert_usage_error(invoke("--baseline", path, "--baseline-artifact", "student-onnx"), "2 rows", "match")
    single = write_json(tmp_path / "single.json", dict(report, rows=report["rows"][:1]))
    assert_usage_error(invoke("--baseline", single), "same row", "--candidate-artifact")
    assert_usage_error(invoke("--baseline", path, *pair, "--confidence", "2"), "confidence")
    assert_usage_error(invoke("--baseline", path, *pair, "--max-drop", "lots"), "'lots'")


def test_cli_help_teaches_thresholds():
    result = CliRunner().invoke(main, ["gate", "--help"])
    assert result.exit_code == 0 and "--max-drop 1.0" in result.output and "84.9% fails" in result.output


def test_cli_retention_only(tmp_path):
    report, _, _ = base_and(range(N - 380, N))  # 5 points worse, retention 0.942
    path = write_json(tmp_path / "report.json", report)
    pair = ("--baseline-artifact", "student-onnx", "--candidate-artifact", "student-int8")
    result = invoke("--baseline", path, *pair, "--max-drop", "none", "--min-retention", "0.9")
    assert result.exit_code == 0, result.output
    assert "retention" in result.output and "accuracy drop" not in result.output


def test_a_real_3_point_drop_on_a_small_split_fails_the_default_gate():
    """100 examples, a candidate truly 3 points worse (it breaks 3.5% of the baseline's right
    answers). The point estimate alone passes such a candidate whenever the sample shows a drop
    of a point or less (about a quarter of the time); the default holds the CI's upper bound to
    the budget and lets almost none through."""
    rng = np.random.default_rng(0)
    passes = {False: 0, None: 0}
    trials = 200
    for trial in range(trials):
        labels = rng.integers(0, 2, 100)
        base = np.where(rng.random(100) < 0.86, labels, 1 - labels)
        broken = (base == labels) & (rng.random(100) < 0.035)
        cand = np.where(broken, 1 - base, base)
        report = make_report(labels, [make_row("a", base.tolist()), make_row("b", cand.tolist())])
        for require in passes:
            cfg = GateConfig(max_drop=1.0, require_significance=require, bootstrap_samples=200, seed=trial)
            passes[require] += evaluate_gate(report, report["rows"][0], report, report["rows"][1], cfg).passed
    assert passes[False] / trials > 0.15  # the point estimate: the problem
    assert passes[None] / trials < 0.06  # the default: only samples that show no drop at all


def test_the_verdict_names_the_candidate_by_its_fingerprint(tmp_path):
    """What `deploy --require-gate` checks: passed or not, for which model."""
    from slimbert.gate import gate_reports

    report, _, cand = base_and([*range(4), *range(N - 276, N)])  # 0.2 points worse: passes
    cand["fingerprint"] = "f" * 64
    path = write_json(tmp_path / "report.json", report)
    gate_reports(path, baseline_artifact="student-onnx", candidate_artifact="student-int8",
                 config=GateConfig(require_significance=False), verdict=tmp_path / "gate.json")
    verdict = json.loads((tmp_path / "gate.json").read_text())
    assert verdict["passed"] is True and verdict["candidate_fingerprint"] == "f" * 64
    assert verdict["candidate"] == "student-int8 on ort-cpu" and verdict["n"] == N
