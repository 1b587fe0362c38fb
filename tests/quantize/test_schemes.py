"""The INT8 scheme is chosen by dev scores and batch-1 speed measured here, not by the ISA table."""

import numpy as np
import pytest

from slimbert.quantize import schemes
from slimbert.quantize.config import DEFAULT_TOLERANCE, OnnxQuantizeConfig, TorchQuantizeConfig
from slimbert.quantize.fallback import DevScorer
from slimbert.quantize.onnx_ptq import quantize_onnx
from slimbert.quantize.schemes import Int8Scheme, SchemeTrial, candidate_schemes, choose_scheme


def test_a_stage_without_a_tolerance_gets_the_default_one():
    assert OnnxQuantizeConfig().tolerance == DEFAULT_TOLERANCE == TorchQuantizeConfig().tolerance == 1.0
    with pytest.raises(ValueError, match="tolerance"):
        OnnxQuantizeConfig(tolerance=None)


def test_dynamic_candidates_vary_what_the_recipe_leaves_open_table_first():
    tried = candidate_schemes(OnnxQuantizeConfig(mode="dynamic", target_isa="x86-avx2"))
    assert tried[0].name == "u8s8-7bit-per-tensor"  # the AVX2 table entry is tried first
    assert len(tried) == len(set(tried)) == 8  # s8/u8 weights x 7/8 bits x tensor/channel
    assert {t.activation_type for t in tried} == {"uint8"} and {t.format for t in tried} == {"qoperator"}
    fixed = candidate_schemes(OnnxQuantizeConfig(mode="dynamic", target_isa="x86-avx2", per_channel=True,
                                                 weight_type="int8"))
    assert [t.name for t in fixed] == ["u8s8-7bit-per-channel", "u8s8-8bit-per-channel"]
    assert len(candidate_schemes(OnnxQuantizeConfig(mode="dynamic", schemes="table"))) == 1


def test_static_candidates_include_both_graph_formats_unless_the_fallback_needs_qoperator():
    static = candidate_schemes(OnnxQuantizeConfig(mode="static", target_isa="x86-vnni"))
    assert static[0].name == "u8s8-8bit-per-tensor" and len(static) == 16
    assert {t.format for t in static} == {"qoperator", "qdq"}
    assert {(t.activation_type, t.weight_type) for t in static} == {("uint8", "int8"), ("uint8", "uint8")}
    arm = candidate_schemes(OnnxQuantizeConfig(mode="static", target_isa="arm64-dotprod"))
    assert arm[0].name == "s8s8-8bit-per-tensor"
    dynamic_fallback = candidate_schemes(OnnxQuantizeConfig(mode="static", fallback="dynamic"))
    assert {t.format for t in dynamic_fallback} == {"qoperator"}


def _trial(name: str, drop: float, p50: float | None, agreement: float = 0.99) -> SchemeTrial:
    per_channel = "channel" in name
    return SchemeTrial(Int8Scheme("uint8", "int8", "7bit" in name, per_channel, "qoperator"),
                       0.9, drop, agreement, p50)


def test_choose_keeps_the_fastest_scheme_within_the_tolerance():
    fast_bad, held = _trial("7bit", 2.8, 5.6), _trial("7bit-channel", 0.0, 6.1)
    slow = _trial("8bit", 0.5, 7.0)
    best, why = choose_scheme([fast_bad, held, slow], tolerance=1.0)
    assert best is held and "fastest" in why


def test_choose_breaks_a_speed_tie_on_the_smaller_drop():
    a, b = _trial("7bit", 0.9, 6.00), _trial("8bit-channel", 0.2, 6.1)  # within 3%: a tie
    assert choose_scheme([a, b], tolerance=1.0)[0] is b
    c = _trial("8bit", 0.2, 7.0)  # 17% slower: not a tie
    assert choose_scheme([a, c], tolerance=1.0)[0] is a


def test_when_no_scheme_holds_the_smallest_drop_goes_to_the_node_fallback():
    best, why = choose_scheme([_trial("7bit", 3.0, 5.0), _trial("8bit", 1.5, 9.0)], tolerance=1.0)
    assert best.dev_drop_points == 1.5 and "node fallback" in why


def test_the_avx2_table_entry_does_not_decide_alone(exported, dev_enc, train_enc, tmp_path, monkeypatch):
    """Forced to the AVX2 entry on any machine: the table's scheme, scored as losing more than
    the tolerance on dev, is never kept; the choice follows the measured dev drops."""
    src, _ = exported
    real = DevScorer.drop_and_agreement
    calls = []

    def table_scheme_loses_points(self, fp32_logits, logits):
        acc, drop, agree = real(self, fp32_logits, logits)
        calls.append(drop)
        return (acc - 0.05, drop + 5.0, agree) if len(calls) == 1 else (acc, drop, agree)

    monkeypatch.setattr(DevScorer, "drop_and_agreement", table_scheme_loses_points)
    cfg = OnnxQuantizeConfig(mode="dynamic", target_isa="x86-avx2", tolerance=1.0, scheme_timing_rounds=1)
    metrics = quantize_onnx(src, tmp_path, cfg, dev_enc, train_enc)
    record = metrics["schemes"]
    tried = {t["scheme"]: t for t in record["tried"]}
    assert record["tried"][0]["scheme"] == "u8s8-7bit-per-tensor" and len(tried) == 8
    assert tried["u8s8-7bit-per-tensor"]["dev_drop_points"] > cfg.tolerance
    assert record["chosen"] != "u8s8-7bit-per-tensor"
    chosen = tried[record["chosen"]]
    assert chosen["dev_drop_points"] <= cfg.tolerance and chosen["p50_ms_b1"] > 0
    holding = [t for t in tried.values() if t["dev_drop_points"] <= cfg.tolerance]
    fastest = min(t["p50_ms_b1"] for t in holding)
    assert chosen["p50_ms_b1"] <= fastest * (1 + schemes.SPEED_TIE)
    assert metrics["tuned_isa"] == "x86-avx2" and metrics["tolerance_met"] is True
    assert metrics["int8_formats"]["reduce_range"] == chosen["reduce_range"]
    assert metrics["per_channel"] == chosen["per_channel"]


def test_a_missed_tolerance_is_said_in_the_metrics_and_the_summary(exported, dev_enc, train_enc, tmp_path,
                                                                   monkeypatch):
    from slimbert.artifacts import Artifact, Manifest
    from slimbert.summary import stage_headline

    src, _ = exported
    import slimbert.runtimes.base as base
    real_served = base.Session.served_logits
    calls = {"n": 0}

    def served(self, enc, *args, **kwargs):
        calls["n"] += 1
        logits = real_served(self, enc, *args, **kwargs)
        # the fp32 source is scored first; every quantized graph after it "flips" every label
        return logits if calls["n"] == 1 else np.roll(logits, 1, axis=1)

    monkeypatch.setattr(base.Session, "served_logits", served)
    cfg = OnnxQuantizeConfig(mode="dynamic", schemes="table", tolerance=0.5, max_fallback_nodes=1)
    metrics = quantize_onnx(src, tmp_path, cfg, dev_enc, train_enc)
    assert metrics["tolerance_met"] is False and metrics["dev_drop_points"] > 0.5
    artifact = Artifact(tmp_path, Manifest(kind="onnx", stage="int8", stage_type="quantize-onnx",
                                           inputs_hash="x", metrics=metrics))
    _, warning = stage_headline(artifact)
    assert warning and "more than its tolerance of 0.5" in warning
