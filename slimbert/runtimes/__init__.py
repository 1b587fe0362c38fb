"""Runtimes behind one interface (see base.py); importing this registers them all."""

from slimbert.runtimes import (  # noqa: F401  (registration)
    cuda_graph,
    executorch_runtime,
    onnxruntime_runtime,
    ort_cuda_graph,
    ort_mobile,
    pt2e_runtime,
    tensorrt_runtime,
    torch_runtime,
)
from slimbert.runtimes.base import Runtime, Session, all_runtimes, get_runtime, register

__all__ = ["Runtime", "Session", "all_runtimes", "get_runtime", "register"]
