"""Bench the teacher and student of a finished default run on the CUDA targets, side by side.

    python benchmarks/gpu_targets.py --run runs/default [--out runs/gpu-targets]
        [--results benchmarks/results/gpu_targets.json]

Takes the fine-tuned teacher and the distilled student of a default run (no retraining) and
measures both on every CUDA runtime that runs on this machine, in one process: PyTorch fp32,
fp16, bf16 and torchao FP8 E4M3 (Ada/Hopper), plus ONNX Runtime's CUDA and TensorRT
providers and a TensorRT engine where those are installed. Accuracy is on the run's own test
split; latency p50/p90/p99 at batch 1 and 32 (length 128) and throughput over length.
Writes the bench report, the GPU's name and the runtimes that could not run (with why).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from trained_run import TrainedRun, write_bench_summary

from slimbert.pipeline import run_recipe
from slimbert.recipe import recipe_from_dict
from slimbert.runtimes import all_runtimes

RESULTS = Path(__file__).parent / "results" / "gpu_targets.json"
TORCH_TARGETS = ["torch-cuda", "torch-cuda-fp16", "torch-cuda-bf16", "torch-cuda-fp8"]
ONNX_TARGETS = ["ort-cuda", "ort-tensorrt"]


def build_recipe(run: Path, targets: list[str], with_onnx: bool) -> dict:
    trained = TrainedRun.load(run)
    teacher, student = trained.teacher, trained.student
    stages = [{"type": "export-onnx", "name": "student-onnx"}] if with_onnx else []
    stages.append({"type": "bench", "name": "bench", "reference": "teacher", "batch_sizes": [1, 32],
                   "seq_len": 128, "sweep_seq_lens": [32, 64, 128, 256], "warmup": 10,
                   "targets": targets,
                   "artifacts": [teacher, student] + (["student-onnx"] if with_onnx else [])})
    return {"name": "gpu-targets", "model": student, "seed": trained.seed, "dataset": trained.dataset,
            "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"), help="a finished default run")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-targets"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_targets.py needs a CUDA GPU visible to PyTorch")
    runtimes = all_runtimes()
    names = TORCH_TARGETS + ONNX_TARGETS + ["tensorrt"]
    reasons = {name: runtimes[name].unavailable_reason() for name in names}
    unavailable = {name: why for name, why in reasons.items() if why}
    targets = [t for t in TORCH_TARGETS + ONNX_TARGETS if t not in unavailable]
    with_onnx = any(t in targets for t in ONNX_TARGETS)
    start = time.perf_counter()
    run_recipe(recipe_from_dict(build_recipe(args.run, targets, with_onnx), str(args.run / "recipe.json")),
               args.out)
    summary = {
        "source_run": str(args.run.resolve()),
        "gpu": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "total_seconds": round(time.perf_counter() - start, 1),
        "not_run": unavailable,
    }
    write_bench_summary(args.out, args.results, summary)


if __name__ == "__main__":
    main()
