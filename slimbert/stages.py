"""The recipe's stage types: a registry mapping a name to its config class and runner.

Config classes and runners are named by "module:attribute" strings and imported when a
recipe uses the stage (config) or runs it (runner), as Olive's pass registry names its
passes: parsing a recipe or planning a run (`slimbert run --dry-run`) then imports no
torch, transformers or ONNX Runtime. Config classes live in modules that import none of
them (``compress/config.py``, ``export/config.py``, ``bench/config.py``); runners in
``stage_runners.py``, which imports each stage's code only inside its runner.

Adding a stage type means writing its config dataclass and a ``run(ctx) -> metrics``
function and registering their names here; the engine, the recipe parser, caching and the
CLI pick it up without further changes. ``tests/test_stages.py`` imports every name, so a
typo fails CI.

Words: an artifact's *format* is what its files are ("hf-model", "onnx", ..., "report";
the manifest's ``kind`` key); a stage's *type* is its registry name ("finetune", ...).
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slimbert.data import DatasetConfig, TextClassificationData

from slimbert.formats import MODEL_FORMATS
from slimbert.tasks import get_task


def load_object(ref: str) -> Any:
    """The attribute a "package.module:attribute" string names, importing its module."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass
class StageInput:
    """What a stage reads: an earlier artifact or the recipe's base model."""

    name: str
    path: Path
    format: str  # artifact format, e.g. "hf-model"
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
    recipe_name: str
    # other artifacts the config names (e.g. prune's recovery teacher): reference -> folder
    references: dict[str, Path] = field(default_factory=dict)
    # the recipe's dataset (file names absolute) and run folder: for stages that run stages
    # of their own (optimize's candidates), on the same data and beside this run's
    dataset_config: DatasetConfig | None = None
    run_dir: Path | None = None
    task: str = "text-classification"  # slimbert.tasks.DEFAULT_TASK; what the stage's model does


@dataclass(frozen=True)
class StageType:
    name: str
    config: str  # "module:Class" of its config dataclass, in a module that imports no torch
    input_format: str | None  # artifact format it reads; None for bench
    output_format: str
    runner: str  # "module:function" taking a StageContext and returning the stage's metrics
    help: str
    # "module:function": (config, names of the earlier model stages) -> names of further
    # inputs the config refers to (earlier stages or model folders); no torch either
    referrer: str | None = None
    reference_kinds: tuple[str, ...] = ("hf-model",)  # what a referenced model folder may hold
    checker: str | None = None  # "module:function" raising on settings this machine cannot run
    # "module:function": (config, the input model's config.json) raising on settings that model
    # cannot serve (teacher layers it lacks); read at plan time, without torch
    input_checker: str | None = None
    keeps_layers: bool = False  # its output has its input's layers (what an input check reads)
    # runs on every process of a multi-process launch (DDP); other stages run on the main one
    trains: bool = False

    @property
    def config_cls(self) -> type:
        return load_object(self.config)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Run the stage: only now are its libraries (torch, ONNX Runtime, ...) imported.

        A task may run a stage type its own way (an embedding student learns embeddings,
        not logits): its registry entry names that runner, and this is the one place it is read.
        """
        return load_object(get_task(ctx.task).runners.get(self.name, self.runner))(ctx)

    def check(self, config: Any) -> None:
        """Refuse settings only this machine can judge (a bench target no runtime has)."""
        if self.checker:
            load_object(self.checker)(config)

    def check_input(self, config: Any, model_config: dict[str, Any] | None) -> None:
        """Refuse settings the input model cannot serve, when its config.json is known."""
        if self.input_checker and model_config is not None:
            load_object(self.input_checker)(config, model_config)

    def references(self, config: Any, earlier: Collection[str]) -> list[str]:
        """Further artifacts ``config`` names (e.g. prune's recovery teacher)."""
        return list(load_object(self.referrer)(config, earlier)) if self.referrer else []


_RUNNERS = "slimbert.stage_runners"

STAGES: dict[str, StageType] = {
    s.name: s
    for s in (
        StageType("finetune", "slimbert.compress.config:FinetuneConfig", "hf-model", "hf-model",
                  f"{_RUNNERS}:run_finetune",
                  "fine-tune a pretrained encoder into a classifier (the teacher)", trains=True,
                  keeps_layers=True),
        StageType("distill", "slimbert.compress.config:DistillConfig", "hf-model", "hf-model",
                  f"{_RUNNERS}:run_distill",
                  "distil the input classifier into a shallower student",
                  referrer=f"{_RUNNERS}:distill_references", trains=True,
                  input_checker="slimbert.compress.config:check_distill_input"),
        StageType("prune", "slimbert.compress.config:PruneConfig", "hf-model", "hf-model",
                  f"{_RUNNERS}:run_prune",
                  "prune vocabulary, heads/FFN neurons or weights, then recover by distillation",
                  referrer=f"{_RUNNERS}:prune_references", trains=True),
        StageType("export-onnx", "slimbert.export.config:OnnxExportConfig", "hf-model", "onnx",
                  f"{_RUNNERS}:run_export_onnx",
                  "export to ONNX, fuse for ONNX Runtime, validate against PyTorch"),
        StageType("quantize-onnx", "slimbert.quantize.config:OnnxQuantizeConfig", "onnx", "onnx",
                  f"{_RUNNERS}:run_quantize_onnx",
                  "quantize an ONNX graph with ONNX Runtime: dynamic or static INT8, FP8 QDQ; "
                  "optionally keep sensitive nodes in fp32 to meet an accuracy tolerance"),
        StageType("quantize-torch", "slimbert.quantize.config:TorchQuantizeConfig", "hf-model", "pt2e",
                  f"{_RUNNERS}:run_quantize_torch",
                  "PyTorch-side INT8 with PT2E: torchao X86InductorQuantizer (static or dynamic) or "
                  "Intel Neural Compressor autotune within a dev-accuracy tolerance; saves a "
                  "torch.export program (model.pt2) that torch.compile runs with oneDNN INT8 kernels"),
        StageType("qat", "slimbert.quantize.config:QatConfig", "hf-model", "onnx", f"{_RUNNERS}:run_qat",
                  "quantization-aware training (INT8 fake quantization, distilled from the input "
                  "model), exported as a Q/DQ ONNX graph for ONNX Runtime and TensorRT", trains=True),
        StageType("export-ort-mobile", "slimbert.export.config:OrtMobileConfig", "onnx", "ort-mobile",
                  f"{_RUNNERS}:run_export_ort_mobile",
                  "convert ONNX to ORT format for mobile builds, with the reduced-build op list"),
        StageType("export-executorch", "slimbert.export.config:ExecutorchConfig", "hf-model", "executorch",
                  f"{_RUNNERS}:run_export_executorch",
                  "lower to an ExecuTorch .pte with the XNNPACK delegate (fp32 or PT2E int8)"),
        StageType("export-tensorrt", "slimbert.export.config:TensorrtConfig", "onnx", "tensorrt",
                  f"{_RUNNERS}:run_export_tensorrt",
                  "package an (unfused) ONNX graph for TensorRT with its trtexec build command; "
                  "build the engine here when TensorRT and a GPU exist"),
        StageType("optimize", "slimbert.search.config:OptimizeConfig", "hf-model", "report",
                  f"{_RUNNERS}:run_optimize",
                  "search distillation depth x pruning x quantization x runtime for the fastest "
                  "artifact per target within an accuracy budget (chosen on dev, confirmed on test)"),
        StageType("bench", "slimbert.bench.config:BenchConfig", None, "report", f"{_RUNNERS}:run_bench",
                  "measure accuracy, latency and size of artifacts on every target",
                  referrer=f"{_RUNNERS}:bench_references", reference_kinds=MODEL_FORMATS,
                  checker=f"{_RUNNERS}:check_bench"),
    )
}

