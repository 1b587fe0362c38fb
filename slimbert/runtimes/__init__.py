"""Runtimes behind one interface (see base.py); importing this registers them all."""

from slimbert.runtimes import onnxruntime_runtime, ort_mobile, torch_runtime  # noqa: F401  (registration)
from slimbert.runtimes.base import Runtime, Session, all_runtimes, get_runtime, register

__all__ = ["Runtime", "Session", "all_runtimes", "get_runtime", "register"]
