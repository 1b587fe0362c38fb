"""The recipe's stage types: a registry mapping a name to config class and runner.

Adding a stage type (prune, quantize-static, export-mobile, ...) means writing its config
dataclass and a ``run(ctx) -> metrics`` function and registering them here; the engine,
the recipe parser, caching and the CLI pick it up without further changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimbert.artifacts import write_json_atomic
from slimbert.bench.report import pareto_plot, render_html, render_markdown
from slimbert.bench.run import BenchConfig, BenchEntry, run_bench
from slimbert.compress.distill import DistillConfig, distill
from slimbert.compress.finetune import FinetuneConfig, finetune
from slimbert.compress.prune import PruneConfig, prune
from slimbert.compress.qat import QatConfig, qat
from slimbert.compress.torch_quant import TorchQuantizeConfig, quantize_torch
from slimbert.data import DatasetConfig, TextClassificationData, encode_split
from slimbert.export.executorch import ExecutorchConfig, export_executorch
from slimbert.export.onnx import OnnxExportConfig, export_onnx
from slimbert.export.onnx_quant import OnnxQuantizeConfig, quantize_onnx
from slimbert.export.ort_mobile import OrtMobileConfig, export_ort_mobile
from slimbert.export.tensorrt import TensorrtConfig, export_tensorrt
from slimbert.models import load_tokenizer
from slimbert.search.config import OptimizeConfig

MODEL_KINDS = ("hf-model", "onnx", "ort-mobile", "executorch", "tensorrt", "pt2e")


@dataclass
class StageInput:
    """What a stage reads: an earlier artifact or the recipe's base model."""

    name: str
    path: Path
    kind: str
    fingerprint: str


@dataclass
class StageContext:
    name: str
    config: Any
    input: StageInput | None
    data: TextClassificationData
    max_length: int
    seed: int
    out: Path  # temporary artifact folder to write into
    work: Path  # resumable scratch space (checkpoints, cached logits)
    progress: bool
    bench_entries: list[BenchEntry]  # for the bench stage: what to measure
    recipe_name: str
    # other artifacts the config names (e.g. prune's recovery teacher): reference -> folder
    references: dict[str, Path] = field(default_factory=dict)
    # the recipe's dataset (file names absolute) and run folder: for stages that run stages
    # of their own (optimize's candidates), on the same data and beside this run's
    dataset_config: DatasetConfig | None = None
    run_dir: Path | None = None


@dataclass(frozen=True)
class StageType:
    name: str
    config_cls: type
    input_kind: str | None  # kind of artifact it reads; None for bench
    output_kind: str
    run: Callable[[StageContext], dict[str, Any]]
    help: str
    # (config, names of the earlier model stages) -> names of further inputs the config
    # refers to (earlier stages or model folders)
    references: Callable[[Any, Collection[str]], list[str]] | None = None
    # runs on every process of a multi-process launch (DDP); other stages run on the main one
    trains: bool = False


def _validation_split(ctx: StageContext, n: int = 512):
    tokenizer = load_tokenizer(ctx.input.path)
    dev = ctx.data.splits["dev"]
    return encode_split(tokenizer, dev.take(list(range(min(n, len(dev))))), ctx.max_length)


def _run_finetune(ctx: StageContext) -> dict[str, Any]:
    return finetune(ctx.input.path, ctx.data, ctx.config, ctx.out, ctx.work,
                    max_length=ctx.max_length, seed=ctx.seed, progress=ctx.progress)


def _run_distill(ctx: StageContext) -> dict[str, Any]:
    seed = ctx.seed if ctx.config.seed is None else ctx.config.seed
    return distill(ctx.input.path, ctx.data, ctx.config, ctx.out, ctx.work,
                   max_length=ctx.max_length, seed=seed, progress=ctx.progress,
                   student_dir=ctx.references.get(ctx.config.student_model))


def _distill_references(cfg: DistillConfig, earlier: Collection[str]) -> list[str]:
    # a student_model that names an earlier stage starts from that stage's student (TinyBERT's
    # second phase); hub ids, folders and assets are the distill stage's own to resolve
    return [cfg.student_model] if cfg.student_model in earlier else []


def _run_qat(ctx: StageContext) -> dict[str, Any]:
    return qat(ctx.input.path, ctx.data, ctx.config, ctx.out, ctx.work,
               max_length=ctx.max_length, seed=ctx.seed, progress=ctx.progress)


def _run_prune(ctx: StageContext) -> dict[str, Any]:
    teacher = ctx.config.recovery.teacher if ctx.config.recovery else None
    return prune(ctx.input.path, ctx.data, ctx.config, ctx.out, ctx.work, max_length=ctx.max_length,
                 seed=ctx.seed, progress=ctx.progress,
                 teacher_dir=ctx.references[teacher] if teacher else None)


def _prune_references(cfg: PruneConfig, earlier: Collection[str]) -> list[str]:
    return [cfg.recovery.teacher] if cfg.recovery and cfg.recovery.teacher else []


def _run_export_onnx(ctx: StageContext) -> dict[str, Any]:
    return export_onnx(ctx.input.path, ctx.out, ctx.config, _validation_split(ctx))


def _run_export_tensorrt(ctx: StageContext) -> dict[str, Any]:
    return export_tensorrt(ctx.input.path, ctx.out, ctx.config)


def _calibration_split(ctx: StageContext):
    """The first ``calibration_examples`` training examples, encoded."""
    train = ctx.data.splits["train"]
    calibration = train.take(list(range(min(ctx.config.calibration_examples, len(train)))))
    return encode_split(load_tokenizer(ctx.input.path), calibration, ctx.max_length)


def _run_quantize_onnx(ctx: StageContext) -> dict[str, Any]:
    dev = _validation_split(ctx, n=len(ctx.data.splits["dev"]))
    return quantize_onnx(ctx.input.path, ctx.out, ctx.config, dev, _calibration_split(ctx),
                         progress=ctx.progress)


def _run_quantize_torch(ctx: StageContext) -> dict[str, Any]:
    dev = _validation_split(ctx, n=len(ctx.data.splits["dev"]))
    return quantize_torch(ctx.input.path, ctx.out, ctx.config, dev, _calibration_split(ctx),
                          progress=ctx.progress)


def _run_export_ort_mobile(ctx: StageContext) -> dict[str, Any]:
    return export_ort_mobile(ctx.input.path, ctx.out, ctx.config, _validation_split(ctx))


def _run_export_executorch(ctx: StageContext) -> dict[str, Any]:
    return export_executorch(ctx.input.path, ctx.out, ctx.config, _validation_split(ctx))


def _run_optimize(ctx: StageContext) -> dict[str, Any]:
    from slimbert.search.stage import run_optimize

    return run_optimize(ctx)


def _run_bench(ctx: StageContext) -> dict[str, Any]:
    report = run_bench(ctx.bench_entries, ctx.data, ctx.config, max_length=ctx.max_length,
                       name=ctx.recipe_name, progress=ctx.progress)
    write_json_atomic(ctx.out / "report.json", report)
    (ctx.out / "report.md").write_text(render_markdown(report))
    plot = pareto_plot(report["rows"], ctx.out / "pareto.png")
    (ctx.out / "report.html").write_text(render_html(report, plot))
    return {"rows": len(report["rows"]), "unavailable": len(report["unavailable"])}


STAGES: dict[str, StageType] = {
    s.name: s
    for s in (
        StageType("finetune", FinetuneConfig, "hf-model", "hf-model", _run_finetune,
                  "fine-tune a pretrained encoder into a classifier (the teacher)", trains=True),
        StageType("distill", DistillConfig, "hf-model", "hf-model", _run_distill,
                  "distil the input classifier into a shallower student",
                  references=_distill_references, trains=True),
        StageType("prune", PruneConfig, "hf-model", "hf-model", _run_prune,
                  "prune vocabulary, heads/FFN neurons or weights, then recover by distillation",
                  references=_prune_references, trains=True),
        StageType("export-onnx", OnnxExportConfig, "hf-model", "onnx", _run_export_onnx,
                  "export to ONNX, fuse for ONNX Runtime, validate against PyTorch"),
        StageType("quantize-onnx", OnnxQuantizeConfig, "onnx", "onnx", _run_quantize_onnx,
                  "quantize an ONNX graph with ONNX Runtime: dynamic or static INT8, FP8 QDQ; "
                  "optionally keep sensitive nodes in fp32 to meet an accuracy tolerance"),
        StageType("quantize-torch", TorchQuantizeConfig, "hf-model", "pt2e", _run_quantize_torch,
                  "PyTorch-side INT8 with PT2E: torchao X86InductorQuantizer (static or dynamic) or "
                  "Intel Neural Compressor autotune within a dev-accuracy tolerance; saves a "
                  "torch.export program (model.pt2) that torch.compile runs with oneDNN INT8 kernels"),
        StageType("qat", QatConfig, "hf-model", "onnx", _run_qat,
                  "quantization-aware training (INT8 fake quantization, distilled from the input "
                  "model), exported as a Q/DQ ONNX graph for ONNX Runtime and TensorRT", trains=True),
        StageType("export-ort-mobile", OrtMobileConfig, "onnx", "ort-mobile", _run_export_ort_mobile,
                  "convert ONNX to ORT format for mobile builds, with the reduced-build op list"),
        StageType("export-executorch", ExecutorchConfig, "hf-model", "executorch", _run_export_executorch,
                  "lower to an ExecuTorch .pte with the XNNPACK delegate (fp32 or PT2E int8)"),
        StageType("export-tensorrt", TensorrtConfig, "onnx", "tensorrt", _run_export_tensorrt,
                  "package an (unfused) ONNX graph for TensorRT with its trtexec build command; "
                  "build the engine here when TensorRT and a GPU exist"),
        StageType("optimize", OptimizeConfig, "hf-model", "report", _run_optimize,
                  "search distillation depth x pruning x quantization x runtime for the fastest "
                  "artifact per target within an accuracy budget (chosen on dev, confirmed on test)"),
        StageType("bench", BenchConfig, None, "report", _run_bench,
                  "measure accuracy, latency and size of artifacts on every target"),
    )
}


def detect_kind(folder: Path) -> str | None:
    """Kind of a model folder that may lack a manifest (e.g. a user's own export)."""
    from slimbert.export.executorch import PTE_FILE
    from slimbert.export.onnx import ONNX_FILE
    from slimbert.export.ort_mobile import ORT_FILE
    from slimbert.export.pt2e import PT2_FILE
    from slimbert.export.tensorrt import ENGINE_FILE

    manifest = folder / "manifest.json"
    if manifest.is_file():
        return json.loads(manifest.read_text()).get("kind")
    if (folder / ENGINE_FILE).is_file():
        return "tensorrt"
    if (folder / ONNX_FILE).is_file():
        return "onnx"
    if (folder / ORT_FILE).is_file():
        return "ort-mobile"
    if (folder / PTE_FILE).is_file():
        return "executorch"
    if (folder / PT2_FILE).is_file():
        return "pt2e"
    if (folder / "config.json").is_file():
        return "hf-model"
    return None
