"""PyTorch eager execution of Hugging Face classifier folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from slimbert.runtimes.base import Runtime, Session, register

if TYPE_CHECKING:
    from slimbert.data import EncodedSplit


class TorchSession(Session):
    def __init__(self, model, device: str, dtype: torch.dtype, input_names: tuple[str, ...]):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.input_names = input_names

    @torch.inference_mode()
    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        logits = self.model(**inputs).logits
        if self.device == "cuda":
            torch.cuda.synchronize()
        return logits.float().cpu().numpy()


def predict_logits(model: torch.nn.Module, enc: EncodedSplit, batch_size: int = 64,
                   desc: str | None = None, progress: bool = False) -> np.ndarray:
    """Logits for every example, in the split's order (the model is left in its mode)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device.type
        session = TorchSession(model, device, torch.float32, enc.input_names)
        return session.predict(enc, batch_size, desc=desc, progress=progress)
    finally:
        model.train(was_training)


class TorchRuntime(Runtime):
    kind = "hf-model"

    def __init__(self, name: str, device: str, dtype: torch.dtype, description: str):
        self.name, self.device, self.dtype, self.description = name, device, dtype, description

    def unavailable_reason(self) -> str | None:
        if self.device == "cuda" and not torch.cuda.is_available():
            return "no CUDA GPU visible to PyTorch (install a CUDA build of torch on a GPU machine)"
        return None

    def load(self, artifact_dir: Path, threads: int | None = None) -> Session:
        self.check_available()
        if threads:
            torch.set_num_threads(threads)
        model = self.prepare(load_torch_model(Path(artifact_dir)).eval().to(self.device, self.dtype))
        return TorchSession(model, self.device, self.dtype, model_input_names(Path(artifact_dir)))

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Hook for runtimes that transform the loaded model (e.g. FP8 matmuls)."""
        return model


def load_torch_model(folder: Path) -> torch.nn.Module:
    """The model in ``folder``: a sentence-transformers folder (its ``modules.json``) as the
    sentence-embedding task's encoder, whose outputs are its embeddings; else a classifier."""
    from slimbert.tasks import get_task
    from slimbert.tasks.embedding import has_sentence_transformers_config

    task = "sentence-embedding" if has_sentence_transformers_config(folder) else "text-classification"
    return get_task(task).load().load_model(folder)


def model_input_names(folder: Path) -> tuple[str, ...]:
    """The model inputs its tokenizer produces, in the order sessions feed them."""
    from slimbert.models import load_tokenizer

    names = tuple(load_tokenizer(folder).model_input_names)
    return tuple(n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names)


def fp8_unavailable_reason() -> str | None:
    """Why FP8 matmuls cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch (install a CUDA build of torch on a GPU machine)"
    capability = torch.cuda.get_device_capability()
    if capability < (8, 9):
        return (f"FP8 matmuls need an NVIDIA GPU of compute capability 8.9+ (Ada, Hopper); "
                f"this one is {capability[0]}.{capability[1]}")
    return None


def to_fp8_matmuls(model: torch.nn.Module) -> torch.nn.Module:
    """Linear layers as torchao FP8 E4M3 matmuls with dynamic per-row scales.

    Layers whose sizes are not multiples of 16 (the classifier's few outputs) stay in the
    model's dtype, as ``torch._scaled_mm`` requires.
    """
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    def eligible(module: torch.nn.Module, _: str) -> bool:
        return (isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0
                and module.out_features % 16 == 0)

    quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=eligible)
    return model


class TorchFp8Runtime(TorchRuntime):
    """FP8 E4M3 matmuls through torchao (``torch._scaled_mm``): dynamic per-row scales.

    Only Ada and Hopper GPUs (compute capability 8.9+) have FP8 tensor cores; elsewhere the
    runtime says so instead of running slower emulation.
    """

    def unavailable_reason(self) -> str | None:
        return fp8_unavailable_reason()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return to_fp8_matmuls(model)


class TorchCpuBf16Runtime(TorchRuntime):
    """bf16 on CPU: fast where the CPU has bf16 dot products (AVX512_BF16, AMX), slow elsewhere.

    Not among the default targets (it doubles every PyTorch row); name it in ``targets``.
    """

    in_default = False

    def unavailable_reason(self) -> str | None:
        from slimbert.hw import cpu_flags

        flags = cpu_flags()
        if flags and not flags & {"avx512_bf16", "amx_bf16", "bf16"}:
            return "this CPU has no bf16 instructions (AVX512_BF16, AMX or ARM BF16): bf16 would be emulated"
        return None


register(TorchRuntime("torch-cpu", "cpu", torch.float32, "PyTorch eager, fp32, CPU"))
register(TorchCpuBf16Runtime("torch-cpu-bf16", "cpu", torch.bfloat16, "PyTorch eager, bf16, CPU"))
register(TorchRuntime("torch-cuda", "cuda", torch.float32, "PyTorch eager, fp32, CUDA GPU"))
register(TorchRuntime("torch-cuda-fp16", "cuda", torch.float16, "PyTorch eager, fp16, CUDA GPU"))
register(TorchRuntime("torch-cuda-bf16", "cuda", torch.bfloat16, "PyTorch eager, bf16, CUDA GPU"))
register(TorchFp8Runtime("torch-cuda-fp8", "cuda", torch.bfloat16,
                         "PyTorch + torchao FP8 E4M3 matmuls (bf16 elsewhere), CUDA GPU sm_89+"))
