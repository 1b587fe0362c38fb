import numpy as np
import pytest

from slimbert.bench.latency import LatencyStats, interleaved_p50_ms, measure_latency, synthetic_batch
from slimbert.bench.report import markdown_table, pareto_plot


def test_stats_from_known_times():
    stats = LatencyStats.from_times([0.001 * i for i in range(1, 101)], batch_size=4, seq_len=16)
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.throughput == pytest.approx(4 / 0.0505)


def test_measure_respects_min_and_max_iterations():
    class Session:
        input_names = ("input_ids", "attention_mask")
        calls = 0

        def run(self, batch):
            Session.calls += 1
            return np.zeros((len(batch["input_ids"]), 2))

    batch = synthetic_batch(2, 8, 100, Session.input_names)
    assert set(batch) == {"input_ids", "attention_mask"} and batch["input_ids"].shape == (2, 8)
    stats = measure_latency(Session(), batch, warmup=2, min_iters=5, max_iters=7, budget_s=10)
    assert stats.iterations == 7 and Session.calls == 9
    stats = measure_latency(Session(), batch, warmup=0, min_iters=5, max_iters=1000, budget_s=0)
    assert stats.iterations == 5


def test_report_table_and_plot(tmp_path):
    rows = [{"artifact": name, "target": "ort-cpu", "accuracy": {"accuracy": acc, "macro_f1": acc},
             "retention": acc / 0.9, "size_mb": 10.0, "speedup_b1": 1.0,
             "latency": [{"batch_size": 1, "p50_ms": ms, "p90_ms": ms * 1.1, "throughput": 1000 / ms}]}
            for name, acc, ms in (("teacher", 0.9, 20.0), ("student", 0.88, 5.0))]
    table = markdown_table(rows, [1], 128)
    assert "| student | ort-cpu | 88.00% |" in table and "p50 ms b1" in table
    assert pareto_plot(rows, tmp_path / "p.png").stat().st_size > 1000


def test_interleaved_timing_runs_every_variant_in_alternating_rounds():
    import time

    calls = []
    p50 = interleaved_p50_ms({"slow": lambda: (calls.append("slow"), time.sleep(0.002)),
                              "fast": lambda: calls.append("fast")}, rounds=3, per_round=2, warmup=1)
    assert calls == ["slow", "fast"] + ["slow", "slow", "fast", "fast"] * 3  # warm-up, then rounds
    assert p50["slow"] >= 2.0 > p50["fast"]
