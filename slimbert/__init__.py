"""slimbert: compress, export, benchmark and gate BERT-family text classifiers.

The Python API mirrors the CLI. Heavy libraries (torch, onnxruntime) load on first use,
so ``import slimbert`` stays cheap.

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
    "qat": "slimbert.compress.qat",
    "QatConfig": "slimbert.compress.qat",
    "quantize_torch": "slimbert.compress.torch_quant",
    "TorchQuantizeConfig": "slimbert.compress.torch_quant",
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
    "quantize_onnx": "slimbert.export.onnx_quant",
    "OnnxQuantizeConfig": "slimbert.export.onnx_quant",
    "run_bench": "slimbert.bench.run",
    "BenchConfig": "slimbert.bench.run",
    "get_runtime": "slimbert.runtimes",
    "GateConfig": "slimbert.gate",
    "evaluate_gate": "slimbert.gate",
    "fetch_asset": "slimbert.assets",
    "SlimbertError": "slimbert.errors",
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
