"""slimbert: compress, export, benchmark and gate BERT-family text classifiers.

The Python API mirrors the CLI: every command has a function (``compress_model``,
``export_model``, ``bench_models``, ``gate_models``, ``deploy_model``, ``list_targets``,
``list_assets``, ``fetch_assets``) beside the step functions and configs. Heavy libraries
(torch, onnxruntime) load on first use, so ``import slimbert`` stays cheap.

    >>> import slimbert
    >>> result = slimbert.run_recipe(slimbert.load_recipe(), "runs/default")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_recipe": "slimbert.recipe",
    "recipe_from_dict": "slimbert.recipe",
    "run_recipe": "slimbert.pipeline",
    "plan_recipe": "slimbert.pipeline",
    "load_dataset": "slimbert.data",
    "DatasetConfig": "slimbert.data",
    "encode_split": "slimbert.data",
    "resolve_model": "slimbert.models",
    "load_tokenizer": "slimbert.models",
    "load_classifier": "slimbert.models",
    "prune": "slimbert.compress.prune",
    "PruneConfig": "slimbert.compress.prune",
    "RecoveryConfig": "slimbert.compress.prune",
    "qat": "slimbert.quantize.qat",
    "QatConfig": "slimbert.quantize.config",
    "quantize_torch": "slimbert.quantize.torch_ptq",
    "TorchQuantizeConfig": "slimbert.quantize.config",
    "export_ort_mobile": "slimbert.export.ort_mobile",
    "OrtMobileConfig": "slimbert.export.ort_mobile",
    "export_executorch": "slimbert.export.executorch",
    "ExecutorchConfig": "slimbert.export.executorch",
    "export_tensorrt": "slimbert.export.tensorrt",
    "TensorrtConfig": "slimbert.export.tensorrt",
    "finetune": "slimbert.compress.finetune",
    "FinetuneConfig": "slimbert.compress.finetune",
    "distill": "slimbert.compress.distill",
    "DistillConfig": "slimbert.compress.distill",
    "export_onnx": "slimbert.export.onnx",
    "OnnxExportConfig": "slimbert.export.onnx",
    "quantize_onnx": "slimbert.quantize.onnx_ptq",
    "OnnxQuantizeConfig": "slimbert.quantize.config",
    "run_bench": "slimbert.bench.run",
    "BenchConfig": "slimbert.bench.run",
    "get_runtime": "slimbert.runtimes",
    "GateConfig": "slimbert.gate",
    "evaluate_gate": "slimbert.gate",
    "fetch_asset": "slimbert.assets",
    "SlimbertError": "slimbert.errors",
    # one function per CLI command (slimbert.api)
    "compress_model": "slimbert.api",
    "export_model": "slimbert.api",
    "bench_models": "slimbert.api",
    "gate_models": "slimbert.api",
    "deploy_model": "slimbert.api",
    "device_status": "slimbert.api",
    "rollback_device": "slimbert.api",
    "list_targets": "slimbert.api",
    "list_assets": "slimbert.api",
    "fetch_assets": "slimbert.api",
    "BenchReport": "slimbert.bench.report",
    "BenchRow": "slimbert.bench.report",
    "load_report": "slimbert.bench.report",
    "EXPORT_FORMATS": "slimbert.adhoc",
    "optimize": "slimbert.search.api",
    "OptimizeConfig": "slimbert.search.config",
}

__all__ = sorted(_API)


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'slimbert' has no attribute {name!r}")
