"""Reproduce the README's default-pipeline table: time every stage and bench every artifact.

    python benchmarks/default_pipeline.py [--out runs/bench-default] [--fresh] [--results PATH]

Runs the built-in default recipe (fine-tune MiniLM-L6, distil to 3 layers, export, INT8,
bench) and writes benchmarks/results/default_pipeline.json: stage wall times, the bench
report (all artifacts measured side by side in one process), and the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from slimbert.artifacts import write_json_atomic
from slimbert.pipeline import run_recipe
from slimbert.recipe import load_recipe

RESULTS = Path(__file__).parent / "results" / "default_pipeline.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-default"))
    parser.add_argument("--fresh", action="store_true", help="delete the run folder first (full rerun)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.out, ignore_errors=True)
    start = time.perf_counter()
    result = run_recipe(load_recipe(), args.out)
    total = time.perf_counter() - start
    report = json.loads((args.out / "report.json").read_text())
    metrics = {s.name: s.artifact.manifest.metrics for s in result.stages}
    summary = {
        "total_seconds": round(total, 1),
        "stages": [{"name": s.name, "status": s.status, "seconds": round(s.seconds, 1)}
                   for s in result.stages],
        "teacher_test_accuracy": metrics["teacher"]["test"]["accuracy"],
        "student_test_accuracy": metrics["student"]["test"]["accuracy"],
        "student_retention": metrics["student"]["retention"],
        "bench": report,
    }
    write_json_atomic(args.results, summary)
    print(f"wrote {args.results} ({total:.0f} s)")


if __name__ == "__main__":
    main()
