"""The export stages' settings: ONNX, ORT mobile, ExecuTorch, TensorRT.

Plain dataclasses, importable without torch or ONNX: parsing a recipe and planning a run
(`slimbert run --dry-run`) read them, and that must stay quick. The exporters that use
them are onnx.py, ort_mobile.py, executorch.py and tensorrt.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class OnnxExportConfig:
    """How to export: opset, exporter, graph fusion and the validation tolerance."""

    opset: int = 17
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    optimize: bool = True  # ORT transformer fusions (attention, skip-layernorm, gelu, ...)
    atol: float = 1e-3  # largest logit difference from PyTorch that passes validation
    validate_examples: int = 512

    def __post_init__(self) -> None:
        if not 14 <= self.opset <= 21:
            raise ValueError(f"opset must be in 14..21, got {self.opset}")
        if self.atol <= 0:
            raise ValueError(f"atol must be > 0, got {self.atol}")


@dataclass
class OrtMobileConfig:
    """How to convert: the optimization level baked into the file and the target CPU family."""

    optimization_level: Literal["basic", "extended", "all"] = "all"
    # "arm" leaves out x86-only layout transforms (NCHWc) so the file runs on any phone
    target_platform: Literal["arm", "amd64"] = "arm"
    type_reduction: bool = True  # also write required_operators_and_types.config (smaller builds)
    atol: float = 1e-3  # largest logit difference from the source ONNX that passes validation
    # an INT8 source passes instead if at least this share of predictions agree (see below)
    min_agreement: float = 0.99

    def __post_init__(self) -> None:
        if self.atol <= 0:
            raise ValueError(f"atol must be > 0, got {self.atol}")
        if not 0 < self.min_agreement <= 1:
            raise ValueError(f"min_agreement must be in (0, 1], got {self.min_agreement}")


@dataclass
class ExecutorchConfig:
    """Precision, the shape bounds ExecuTorch plans memory for, and the INT8 calibration."""

    precision: Literal["fp32", "int8"] = "fp32"
    per_channel: bool = True  # per-channel INT8 weights (XNNPACK supports them for linear)
    # dynamic: activation ranges computed per batch at run time (INT8 weights and linears,
    # like ORT's dynamic INT8); static: ranges fixed by calibration on dev batches. Measured
    # on the default 3-layer student: dynamic keeps 99.4% of PyTorch's dev predictions,
    # static 93-95% (BERT activations have outliers that one fixed range clips).
    activations: Literal["dynamic", "static"] = "dynamic"
    calibration_batches: int = 8  # dev batches observed to fix INT8 activation ranges
    calibration_batch_size: int = 32
    max_batch: int = 32  # largest batch one call takes; the runtime splits larger ones
    max_seq_len: int = 128  # longest sequence; memory is planned for max_batch x max_seq_len
    atol: float = 1e-3  # fp32: largest logit difference from PyTorch that passes
    min_agreement: float = 0.95  # int8: smallest share of PyTorch's predictions kept

    def __post_init__(self) -> None:
        if self.calibration_batches < 1 or self.calibration_batch_size < 1:
            raise ValueError("calibration_batches and calibration_batch_size must be >= 1")
        if self.max_batch < 2:
            raise ValueError(f"max_batch must be >= 2 (torch.export specializes 1), got {self.max_batch}")
        if self.max_seq_len < 4:
            raise ValueError(f"max_seq_len must be >= 4, got {self.max_seq_len}")
        if self.atol <= 0 or not 0 <= self.min_agreement <= 1:
            raise ValueError("atol must be > 0 and min_agreement in [0, 1]")


@dataclass
class TensorrtConfig:
    """Precision and the input shape ranges the engine will accept."""

    precision: Literal["fp16", "bf16", "fp32", "int8", "fp8"] = "fp16"
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 32
    min_seq: int = 1
    opt_seq: int = 128
    max_seq: int = 128
    workspace_gb: float = 4.0
    sparse_weights: bool = False  # use 2:4-sparse weights on sparse tensor cores (Ampere+)
    build: Literal["auto", "never"] = "auto"  # auto: build here when TensorRT and a GPU exist

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError("need 1 <= min_batch <= opt_batch <= max_batch")
        if not 1 <= self.min_seq <= self.opt_seq <= self.max_seq:
            raise ValueError("need 1 <= min_seq <= opt_seq <= max_seq")
        if self.workspace_gb <= 0:
            raise ValueError("workspace_gb must be > 0")

    def shapes(self, names: list[str]) -> dict[str, dict[str, list[int]]]:
        return {name: {"min": [self.min_batch, self.min_seq], "opt": [self.opt_batch, self.opt_seq],
                       "max": [self.max_batch, self.max_seq]} for name in names}
