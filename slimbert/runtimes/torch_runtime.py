"""PyTorch eager execution of Hugging Face classifier folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slimbert.runtimes.base import Runtime, Session, register


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


class TorchRuntime(Runtime):
    kind = "hf-model"

    def __init__(self, name: str, device: str, dtype: torch.dtype, description: str):
        self.name, self.device, self.dtype, self.description = name, device, dtype, description

    def unavailable_reason(self) -> str | None:
        if self.device == "cuda" and not torch.cuda.is_available():
            return "no CUDA GPU visible to PyTorch (install a CUDA build of torch on a GPU machine)"
        return None

    def load(self, artifact_dir: Path, threads: int | None = None) -> Session:
        from slimbert.models import load_classifier, load_tokenizer

        self.check_available()
        if threads:
            torch.set_num_threads(threads)
        model = load_classifier(Path(artifact_dir)).eval().to(self.device, self.dtype)
        names = tuple(load_tokenizer(Path(artifact_dir)).model_input_names)
        names = tuple(n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names)
        return TorchSession(model, self.device, self.dtype, names)


register(TorchRuntime("torch-cpu", "cpu", torch.float32, "PyTorch eager, fp32, CPU"))
register(TorchRuntime("torch-cuda-fp16", "cuda", torch.float16, "PyTorch eager, fp16, CUDA GPU"))
