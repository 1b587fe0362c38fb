"""Compiled PyTorch on CUDA with each shape bucket's whole forward captured in one CUDA graph.

Eager PyTorch on a GPU is bound by kernel launches at small batches: a 3-layer student
issues a few hundred launches per forward, each costing microseconds of Python and driver
time, while the GPU work itself takes a fraction of that. ``torch.compile`` fuses the small
ops (Inductor), and a CUDA graph replays the whole fused forward with one launch, so no
Python runs between kernels. A graph replays fixed shapes and fixed memory, hence one graph
per (batch, sequence) bucket (see buckets.py), static input buffers the graph reads, and
outputs sliced back to the real batch.

Capture is lazy: a session captures a bucket the first time a batch needs it and records
how long that took (``setup_seconds``), so the bench reports warm-up and capture apart from
latency, and a session only pays for the shapes its data reaches.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from slimbert.runtimes.base import Session, register
from slimbert.runtimes.buckets import BucketedSession, BucketForward, Buckets, CaptureFn
from slimbert.runtimes.torch_runtime import (
    TorchRuntime,
    fp8_unavailable_reason,
    model_input_names,
    to_fp8_matmuls,
)

_WARMUP_RUNS = 3  # Inductor compiles on the first call; cuBLAS picks algorithms on the next


def eager_forward(model: torch.nn.Module, input_names: tuple[str, ...], device: str) -> CaptureFn:
    """A capture function that runs the model as it is: the reference for the captured one."""

    def capture(rows: int, seq_len: int) -> BucketForward:
        @torch.inference_mode()
        def forward(padded: dict[str, np.ndarray]) -> np.ndarray:
            inputs = {k: torch.from_numpy(padded[k]).to(device) for k in input_names}
            return model(**inputs).logits.float().cpu().numpy()

        return forward

    return capture


def cuda_graph_forward(model: torch.nn.Module, input_names: tuple[str, ...]) -> CaptureFn:
    """A capture function that records the model's forward for a bucket into a CUDA graph."""

    def capture(rows: int, seq_len: int) -> BucketForward:
        static = {k: torch.zeros((rows, seq_len), dtype=torch.long, device="cuda") for k in input_names}
        # warm up on a batch with padding: nothing the trace specialises on may assume a full mask
        if "attention_mask" in static:
            static["attention_mask"].fill_(1)
            static["attention_mask"][:, seq_len // 2:] = 0
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side), _static_shapes_allowed():
            for _ in range(_WARMUP_RUNS):
                model(**static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            logits = model(**static).logits
        host = {k: torch.empty((rows, seq_len), dtype=torch.long).pin_memory() for k in input_names}

        def forward(padded: dict[str, np.ndarray]) -> np.ndarray:
            for name in input_names:
                host[name].numpy()[...] = padded[name]
                static[name].copy_(host[name], non_blocking=True)
            graph.replay()
            return logits.float().cpu().numpy()  # .cpu() waits for the replay

        return forward

    return capture


@contextlib.contextmanager
def _static_shapes_allowed():
    """Let Dynamo compile one static graph per bucket instead of giving up after 8 shapes.

    Dynamo's recompile limit guards against shape churn in eager code; here every shape is a
    deliberate bucket, compiled once and then only replayed. The setting is restored on exit.
    """
    import torch._dynamo

    with torch._dynamo.config.patch(recompile_limit=256, accumulated_recompile_limit=4096):
        yield


class CudaGraphRuntime(TorchRuntime):
    """``torch.compile`` (Inductor, static shapes) + one CUDA graph per (batch, sequence) bucket.

    Not measured unless named: compiling and capturing takes seconds per bucket, which a
    quick bench of every target should not pay.
    """

    in_default = False
    attn_implementation = "sdpa"  # the eager attention path copies a CPU tensor during capture

    def __init__(self, name: str, dtype: torch.dtype, description: str, *, compile_model: bool = True,
                 buckets: Buckets | None = None):
        super().__init__(name, "cuda", dtype, description)
        self.compile_model = compile_model
        self.buckets = buckets or Buckets()

    def load(self, artifact_dir: Path, threads: int | None = None) -> Session:
        from slimbert.models import load_classifier

        self.check_available()
        if threads:
            torch.set_num_threads(threads)
        folder = Path(artifact_dir)
        model = load_classifier(folder, attn_implementation=self.attn_implementation).eval()
        model = self.prepare(model.to("cuda", self.dtype))
        max_positions = getattr(model.config, "max_position_embeddings", None) or self.buckets.seq_lens[-1]
        if self.compile_model:
            model = torch.compile(model, dynamic=False, fullgraph=True)
        names = model_input_names(folder)
        return BucketedSession(names, self.buckets.within(max_positions), cuda_graph_forward(model, names))


class TorchCompileRuntime(TorchRuntime):
    """``torch.compile(model, mode="reduce-overhead")``: the one-liner a user would try first.

    Measured beside the captured runtimes so their speed-up is against the obvious
    alternative, not against eager PyTorch.
    """

    in_default = False

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(model, mode="reduce-overhead")


class CudaGraphFp8Runtime(CudaGraphRuntime):
    """FP8 E4M3 matmuls (torchao, dynamic per-row scales) inside the compiled, captured graph."""

    def unavailable_reason(self) -> str | None:
        return fp8_unavailable_reason()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return to_fp8_matmuls(model)


class CudaGraphInt8WeightOnlyRuntime(CudaGraphRuntime):
    """INT8 weights, bf16 activations (torchao weight-only): halves the weight bytes read per
    token, which is what a batch-1 forward is bound by once launches are gone."""

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, _: isinstance(m, torch.nn.Linear))
        return model


register(TorchCompileRuntime("torch-cuda-compile-fp16", "cuda", torch.float16,
                             'torch.compile(mode="reduce-overhead"), fp16, CUDA GPU: the one-liner baseline'))
register(CudaGraphRuntime("torch-cuda-graph-fp16", torch.float16,
                          "PyTorch compiled (Inductor) + CUDA graphs per shape bucket, fp16, CUDA GPU"))
register(CudaGraphRuntime("torch-cuda-graph-bf16", torch.bfloat16,
                          "PyTorch compiled (Inductor) + CUDA graphs per shape bucket, bf16, CUDA GPU"))
register(CudaGraphFp8Runtime("torch-cuda-graph-fp8", torch.bfloat16,
                             "compiled + CUDA graphs, torchao FP8 E4M3 matmuls (bf16 elsewhere), sm_89+"))
register(CudaGraphInt8WeightOnlyRuntime("torch-cuda-graph-int8wo", torch.bfloat16,
                                        "compiled + CUDA graphs, torchao INT8 weight-only matmuls, bf16"))
