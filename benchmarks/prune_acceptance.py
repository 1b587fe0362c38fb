"""Issue 4 acceptance numbers: vocabulary and structured pruning of the default student.

    python benchmarks/prune_acceptance.py [--run /tmp/fresh/runs/default] [--out runs/prune-acceptance]
        [--epochs 8] [--results benchmarks/results/prune_acceptance.json]

Starts from a finished default run (its teacher and 3-layer student, and its dataset
settings from recipe.json) and runs one recipe through the engine: (a) vocab pruning of the
student (tokens of the train and dev texts; also with tokens seen fewer than 2 or 3 times
dropped, to show what a smaller file costs, and the min-3 cut retrained by distillation
with its own tokenizer, beside the same retraining of the lossless cut as a control);
(b) structured pruning (25% heads, 40% FFN neurons rounded to keep 896, Taylor scores) +
recovery distillation from the teacher; (a) applied to (b) as an extra row. The unpruned
student and the pruned models are exported with slimbert's ONNX exporter and benchmarked
on ort-cpu (test accuracy, latency at batch 1, seq 128). Latency ratios come from sessions
measured in interleaved rounds in this one process (the machine is shared, so load drifts;
interleaving spreads it evenly), next to the bench
stage's single pass. Writes the JSON with every ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from slimbert.artifacts import write_json_atomic
from slimbert.bench.latency import measure_latency, synthetic_batch
from slimbert.bench.report import load_report
from slimbert.models import load_tokenizer
from slimbert.pipeline import run_recipe
from slimbert.recipe import recipe_from_dict
from slimbert.runtimes import get_runtime

RESULTS = Path(__file__).parent / "results" / "prune_acceptance.json"
# vocabulary pruning that also drops tokens seen fewer than k times in train + dev: the
# price in accuracy of a smaller file than the corpus's own vocabulary gives
MIN_COUNTS = (2, 3)
# the smallest of those, retrained with the pruned tokenizer (distillation from the teacher),
# and the same retraining of the corpus-vocabulary student: the control that tells what the
# retraining alone is worth
RETRAINED_MIN_COUNT = 3
ROWS = ("student-onnx", "student-vocab-onnx", "student-pruned-onnx", "student-pruned-vocab-onnx",
        *(f"student-vocab-min{k}-onnx" for k in MIN_COUNTS),
        "student-vocab-rec-onnx", f"student-vocab-min{RETRAINED_MIN_COUNT}-rec-onnx")


def build_recipe(run: Path, epochs: int, limit: int | None = None) -> dict:
    dataset = json.loads((run / "recipe.json").read_text())["dataset"]
    if limit:  # a quick smoke run of the script; numbers from it mean nothing
        dataset["limit"] = limit
    seed = json.loads((run / "recipe.json").read_text())["seed"]
    recovery = {"teacher": str(run / "teacher"), "epochs": epochs, "lr": 1e-4, "evals_per_epoch": 2,
                "patience": 3}
    retrained = {"student-vocab-rec": 1, f"student-vocab-min{RETRAINED_MIN_COUNT}-rec": RETRAINED_MIN_COUNT}
    return {
        "name": "prune-acceptance", "model": str(run / "student"), "seed": seed, "dataset": dataset,
        "stages": [
            {"type": "prune", "name": "student-vocab", "input": "model", "method": "vocab"},
            {"type": "prune", "name": "student-pruned", "input": "model", "method": "structured",
             "heads_fraction": 0.25, "ffn_fraction": 0.4, "ffn_multiple": 32, "importance": "taylor",
             "recovery": recovery},
            # both together (not an issue target; shows how the savings compose)
            {"type": "prune", "name": "student-pruned-vocab", "input": "student-pruned", "method": "vocab"},
            {"type": "export-onnx", "name": "student-onnx", "input": "model"},
            {"type": "export-onnx", "name": "student-vocab-onnx", "input": "student-vocab"},
            {"type": "export-onnx", "name": "student-pruned-onnx", "input": "student-pruned"},
            {"type": "export-onnx", "name": "student-pruned-vocab-onnx", "input": "student-pruned-vocab"},
            *({"type": "prune", "name": f"student-vocab-min{k}", "input": "model", "method": "vocab",
               "vocab_min_count": k} for k in MIN_COUNTS),
            *({"type": "export-onnx", "name": f"student-vocab-min{k}-onnx", "input": f"student-vocab-min{k}"}
              for k in MIN_COUNTS),
            *({"type": "prune", "name": name, "input": "model", "method": "vocab", "vocab_min_count": k,
               "recovery": recovery} for name, k in retrained.items()),
            *({"type": "export-onnx", "name": f"{name}-onnx", "input": name} for name in retrained),
            {"type": "bench", "name": "bench", "artifacts": list(ROWS), "targets": ["ort-cpu"],
             "reference": "student-onnx", "batch_sizes": [1], "seq_len": 128, "budget_s": 5.0,
             "max_iters": 2000},
        ],
    }


def interleaved_latency(paths: dict[str, Path], rounds: int, budget_s: float) -> dict[str, dict]:
    """p50 at batch 1, seq 128 per artifact: the median over rounds that visit each in turn."""
    runtime = get_runtime("ort-cpu")
    sessions, batches = {}, {}
    for name, path in paths.items():
        sessions[name] = runtime.load(path)
        vocab = load_tokenizer(path).vocab_size
        batches[name] = synthetic_batch(1, 128, vocab, sessions[name].input_names)
    p50s: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, session in sessions.items():
            stats = measure_latency(session, batches[name], warmup=5, min_iters=20, max_iters=5000,
                                    budget_s=budget_s)
            p50s[name].append(stats.p50_ms)
    return {name: {"p50_ms": round(statistics.median(v), 3), "rounds_p50_ms": [round(x, 3) for x in v]}
            for name, v in p50s.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("/tmp/fresh/runs/default"))
    parser.add_argument("--out", type=Path, default=Path("runs/prune-acceptance"))
    parser.add_argument("--epochs", type=int, default=3, help="recovery distillation epochs")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--limit", type=int, default=None, help="examples per split (smoke test only)")
    parser.add_argument("--train-threads", type=int, default=None,
                        help="torch threads for pruning and recovery (1 helps on a shared machine)")
    args = parser.parse_args()
    if args.train_threads:
        import torch

        torch.set_num_threads(args.train_threads)
    start = time.perf_counter()
    recipe = recipe_from_dict(build_recipe(args.run, args.epochs, args.limit), "prune_acceptance")
    result = run_recipe(recipe, args.out)
    report = load_report(args.out / "report.json")
    rows = {r.artifact: r for r in report.rows}
    paths = {name: args.out / name for name in ROWS}
    latency = interleaved_latency(paths, args.rounds, budget_s=2.0)
    vocab = result.artifact("student-vocab").manifest.metrics
    pruned = result.artifact("student-pruned").manifest.metrics
    size = {name: (paths[name] / "model.onnx").stat().st_size for name in ROWS}
    acc = {name: rows[name].accuracy["accuracy"] for name in ROWS}
    base = "student-onnx"

    def same_predictions(name: str) -> str:
        same = sum(a == b for a, b in zip(rows[base].predictions, rows[name].predictions, strict=True))
        return f"{same}/{len(rows[base].predictions)}"

    summary = {
        "machine": report.environment,
        "dataset": report.dataset,
        "seconds": round(time.perf_counter() - start, 1),
        "stages": [{"name": s.name, "status": s.status, "seconds": round(s.seconds, 1)}
                   for s in result.stages],
        "test_accuracy_ort_cpu": acc,
        "onnx_bytes": size,
        "latency_b1_seq128_interleaved": latency,
        "latency_b1_seq128_bench_stage_p50_ms": {n: rows[n].p50(report.smallest_batch) for n in ROWS},
        "vocab": {
            "embedding_rows": [vocab["embedding_rows_before"], vocab["embedding_rows_after"]],
            "embedding_rows_ratio": round(vocab["embedding_rows_before"] / vocab["embedding_rows_after"], 3),
            "onnx_size_ratio": round(size[base] / size["student-vocab-onnx"], 3),
            "safetensors_mb": [vocab["sparsity_report"]["before"]["size_mb"],
                               vocab["sparsity_report"]["after"]["size_mb"]],
            "test_accuracy_delta_points": round(100 * (acc["student-vocab-onnx"] - acc[base]), 3),
            "corpus": {k: vocab[k] for k in ("corpus_splits", "corpus_texts", "texts_tokenized_unchanged")},
            "identical_test_predictions": same_predictions("student-vocab-onnx"),
            "speedup_b1": round(latency[base]["p50_ms"] / latency["student-vocab-onnx"]["p50_ms"], 3),
        },
        "structured": {
            "heads": [pruned["sparsity_report"]["before"]["heads"],
                      pruned["sparsity_report"]["after"]["heads"]],
            "ffn_neurons": [pruned["sparsity_report"]["before"]["ffn_neurons"],
                            pruned["sparsity_report"]["after"]["ffn_neurons"]],
            "params": [pruned["params_before"], pruned["params"]],
            "test_accuracy_torch_before_after_recovery": [pruned["test_before"]["accuracy"],
                                                          pruned["test"]["accuracy"]],
            "test_accuracy_delta_points": round(100 * (acc["student-pruned-onnx"] - acc[base]), 3),
            "onnx_size_ratio": round(size[base] / size["student-pruned-onnx"], 3),
            "speedup_b1": round(latency[base]["p50_ms"] / latency["student-pruned-onnx"]["p50_ms"], 3),
            "recovery": {k: pruned["recovery"][k]
                         for k in ("train_seconds", "steps", "stopped_early", "dev")},
        },
    }
    summary["structured_plus_vocab"] = {
        "test_accuracy_delta_points": round(100 * (acc["student-pruned-vocab-onnx"] - acc[base]), 3),
        "onnx_size_ratio": round(size[base] / size["student-pruned-vocab-onnx"], 3),
        "speedup_b1": round(latency[base]["p50_ms"] / latency["student-pruned-vocab-onnx"]["p50_ms"], 3),
    }
    summary["vocab_min_count"] = {}
    for k in MIN_COUNTS:
        name, info = f"student-vocab-min{k}-onnx", result.artifact(f"student-vocab-min{k}").manifest.metrics
        summary["vocab_min_count"][k] = {
            "embedding_rows": info["embedding_rows_after"],
            "embedding_rows_ratio": round(info["embedding_rows_before"] / info["embedding_rows_after"], 3),
            "onnx_size_ratio": round(size[base] / size[name], 3),
            "test_accuracy_delta_points": round(100 * (acc[name] - acc[base]), 3),
            "identical_test_predictions": same_predictions(name),
        }
    retrained = f"student-vocab-min{RETRAINED_MIN_COUNT}-rec"
    info = result.artifact(retrained).manifest.metrics
    summary["vocab_retrained"] = {
        "min_count": RETRAINED_MIN_COUNT,
        "embedding_rows": info["embedding_rows_after"],
        "embedding_rows_ratio": round(info["embedding_rows_before"] / info["embedding_rows_after"], 3),
        "onnx_size_ratio": round(size[base] / size[f"{retrained}-onnx"], 3),
        "test_accuracy_delta_points": round(100 * (acc[f"{retrained}-onnx"] - acc[base]), 3),
        "identical_test_predictions": same_predictions(f"{retrained}-onnx"),
        "recovery": {k: info["recovery"][k] for k in ("train_seconds", "steps", "stopped_early", "dev")},
        # the same retraining without the rare-token cut: what retraining alone is worth
        "control_corpus_vocab_retrained_delta_points":
            round(100 * (acc["student-vocab-rec-onnx"] - acc[base]), 3),
    }
    smallest_lossless = max(
        (v for v in (summary["vocab"], summary["vocab_retrained"]) if v["test_accuracy_delta_points"] >= 0),
        key=lambda v: v["onnx_size_ratio"], default=None)
    summary["targets"] = {
        "vocab_rows_2x": summary["vocab"]["embedding_rows_ratio"] >= 2,
        # no accuracy lost on the unseen test split (a gain is not a loss)
        "vocab_no_accuracy_loss": summary["vocab"]["test_accuracy_delta_points"] >= 0,
        "vocab_onnx_2x_smaller_without_accuracy_loss":
            smallest_lossless is not None and smallest_lossless["onnx_size_ratio"] >= 2,
        "structured_within_1_point": summary["structured"]["test_accuracy_delta_points"] >= -1,
        "structured_1.3x_faster_b1_seq128": summary["structured"]["speedup_b1"] >= 1.3,
    }
    write_json_atomic(args.results, summary)
    shown = ("vocab", "vocab_min_count", "vocab_retrained", "structured", "structured_plus_vocab", "targets")
    print(json.dumps({k: summary[k] for k in shown}, indent=2))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
