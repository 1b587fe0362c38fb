"""GPU serving bench: graph-captured runtimes against eager and the torch.compile one-liner.

    python benchmarks/gpu_serving.py --run runs/default [--out runs/gpu-serving]
        [--p99-budget-ms 5] [--results benchmarks/results/gpu_serving.json]
        [--targets ...] [--batch-sizes 1 8 32] [--no-sweep] [--no-recheck] [--budget-s 3]

The trimming options are for a short device call (benchmarks/gpu_measure.sh): fewer
batch sizes, no sequence sweep, no re-timing. A run folder without a teacher (a packed
one, see gpu_measure.py pack-run) is benched on its student alone.

Three parts, one process, one GPU:
1. The default run's teacher and student through `slimbert`'s bench on every CUDA runtime
   that runs here: eager fp32 (the accuracy reference), eager fp16, the
   ``torch.compile(mode="reduce-overhead")`` one-liner, the compiled + CUDA-graph runtimes
   (fp16, bf16, FP8, INT8 weight-only) and ONNX Runtime's CUDA provider with and without
   CUDA graphs. Accuracy on the run's test split through each runtime; latency at batch
   1/8/32, 128 tokens, and over sequence lengths 32-256.
2. A randomly initialised BERT-base-size model (12 layers, 768 wide; latency only) on the
   same runtimes, against the published TensorRT INT8 BERT-base figure (0.58 ms, A100, b1).
3. Per row: throughput at the largest batch whose p99 fits ``--p99-budget-ms``, each row's
   accuracy change against eager fp32 of the same artifact, and whether a quantized row
   beats fp16 at the same batch (rows that do not are named, with their numbers).
Writes the card's name, versions, both bench reports and the summary to ``--results``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from trained_run import TrainedRun

from slimbert.artifacts import write_json_atomic
from slimbert.bench.report import BenchReport
from slimbert.pipeline import run_recipe
from slimbert.recipe import recipe_from_dict
from slimbert.runtimes import all_runtimes

RESULTS = Path(__file__).parent / "results" / "gpu_serving.json"
REFERENCE = "torch-cuda"  # eager fp32: the accuracy every new row is held to
BASELINE = "torch-cuda-compile-fp16"  # the one-liner a user would try first
TORCH_TARGETS = [REFERENCE, "torch-cuda-fp16", BASELINE, "torch-cuda-graph-fp16", "torch-cuda-graph-bf16",
                 "torch-cuda-graph-fp8", "torch-cuda-graph-int8wo"]
ONNX_TARGETS = ["ort-cuda", "ort-cuda-graph"]
# quantized rows and the fp16 row each must beat at the same batch to be worth keeping
QUANTIZED = {"torch-cuda-graph-fp8": "torch-cuda-graph-fp16",
             "torch-cuda-graph-int8wo": "torch-cuda-graph-fp16"}
BATCH_SIZES = [1, 8, 32]
SWEEP = [32, 64, 128, 256]


def bench_stage(artifacts: list[str], targets: list[str], reference: str, timing: dict | None = None) -> dict:
    """The bench stage; ``timing`` overrides batch sizes, sweep, budget and re-timing."""
    stage = {"type": "bench", "name": "bench", "reference": reference, "batch_sizes": BATCH_SIZES,
             "seq_len": 128, "sweep_seq_lens": SWEEP, "warmup": 20, "min_iters": 50, "budget_s": 3.0,
             "targets": targets, "artifacts": artifacts}
    return {**stage, **(timing or {})}


def trained_models(trained: TrainedRun) -> list[str]:
    """The run's teacher and student folders that exist: a packed run may hold the student alone."""
    models = [m for m in (trained.teacher, trained.student) if Path(m).is_dir()]
    if not models:
        raise SystemExit(f"neither {trained.teacher} nor {trained.student} exists: not a finished run")
    return models


def trained_recipe(run: Path, targets: list[str], with_onnx: bool, timing: dict | None = None) -> dict:
    trained = TrainedRun.load(run)
    stages = [{"type": "export-onnx", "name": "student-onnx"}] if with_onnx else []
    models = trained_models(trained)
    artifacts = models + (["student-onnx"] if with_onnx else [])
    stages.append(bench_stage(artifacts, targets, models[0], timing))
    return {"name": "gpu-serving", "model": trained.student, "seed": trained.seed,
            "dataset": trained.dataset, "stages": stages}


def bert_base_recipe(run: Path, folder: Path, targets: list[str], with_onnx: bool,
                     timing: dict | None = None) -> dict:
    """A random BERT-base (latency only) that borrows the run's tokenizer and test split."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    trained = TrainedRun.load(run)
    tokenizer = AutoTokenizer.from_pretrained(trained.student)
    labels = json.loads((Path(trained.student) / "config.json").read_text())["id2label"]
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, num_labels=len(labels),
                                                     id2label={int(k): v for k, v in labels.items()}))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    stages = [{"type": "export-onnx", "name": "bert-base-onnx"}] if with_onnx else []
    artifacts = [str(folder)] + (["bert-base-onnx"] if with_onnx else [])
    stages.append(bench_stage(artifacts, targets, str(folder), timing))
    return {"name": "gpu-serving-bert-base", "model": str(folder), "seed": trained.seed,
            "dataset": trained.dataset, "stages": stages}


def summarise(report: dict, p99_budget_ms: float) -> list[dict]:
    """Per row: p50 per batch, throughput within the p99 budget, accuracy vs eager fp32."""
    typed = BenchReport.from_dict(report)
    batch_sizes = report["config"]["batch_sizes"]
    out = []
    for row in typed.rows:
        fits = [s for s in row.latency if s["p99_ms"] <= p99_budget_ms]
        best = max(fits, key=lambda s: s["batch_size"] * 1000 / s["p50_ms"], default=None)
        reference = typed.row(row.artifact, REFERENCE)
        baseline = typed.row(row.artifact, BASELINE)
        entry = {
            "artifact": row.artifact, "target": row.target,
            "p50_ms": {b: row.p50(b) for b in batch_sizes},
            "p99_ms": {b: row.latency_at(b).get("p99_ms") for b in batch_sizes},
            "throughput_at_p99_budget": (
                round(best["batch_size"] * 1000 / best["p50_ms"], 1) if best else None),
            "accuracy": row.accuracy["accuracy"],
            "accuracy_change_points_vs_fp32": (
                round(100 * (row.accuracy["accuracy"] - reference.accuracy["accuracy"]), 2)
                if reference else None),
            "speedup_vs_compile_one_liner": {
                b: round(row.speedup(baseline, b), 2) for b in batch_sizes
                if baseline and row.speedup(baseline, b)},
            "setup_seconds": row.setup_seconds,
        }
        fp16 = typed.row(row.artifact, QUANTIZED.get(row.target, ""))
        if fp16:
            speedups = {b: row.speedup(fp16, b) for b in batch_sizes}  # fp16's p50 over this row's
            entry["slower_than_fp16_at_batches"] = [b for b, x in speedups.items()
                                                    if x is not None and x <= 1.0]
        out.append(entry)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"), help="a finished default run")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-serving"))
    parser.add_argument("--p99-budget-ms", type=float, default=5.0)
    parser.add_argument("--skip-bert-base", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--targets", nargs="+", default=TORCH_TARGETS + ONNX_TARGETS)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=BATCH_SIZES)
    parser.add_argument("--no-sweep", action="store_true", help="skip the sequence-length sweep")
    parser.add_argument("--no-recheck", action="store_true", help="skip re-timing every row at the end")
    parser.add_argument("--budget-s", type=float, default=3.0, help="timing budget per row and batch size")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in all_runtimes()]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}")
    if any(b < 1 for b in args.batch_sizes):
        parser.error("--batch-sizes must be positive")
    return args


def timing_overrides(args: argparse.Namespace) -> dict:
    """The bench stage keys the trimming options change."""
    timing = {"batch_sizes": args.batch_sizes, "budget_s": args.budget_s}
    if args.no_sweep:
        timing["sweep_seq_lens"] = None
    if args.no_recheck:
        timing["recheck"] = False
    return timing


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_serving.py needs a CUDA GPU visible to PyTorch")
    runtimes = all_runtimes()
    reasons = {name: runtimes[name].unavailable_reason() for name in args.targets}
    unavailable = {name: why for name, why in reasons.items() if why}
    targets = [t for t in args.targets if t not in unavailable]
    with_onnx = any(runtimes[t].kind == "onnx" for t in targets)
    timing = timing_overrides(args)
    start = time.perf_counter()
    run_recipe(recipe_from_dict(trained_recipe(args.run, targets, with_onnx, timing),
                                str(args.run / "recipe.json")), args.out / "trained")
    trained = json.loads((args.out / "trained" / "report.json").read_text())
    summary = {
        "gpu": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
        "torch": torch.__version__, "cuda": torch.version.cuda, "source_run": str(args.run.resolve()),
        "p99_budget_ms": args.p99_budget_ms, "not_run": unavailable, "timing": timing,
        "packed": json.loads(packed.read_text()) if (packed := args.run / "PACKED.json").is_file() else None,
        "trained": summarise(trained, args.p99_budget_ms),
    }
    reports = {"trained": trained}
    if not args.skip_bert_base:
        folder = args.out / "bert-base-random"
        shutil.rmtree(folder, ignore_errors=True)
        recipe = bert_base_recipe(args.run, folder, targets, with_onnx, timing)
        run_recipe(recipe_from_dict(recipe, str(args.run / "recipe.json")), args.out / "bert-base")
        reports["bert_base"] = json.loads((args.out / "bert-base" / "report.json").read_text())
        summary["bert_base"] = summarise(reports["bert_base"], args.p99_budget_ms)
    summary["total_seconds"] = round(time.perf_counter() - start, 1)
    write_json_atomic(args.results, {**summary, "reports": reports})
    for part in ("trained", "bert_base"):
        for entry in summary.get(part, []):
            print(part, entry["artifact"].split("/")[-1], entry["target"], entry["p50_ms"],
                  "acc", entry["accuracy_change_points_vs_fp32"],
                  "vs one-liner", entry["speedup_vs_compile_one_liner"])
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
