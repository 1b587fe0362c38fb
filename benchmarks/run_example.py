"""Run an example recipe and keep its numbers: stage metrics and bench reports as one JSON.

    python benchmarks/run_example.py examples/prune-magnitude.yaml [--out runs/default]
        [--results benchmarks/results/prune-magnitude.json]

With ``--out runs/default`` the stages an example shares with the built-in default (same
settings) are reused from a previous ``slimbert run``, so only the new stages run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from slimbert.artifacts import write_json_atomic
from slimbert.pipeline import run_recipe
from slimbert.recipe import load_recipe

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/default"))
    parser.add_argument("--results", type=Path, default=None, help="default: results/<recipe name>.json")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    start = time.perf_counter()
    result = run_recipe(recipe, args.out)
    stages = []
    for stage in result.stages:
        manifest = stage.artifact.manifest
        entry = {"name": stage.name, "status": stage.status, "seconds": round(stage.seconds, 1),
                 "kind": manifest.kind}
        if manifest.kind == "report":
            entry["report"] = json.loads((stage.artifact.path / "report.json").read_text())
        else:
            entry["metrics"] = manifest.metrics
        stages.append(entry)
    out = args.results or RESULTS / f"{recipe.name}.json"
    write_json_atomic(out, {"recipe": str(args.recipe), "seconds": round(time.perf_counter() - start, 1),
                            "stages": stages})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
