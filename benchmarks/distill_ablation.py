"""Issue 3 ablation: which distillation losses matter at 3, 2 and 1 layers.

    python benchmarks/distill_ablation.py --run <default run folder> [--out runs/distill-ablation]
        [--depths 2 3 1] [--variants ce kd inter aug] [--seeds 1 2 3]
        [--results benchmarks/results/distill_ablation.json]

Starts from the fine-tuned teacher of a finished default run (and its dataset settings from
recipe.json), and distils one student per (depth, variant) through the engine, all from the
same initialisation (the teacher's layers: 0,2,4 / 0,3 / 0):
- ``ce``: hard labels only;
- ``kd``: + soft targets (T=2, 0.7 KD + 0.3 CE), the default recipe's loss;
- ``kd-plain``: the same loss in the stack notes' reference setting (random batches, lr 5e-5,
  4 epochs), to tell the loss from the schedule;
- ``inter``: + hidden-state cosine and MiniLM attention KL (uniform layer map);
- ``aug``: + TinyBERT augmentation (embedding-neighbour word replacement, 2 copies per
  sentence, labelled by the teacher);
- ``kd-aug4``, ``kd-aug8``: ``kd`` on 4 (8) augmented copies per sentence, without the
  intermediate losses;
- ``inter-aug4``: ``inter`` on 4 augmented copies per sentence;
- ``tinybert-aug4``: TinyBERT's two phases on 4 augmented copies: first the hidden-state and
  attention losses alone, then ``kd-aug4`` starting from that student.
With ``--seeds``, each cell is trained once per training seed on the same split (the stage's
``seed``; the recipe's seed still draws the split) and the table shows mean ± sd: one test
split of 2114 sentences has a standard error of about 0.8 points, so single runs rank
variants only roughly. Every student is its own stage, so an interrupted run resumes
(finished stages are reused, an interrupted one continues from its checkpoint). The JSON is
rewritten after each student.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

from slimbert.artifacts import write_json_atomic
from slimbert.pipeline import run_recipe
from slimbert.recipe import recipe_from_dict

RESULTS = Path(__file__).parent / "results" / "distill_ablation.json"
LAYERS = {3: [0, 2, 4], 2: [0, 3], 1: [0]}
TRAIN = {"epochs": 6, "lr": 1e-4, "batch_size": 32, "evals_per_epoch": 2, "patience": 2}
VARIANTS = {
    "ce": {"alpha_kd": 0.0, "alpha_ce": 1.0},
    "kd": {"alpha_kd": 0.7, "alpha_ce": 0.3, "temperature": 2.0},
    "inter": {"alpha_kd": 0.7, "alpha_ce": 0.3, "temperature": 2.0,
              "alpha_hidden": 1.0, "alpha_attention": 1.0},
    # the stack notes' reference setting for logit KD: random (not length-grouped) batches,
    # lr 5e-5, 4 epochs; the best of the 4 epoch-end checkpoints on dev
    "kd-plain": {"alpha_kd": 0.7, "alpha_ce": 0.3, "temperature": 2.0, "length_pool": 1,
                 "lr": 5e-5, "epochs": 4, "evals_per_epoch": 1, "patience": 0},
    # three times the examples per epoch: half the epochs, evaluated as often per example
    "aug": {"alpha_kd": 0.7, "alpha_ce": 0.3, "temperature": 2.0,
            "alpha_hidden": 1.0, "alpha_attention": 1.0,
            "augment": {"copies": 2}, "epochs": 3, "evals_per_epoch": 4},
    # soft targets alone on five times the examples (4 augmented copies per sentence)
    "kd-aug4": {"alpha_kd": 0.7, "alpha_ce": 0.3, "temperature": 2.0,
                "augment": {"copies": 4}, "epochs": 3, "evals_per_epoch": 4},
    # does the gain keep growing with the number of copies?
    "kd-aug8": {"alpha_kd": 0.7, "alpha_ce": 0.3, "temperature": 2.0,
                "augment": {"copies": 8}, "epochs": 3, "evals_per_epoch": 4},
    "inter-aug4": {"alpha_kd": 0.7, "alpha_ce": 0.3, "temperature": 2.0,
                   "alpha_hidden": 1.0, "alpha_attention": 1.0,
                   "augment": {"copies": 4}, "epochs": 3, "evals_per_epoch": 4},
    "tinybert-aug4": {"alpha_kd": 0.7, "alpha_ce": 0.3, "temperature": 2.0,
                      "augment": {"copies": 4}, "epochs": 3, "evals_per_epoch": 4},
}
# variants trained in two stages: this first one, then the variant's own from its student
FIRST_PHASE = {
    # intermediate layers only; the head stays the teacher's until phase two, so no early stop
    "tinybert-aug4": {"alpha_kd": 0.0, "alpha_ce": 0.0, "alpha_hidden": 1.0, "alpha_attention": 1.0,
                      "augment": {"copies": 4}, "epochs": 3, "evals_per_epoch": 4, "patience": 0},
}


def stages(depth: int, variant: str, seed: int | None = None) -> list[dict]:
    """The distill stages of one cell: one, or two where the variant has a first phase."""
    name = f"student-{depth}l-{variant}" + ("" if seed is None else f"-s{seed}")
    common = {"type": "distill", "input": "model", **TRAIN, **({} if seed is None else {"seed": seed})}
    if variant not in FIRST_PHASE:
        return [{**common, "name": name, "layers": LAYERS[depth], **VARIANTS[variant]}]
    first = {**common, "name": f"{name}-phase1", "layers": LAYERS[depth], **FIRST_PHASE[variant]}
    return [first, {**common, "name": name, "student_model": first["name"], **VARIANTS[variant]}]


def distil(run: Path, base: dict, specs: list[dict], out: Path) -> list:
    """Run distill stages from ``run``'s teacher on its dataset; their artifacts."""
    recipe = recipe_from_dict({"name": "distill-ablation", "model": str(run / "teacher"),
                               "seed": base["seed"], "dataset": base["dataset"], "stages": specs})
    return [result.artifact for result in run_recipe(recipe, out).stages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished default run (its teacher)")
    parser.add_argument("--out", type=Path, default=Path("runs/distill-ablation"))
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 3, 1], choices=sorted(LAYERS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[None],
                        help="training seeds per cell (default: the recipe's seed only)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    base = json.loads((args.run / "recipe.json").read_text())
    rows = json.loads(args.results.read_text())["rows"] if args.results.is_file() else []
    done = {(r["depth"], r["variant"], r.get("seed")) for r in rows}
    # seeds outermost: a run cut short still has every cell at the first seeds
    for seed, depth, variant in itertools.product(args.seeds, args.depths, args.variants):
        if (depth, variant, seed) in done:
            continue
        start = time.perf_counter()
        specs = stages(depth, variant, seed)
        *first, last = distil(args.run, base, specs, args.out)
        m = last.manifest.metrics
        first_phase = {}
        if first:
            m1 = first[0].manifest.metrics
            first_phase = {"first_phase_train_seconds": m1["train_seconds"],
                           "first_phase_test_accuracy": m1["test"]["accuracy"]}
        rows.append({"depth": depth, "variant": variant, "seed": seed, "config": specs[-1],
                     "test_accuracy": m["test"]["accuracy"], "test_macro_f1": m["test"]["macro_f1"],
                     "teacher_test_accuracy": m["teacher_test"]["accuracy"],
                     "retention": m["retention"], "dev_accuracy": m["dev"]["accuracy"],
                     "train_examples": m["train_examples"], "steps": m["steps"],
                     "train_seconds": m["train_seconds"], **first_phase,
                     "wall_seconds": round(time.perf_counter() - start, 1),
                     "params": m["params"]})
        write_json_atomic(args.results, {"teacher": str(args.run / "teacher"), "rows": rows})
        print(f"{depth}L {variant} seed {seed}: test {m['test']['accuracy']:.4f} "
              f"(retention {m['retention']:.4f})", flush=True)
    print(markdown_table(rows))
    print(f"wrote {args.results}")


def markdown_table(rows: list[dict]) -> str:
    """Test accuracy (retention) per depth and variant, as in README.md; mean ± sd over seeds."""
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    lines = ["| student | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for depth in sorted({r["depth"] for r in rows}, reverse=True):
        cells = []
        for variant in variants:
            cell = [r for r in rows if (r["depth"], r["variant"]) == (depth, variant)]
            cells.append(_cell(cell) if cell else "")
        label = f"{depth} layer{'s' if depth > 1 else ''} ({', '.join(map(str, LAYERS[depth]))})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(rows: list[dict]) -> str:
    acc = [r["test_accuracy"] for r in rows]
    retention = statistics.mean(r["retention"] for r in rows)
    if len(rows) == 1:
        return f"{acc[0]:.2%} ({retention:.1%})"
    return f"{statistics.mean(acc):.2%} ± {statistics.stdev(acc):.2%} ({retention:.1%}, n={len(rows)})"


if __name__ == "__main__":
    main()
