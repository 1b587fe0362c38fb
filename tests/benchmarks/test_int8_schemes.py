"""benchmarks/int8_schemes.py on the tiny model: every scheme scored on test, slimbert's choice among them."""

import int8_schemes


def test_every_scheme_is_scored_and_timed_beside_slimberts_choice(exported, tiny_data, tmp_path):
    src, _ = exported
    result = int8_schemes.measure(src, "dynamic", tiny_data, 32, tmp_path, rounds=1)
    names = [r["scheme"] for r in result["schemes"]]
    assert len(names) == len(set(names)) == 8 and names[0] == result["table_scheme"]
    assert result["chosen"]["scheme"] in names
    for row in result["schemes"]:
        assert 0 <= row["test_accuracy"] <= 1 and row["p50_ms_b1_128"] > 0 and row["speedup_vs_fp32"] > 0
    chosen = next(r for r in result["schemes"] if r["scheme"] == result["chosen"]["scheme"])
    # the chosen graph (slimbert's stage output) scores on test as its scheme rewritten from scratch
    assert abs(result["chosen"]["test_accuracy"] - chosen["test_accuracy"]) < 1e-9 or \
        result["chosen"]["after_fallback"].get("sensitivity") is not None
