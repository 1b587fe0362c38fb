"""Every ONNX row of a run, reproduced by a plain onnxruntime session with default options.

    python benchmarks/default_loader.py --run runs/default [--results benchmarks/results/default_loader.json]

For each bench report in the run (``<run>/<stage>/report.json``) and each of its ort-cpu
rows, the file is loaded in ``onnxruntime.InferenceSession(path)`` with nothing set, and its
predictions on the report's split are compared with the row's (slimbert.bench.default_loader).
Exits 1 if any row is not reproduced exactly. Also records what measuring ORT's defaults costs:
p50 at batch 1 (128 tokens, all cores) with ORT's SkipLayerNormalization fusion, as every
loader runs it, against the same session with that fusion switched off (what ort-cpu measured
before), interleaved in one process.
"""

from __future__ import annotations

import argparse
import platform
import sys
from functools import partial
from pathlib import Path

from slimbert.artifacts import write_json_atomic
from slimbert.bench.default_loader import plain_session_agreement
from slimbert.bench.latency import interleaved_p50_ms, synthetic_batch
from slimbert.bench.report import load_report
from slimbert.data import load_dataset
from slimbert.models import load_tokenizer
from slimbert.recipe import load_recipe

RESULTS = Path(__file__).parent / "results" / "default_loader.json"


def fusion_cost(path: Path, rounds: int = 8, runs: int = 15) -> dict[str, float]:
    """p50 ms at batch 1 with ORT's defaults and with SkipLayerNormFusion off, interleaved."""
    import onnxruntime as ort

    model, cpu = str(path / "model.onnx"), ["CPUExecutionProvider"]
    sessions = {"defaults": ort.InferenceSession(model, providers=cpu),
                "skiplayernorm_off": ort.InferenceSession(model, providers=cpu,
                                                          disabled_optimizers=["SkipLayerNormFusion"])}
    names = tuple(i.name for i in sessions["defaults"].get_inputs())
    feed = synthetic_batch(1, 128, load_tokenizer(path).vocab_size, names)  # vocabulary-pruned: fewer ids
    p50 = interleaved_p50_ms({k: partial(s.run, None, feed) for k, s in sessions.items()},
                             rounds=rounds, per_round=runs)
    return {**{f"p50_ms_{k}": v for k, v in p50.items()},
            "defaults_over_off": round(p50["defaults"] / p50["skiplayernorm_off"], 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-timing", action="store_true", help="only the agreement check (CI)")
    args = parser.parse_args()
    recipe = load_recipe(args.run / "recipe.json")
    data = load_dataset(recipe.dataset, seed=recipe.seed, base=recipe.base_dir)
    rows, timed = [], set()
    for report_path in sorted(args.run.glob("*/report.json")):
        report = load_report(report_path)
        if not report.rows or report.dataset.get("fingerprint") != data.fingerprint:
            continue  # not a bench report of this run's data
        for result in plain_session_agreement(report, data, recipe.dataset.max_length):
            result["report"] = str(report_path)
            if not args.no_timing and result["path"] not in timed:
                timed.add(result["path"])
                result.update(fusion_cost(Path(result["path"])))
            rows.append(result)
            timing = (f"  defaults {result['p50_ms_defaults']} ms, fusion off "
                      f"{result['p50_ms_skiplayernorm_off']} ms" if "p50_ms_defaults" in result else "")
            print(f"{result['artifact']:32s} {result['agreement']:.2%} of {result['examples']} "
                  f"({result['differing']} differ){timing}")
    machine = platform.processor() or platform.machine()
    write_json_atomic(args.results, {"run": str(args.run), "machine": machine, "rows": rows})
    print(f"wrote {args.results}")
    bad = [r for r in rows if r["agreement"] < 1.0]
    if not rows or bad:
        print(f"{len(bad)} row(s) not reproduced by a default session" if rows else "no ONNX rows found",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
