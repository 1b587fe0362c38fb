"""The one fallback search every quantization path uses, on made-up units and logits."""

import subprocess
import sys

import numpy as np
import pytest

from slimbert.quantize.fallback import fallback_search, rank_units

LABELS = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
UNITS = ["a", "b", "c", "d"]
SENSITIVITY = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.0}  # worst first: b, c, a, d


def _logits(wrong: list[int]) -> np.ndarray:
    """Confident logits that get every example right but those in ``wrong``."""
    preds = LABELS.copy()
    preds[wrong] = 1 - preds[wrong]
    return np.eye(2)[preds] * 2.0


FP32 = _logits([])


def _search(fall_back, *, tolerance: float, max_units: int = 4, initial=(0, 1, 2, 3, 4), fp32=FP32):
    return fallback_search(units=lambda: UNITS, quantize_only=lambda unit: fp32 + SENSITIVITY[unit],
                           fall_back=fall_back, initial_logits=_logits(list(initial)), initial_model="int8",
                           fp32_logits=fp32, labels=LABELS, tolerance=tolerance, max_units=max_units,
                           units_key="fallback_nodes", unit_key="node")


def test_falls_back_the_most_sensitive_units_k_at_a_time_and_stops_within_tolerance():
    seen = []

    def fall_back(units):
        seen.append(list(units))
        return _logits(list(range(5 - 2 * len(units)))), f"model-{len(units)}"

    best, report = _search(fall_back, tolerance=20.0)  # 5 wrong: 50 points; 2 units -> 1 wrong: 10 points
    assert seen == [["b"], ["b", "c"]]  # ranked by logit MSE, worst first; stopped once within
    assert best.model == "model-2" and best.units == ["b", "c"] and report.met
    out = report.to_dict()
    assert out["fallback_nodes"] == ["b", "c"] and out["initial_dev_drop_points"] == pytest.approx(50)
    assert [t["fallback_nodes"] for t in out["tries"]] == [0, 1, 2] and out["met"]
    assert out["final_dev_drop_points"] == pytest.approx(10)
    assert [r["node"] for r in out["sensitivity"]] == ["b", "c", "a", "d"]


def test_within_tolerance_from_the_start_searches_nothing():
    best, report = _search(lambda units: pytest.fail("no search"), tolerance=60.0)
    assert best.model == "int8" and report.met
    assert report.to_dict() == {"tolerance_points": 60.0, "initial_dev_drop_points": pytest.approx(50),
                                "fallback_nodes": [], "met": True}


def test_unmet_keeps_the_best_variant_and_says_so():
    drops = {1: [0, 1, 2], 2: [0], 3: [0, 1]}
    best, report = _search(lambda units: (_logits(drops[len(units)]), len(units)), tolerance=0.0, max_units=3)
    assert not report.met and len(report.tries) == 4  # the initial variant and k = 1, 2, 3
    assert best.model == 2 and best.dev_drop_points == pytest.approx(10)


def test_equal_drops_go_to_the_variant_that_agrees_most_with_fp32():
    fp32 = _logits([9])  # fp32 itself errs on the last example
    variants = {1: [0, 1], 2: [0, 9]}  # both 80% accurate; the second errs where fp32 does

    best, report = _search(lambda units: (_logits(variants[len(units)]), len(units)), tolerance=0.0,
                           max_units=2, fp32=fp32)
    assert [t.dev_drop_points for t in report.tries[1:]] == pytest.approx([10, 10])
    assert [t.agreement for t in report.tries[1:]] == pytest.approx([0.7, 0.9])
    assert best.model == 2  # the first found would have been kept on the drop alone


def test_only_the_best_variant_is_held_in_memory():
    _, report = _search(lambda units: (_logits([0, 1]), object()), tolerance=0.0, max_units=3)
    assert all(t.model is None for t in report.tries) and report.final.model is None


def test_rank_units_orders_by_logit_mse_then_drop():
    rows = rank_units(["x", "y"], lambda u: FP32 + (1.0 if u == "y" else 0.1), FP32, LABELS, unit_key="layer")
    assert [r["layer"] for r in rows] == ["y", "x"] and rows[0]["logit_mse"] == pytest.approx(1.0)


def test_the_config_module_imports_no_heavy_library():
    code = ("import sys, slimbert.quantize.config\n"
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
