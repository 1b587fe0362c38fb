"""`slimbert optimize` on the built-in default, one budget after another, in one folder.

    python benchmarks/optimize.py [--out runs/optimize] [--budgets 1.0 2.0]
        [--targets ort-cpu] [--results benchmarks/results/optimize.json]

Each budget runs the whole command's work through the Python API (`slimbert.optimize`),
the teacher fine-tune included on the first; later budgets reuse the teacher and every
candidate they share (the search's stages are content-hashed). Candidates are ranked on a
selection split held out of the training data (`rank_split`). Per budget the JSON records
the wall time, how many stages ran and were reused, and per target the chosen artifact with
its confirmation on test: `test_drop_points` (with its paired-bootstrap 95% CI and McNemar
p) and the p50 speed-ups at batch 1, 128 tokens, side by side in the same bench run:
`speedup_vs_teacher_onnx` (the teacher's fp32 ONNX graph on ort-cpu) and
`speedup_vs_teacher_torch` (the PyTorch fp32 teacher; less stable across machines).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import slimbert
from slimbert.artifacts import write_json_atomic

RESULTS = Path(__file__).parent / "results" / "optimize.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/optimize"))
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--targets", nargs="+", default=["ort-cpu"])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = []
    for budget in args.budgets:
        start = time.perf_counter()
        result = slimbert.optimize(targets=args.targets, max_drop=budget, out=args.out)
        wall = time.perf_counter() - start
        stages = json.loads((args.out / "run.json").read_text())["stages"]
        teacher = next((s for s in stages if s["type"] == "finetune"), None)
        teacher_seconds = (json.loads((Path(teacher["path"]) / "manifest.json").read_text())
                           .get("metrics", {}).get("train_seconds", 0.0) if teacher else 0.0)
        candidates = json.loads((args.out / "candidates" / "costs.json").read_text())
        runs.append({
            "max_drop": budget, "wall_seconds": round(wall, 1),
            # what this budget's search costs from an empty folder: the teacher's fine-tune and every
            # candidate stage it used, at the seconds each took when it was made (here or earlier)
            "from_empty_seconds": round(teacher_seconds + result.report.get("made_seconds", 0.0), 1),
            "stages_ran": [s["name"] for s in stages if s["status"] == "ran"],
            "candidate_stages_made_so_far": len(candidates),
            "chosen": {t: {"artifact": (c.get("point") or {}).get("artifact"),
                           "runtime": (c.get("point") or {}).get("runtime"),
                           # on the ranking split (held-out selection split, or dev), before test
                           "rank_drop_points": (c.get("point") or {}).get("drop"),
                           "rank_drop_bound": (c.get("point") or {}).get("drop_bound"),
                           **(c.get("confirmation") or {})}
                       for t, c in result.report["chosen"].items()},
            "rank_split": result.report["rank_split"], "rank_examples": result.report["rank_examples"],
            "not_tried": result.report["not_tried"],
            "candidates": len(result.report["candidates"]),
        })
        print(json.dumps(runs[-1]["chosen"], indent=1))
        write_json_atomic(args.results, {"machine": platform.processor() or platform.machine(),
                                         "cores": __import__("os").cpu_count(), "runs": runs})
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
