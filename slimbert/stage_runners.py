"""What each stage type does with its ``StageContext``: the runners ``stages.STAGES`` names.

Each runner imports its stage's code when it is called, so naming a runner costs nothing
and running a finetune stage does not load ONNX Runtime (nor an export stage the training
code). The reference hooks read only the config: the recipe parser calls them, and they
must stay light too.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slimbert.compress.config import DistillConfig, PruneConfig
    from slimbert.data import EncodedSplit
    from slimbert.stages import StageContext


def _validation_split(ctx: StageContext, n: int = 512) -> EncodedSplit:
    from slimbert.data import encode_split
    from slimbert.models import load_tokenizer

    tokenizer = load_tokenizer(ctx.input.path)
    dev = ctx.data.splits["dev"]
    return encode_split(tokenizer, dev.take(list(range(min(n, len(dev))))), ctx.max_length)


def _calibration_split(ctx: StageContext) -> EncodedSplit:
    """The first ``calibration_examples`` training examples, encoded."""
    from slimbert.data import encode_split
    from slimbert.models import load_tokenizer

    train = ctx.data.splits["train"]
    calibration = train.take(list(range(min(ctx.config.calibration_examples, len(train)))))
    return encode_split(load_tokenizer(ctx.input.path), calibration, ctx.max_length)


def run_finetune(ctx: StageContext) -> dict[str, Any]:
    from slimbert.compress.finetune import finetune

    return finetune(ctx.input.path, ctx.data, ctx.config, ctx.out, ctx.work,
                    max_length=ctx.max_length, seed=ctx.seed, progress=ctx.progress)


def run_distill(ctx: StageContext) -> dict[str, Any]:
    from slimbert.compress.distill import distill

    seed = ctx.seed if ctx.config.seed is None else ctx.config.seed
    return distill(ctx.input.path, ctx.data, ctx.config, ctx.out, ctx.work,
                   max_length=ctx.max_length, seed=seed, progress=ctx.progress,
                   student_dir=ctx.references.get(ctx.config.student_model))


def run_distill_embedding(ctx: StageContext) -> dict[str, Any]:
    from slimbert.compress.distill_embedding import distill_embedding

    seed = ctx.seed if ctx.config.seed is None else ctx.config.seed
    return distill_embedding(ctx.input.path, ctx.data, ctx.config, ctx.out, ctx.work,
                             max_length=ctx.max_length, seed=seed, progress=ctx.progress)


def distill_references(cfg: DistillConfig, earlier: Collection[str]) -> list[str]:
    # a student_model that names an earlier stage starts from that stage's student (TinyBERT's
    # second phase); hub ids, folders and assets are the distill stage's own to resolve
    return [cfg.student_model] if cfg.student_model in earlier else []


def run_qat(ctx: StageContext) -> dict[str, Any]:
    from slimbert.quantize.qat import qat

    return qat(ctx.input.path, ctx.data, ctx.config, ctx.out, ctx.work,
               max_length=ctx.max_length, seed=ctx.seed, progress=ctx.progress)


def run_prune(ctx: StageContext) -> dict[str, Any]:
    from slimbert.compress.prune import prune

    teacher = ctx.config.recovery.teacher if ctx.config.recovery else None
    return prune(ctx.input.path, ctx.data, ctx.config, ctx.out, ctx.work, max_length=ctx.max_length,
                 seed=ctx.seed, progress=ctx.progress,
                 teacher_dir=ctx.references[teacher] if teacher else None)


def prune_references(cfg: PruneConfig, earlier: Collection[str]) -> list[str]:
    return [cfg.recovery.teacher] if cfg.recovery and cfg.recovery.teacher else []


def run_export_onnx(ctx: StageContext) -> dict[str, Any]:
    from slimbert.export.onnx import export_onnx

    return export_onnx(ctx.input.path, ctx.out, ctx.config, _validation_split(ctx), task=ctx.task)


def run_export_tensorrt(ctx: StageContext) -> dict[str, Any]:
    from slimbert.export.tensorrt import export_tensorrt

    return export_tensorrt(ctx.input.path, ctx.out, ctx.config)


def run_quantize_onnx(ctx: StageContext) -> dict[str, Any]:
    from slimbert.quantize.onnx_ptq import quantize_onnx

    dev = _validation_split(ctx, n=len(ctx.data.splits["dev"]))
    return quantize_onnx(ctx.input.path, ctx.out, ctx.config, dev, _calibration_split(ctx), task=ctx.task,
                         progress=ctx.progress)


def run_quantize_torch(ctx: StageContext) -> dict[str, Any]:
    from slimbert.quantize.torch_ptq import quantize_torch

    dev = _validation_split(ctx, n=len(ctx.data.splits["dev"]))
    return quantize_torch(ctx.input.path, ctx.out, ctx.config, dev, _calibration_split(ctx),
                          progress=ctx.progress)


def run_export_ort_mobile(ctx: StageContext) -> dict[str, Any]:
    from slimbert.export.ort_mobile import export_ort_mobile

    return export_ort_mobile(ctx.input.path, ctx.out, ctx.config, _validation_split(ctx))


def run_export_executorch(ctx: StageContext) -> dict[str, Any]:
    from slimbert.export.executorch import export_executorch

    return export_executorch(ctx.input.path, ctx.out, ctx.config, _validation_split(ctx))


def run_bench(ctx: StageContext) -> dict[str, Any]:
    from slimbert.artifacts import write_json_atomic
    from slimbert.bench.config import BenchEntry
    from slimbert.bench.report import pareto_plot, render_html, render_markdown
    from slimbert.bench.run import bench_report
    from slimbert.formats import detect

    # a row is named by the stage, "model", or a folder's own name; the engine checked each format
    entries = [BenchEntry(Path(ref).name, path, "hf-model" if ref == "model" else detect(path))
               for ref, path in ctx.references.items()]
    from slimbert.tasks import get_task

    report = bench_report(entries, ctx.data, ctx.config, max_length=ctx.max_length,
                          name=ctx.recipe_name, progress=ctx.progress, task=ctx.task)
    write_json_atomic(ctx.out / "report.json", report.to_dict())
    (ctx.out / "report.md").write_text(render_markdown(report))
    plot = pareto_plot(report.rows, ctx.out / "pareto.png", metric=get_task(ctx.task).default_metric)
    (ctx.out / "report.html").write_text(render_html(report, plot))
    return {"rows": len(report.rows), "unavailable": len(report.unavailable)}


def run_optimize(ctx: StageContext) -> dict[str, Any]:
    from slimbert.search.stage import run_optimize as search

    return search(ctx)


def check_bench(cfg: Any) -> None:
    """Named targets must exist; only then is the runtime registry (and torch) imported."""
    if cfg.targets:
        from slimbert.bench.run import check_targets

        check_targets(cfg)


def bench_references(cfg: Any, earlier: Collection[str]) -> list[str]:
    # what to measure: the named stages, "model" and folders, else every earlier model stage
    return list(cfg.artifacts) if cfg.artifacts is not None else list(earlier)
