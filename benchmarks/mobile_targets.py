"""Bench the CPU and mobile targets side by side on an already trained default run.

    python benchmarks/mobile_targets.py --run runs/default [--out runs/mobile-targets]

Takes the fine-tuned teacher and the distilled student of a finished default run (so no
retraining), re-exports the student (ONNX, INT8, ORT format, ExecuTorch fp32 and INT8) with
the run's own dataset settings, and benches every artifact on its targets in one process:
torch-cpu (fp32 and bf16), ort-cpu (fp32 and INT8), ort-mobile and executorch-xnnpack. Writes
benchmarks/results/mobile_targets.json (the bench report plus the export metrics, op
coverage included). Mobile rows run on this CPU with a phone's thread count.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from trained_run import TrainedRun, write_bench_summary

from slimbert.pipeline import run_recipe
from slimbert.recipe import recipe_from_dict

RESULTS = Path(__file__).parent / "results" / "mobile_targets.json"


def build_recipe(run: Path) -> dict:
    trained = TrainedRun.load(run)
    teacher, student = trained.teacher, trained.student
    return {
        "name": "mobile-targets", "model": student, "seed": trained.seed, "dataset": trained.dataset,
        "stages": [
            {"type": "export-onnx", "name": "student-onnx"},
            {"type": "quantize-onnx", "name": "student-int8", "input": "student-onnx"},
            {"type": "export-ort-mobile", "name": "student-int8-ort", "input": "student-int8"},
            {"type": "export-executorch", "name": "student-pte", "input": "model", "precision": "fp32"},
            {"type": "export-executorch", "name": "student-pte-int8", "input": "model", "precision": "int8"},
            # static activations, calibrated on 8 dev batches; its own fidelity floor so it is measured
            {"type": "export-executorch", "name": "student-pte-int8-static", "input": "model",
             "precision": "int8", "activations": "static", "min_agreement": 0.9},
            {"type": "bench", "name": "bench", "reference": "teacher", "batch_sizes": [1, 32], "seq_len": 128,
             "targets": ["torch-cpu", "torch-cpu-bf16", "ort-cpu", "ort-mobile", "executorch-xnnpack"],
             "artifacts": [teacher, student, "student-onnx", "student-int8", "student-int8-ort",
                           "student-pte", "student-pte-int8", "student-pte-int8-static"]},
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"), help="a finished default run")
    parser.add_argument("--out", type=Path, default=Path("runs/mobile-targets"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--rebench", action="store_true", help="measure again, reusing the exports")
    args = parser.parse_args()
    if args.rebench:
        import shutil

        shutil.rmtree(args.out / "bench", ignore_errors=True)
    load_at_start = os.getloadavg()
    start = time.perf_counter()
    result = run_recipe(recipe_from_dict(build_recipe(args.run), str(args.run / "recipe.json")), args.out)
    summary = {
        "source_run": str(args.run.resolve()),
        "total_seconds": round(time.perf_counter() - start, 1),
        # the machine may be shared with other jobs: how busy it was (1, 5, 15 min)
        "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(),
        "stages": [{"name": s.name, "status": s.status, "seconds": round(s.seconds, 1),
                    "metrics": s.artifact.manifest.metrics} for s in result.stages if s.type != "bench"],
    }
    write_bench_summary(args.out, args.results, summary)


if __name__ == "__main__":
    main()
