"""Reproduce the README's quantization table: every quantization of the default student, side by side.

    python benchmarks/quantization.py [--out runs/default] [--results PATH] [--student FOLDER]

Runs examples/quantization.yaml. With ``--out runs/default`` (the default) the trained
teacher and student of a previous ``slimbert run`` are reused, so only the quantizations
and the bench run. Writes benchmarks/results/quantization.json: per artifact the test
accuracy and its change from the fp32 ONNX student, p50 latency at batch 1 / seq 128 and
the speed-up over the fp32 ONNX measured in the same run, size, and what each
quantization chose (INT8 types and why, the nodes or layers kept in fp32 by the repair
or the autotune).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from slimbert.artifacts import write_json_atomic
from slimbert.bench.report import BenchReport, load_report
from slimbert.pipeline import run_recipe
from slimbert.recipe import load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "quantization.json"
RECIPE = ROOT / "examples" / "quantization.yaml"
REFERENCE = "student-onnx"


def summarize(result, report: BenchReport) -> dict:
    metrics = {s.name: s.artifact.manifest.metrics for s in result.stages}
    ref = report.find(REFERENCE)[0]
    rows = []
    for row in report.rows:
        quant = metrics.get(row.artifact, {})
        repair = quant.get("repair") or {}
        rows.append({
            "artifact": row.artifact,
            "test_accuracy": row.accuracy["accuracy"],
            "points_vs_fp32": 100 * (row.accuracy["accuracy"] - ref.accuracy["accuracy"]),
            "p50_ms_b1": row.p50(report.smallest_batch),
            "speedup_vs_fp32_onnx": row.speedup_b1,
            "size_mb": row.size_mb,
            "mode": quant.get("mode"),
            "int8_formats": quant.get("int8_formats"),
            "dev_drop_points": quant.get("dev_drop_points"),
            "fallback": repair.get("fallback"),  # what the repair's nodes became: dynamic or fp32
            "fallback_nodes": repair.get("fallback_nodes"),
            "backend": quant.get("backend"),  # quantize-torch rows: torchao-x86 or inc
            "fp32_layers": quant.get("fp32_layers"),
            "repair_initial_dev_drop_points": repair.get("initial_dev_drop_points"),
        })
    return {"rows": rows, "environment": report.environment, "bench": report.to_dict()}


def from_student(student: Path):
    """examples/quantization.yaml with ``student`` as its model: no training stages."""
    raw = yaml.safe_load(RECIPE.read_text())
    raw["model"] = str(student.resolve())
    raw["stages"] = [s for s in raw["stages"] if s["name"] not in ("teacher", "student")]
    for stage in raw["stages"]:
        if stage.get("input") == "student":
            stage["input"] = "model"
    return recipe_from_dict(raw, "quantization (from a trained student)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/default"))
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--student", type=Path, default=None,
                        help="a trained student folder to quantize instead of the recipe's teacher and "
                        "student stages (e.g. runs/default/student)")
    args = parser.parse_args()
    recipe = load_recipe(RECIPE) if args.student is None else from_student(args.student)
    result = run_recipe(recipe, args.out)
    summary = summarize(result, load_report(args.out / "bench-quantization" / "report.json"))
    write_json_atomic(args.results, summary)
    for row in summary["rows"]:
        print(f"{row['artifact']:22s} {100 * row['test_accuracy']:6.2f}% ({row['points_vs_fp32']:+.2f}) "
              f"{row['p50_ms_b1']:6.2f} ms  x{row['speedup_vs_fp32_onnx']:.2f}  {row['size_mb']:5.1f} MB")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
