"""What this machine can run: the CPU's instruction set (and the INT8 formats fast on it),
and the optional native runtimes (TensorRT with a CUDA GPU, ExecuTorch with XNNPACK).

A leaf, probed by the exporters, the quantizers and the runtimes alike.

Which INT8 formats are fast on which CPU, decided from its instruction set:

INT8 that is no faster than FP32 is the most common surprise with ONNX Runtime on CPU: x86
kernels multiply u8 activations by s8 weights (VPMADDUBSW, or VNNI's VPDPBUSD), so s8
activations are converted at run time, and without VNNI the 16-bit intermediate sums can
saturate unless weights use 7 bits (reduce_range). ARM's SDOT/UDOT take s8 x s8 directly.
The rules follow ORT's own guidance in ``quantize_static``; the choice and the reason are
recorded in the artifact so a model built for one CPU is not silently used on another.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from slimbert.formats import TENSORRT_HINT

IsaName = Literal["x86-vnni", "x86-avx512", "x86-avx2", "arm64-dotprod", "arm64", "generic"]


@dataclass(frozen=True)
class Int8Formats:
    """ORT's activation/weight types and 7-bit weights flag for one instruction set."""

    isa: str
    activation_type: Literal["uint8", "int8"]
    weight_type: Literal["uint8", "int8"]
    reduce_range: bool
    why: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


_FORMATS: dict[str, tuple[str, str, bool, str]] = {
    "x86-vnni": ("uint8", "int8", False,
                 "VNNI (VPDPBUSD) multiplies u8 activations by s8 weights in 32-bit sums: "
                 "no saturation, no 7-bit weights needed"),
    "x86-avx512": ("uint8", "int8", True,
                   "AVX-512 without VNNI multiplies u8 x s8 with 16-bit intermediate sums: "
                   "7-bit weights (reduce_range) avoid saturation"),
    "x86-avx2": ("uint8", "int8", True,
                 "AVX2 multiplies u8 x s8 with 16-bit intermediate sums (VPMADDUBSW): "
                 "7-bit weights (reduce_range) avoid saturation"),
    "arm64-dotprod": ("int8", "int8", False,
                      "ARM SDOT multiplies s8 x s8 directly; symmetric s8 activations suit it"),
    "arm64": ("int8", "int8", False, "ARM NEON kernels handle symmetric s8 x s8 well"),
    "generic": ("uint8", "int8", True,
                "unknown CPU: the x86 default with 7-bit weights, safe on every kernel"),
}

ISA_NAMES: tuple[str, ...] = tuple(_FORMATS)


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """Instruction-set flags of this CPU (or of the given /proc/cpuinfo text); empty if unknown."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def detect_isa(machine: str | None = None, cpuinfo: str | None = None) -> str:
    """The instruction-set family of this CPU (or of the given /proc/cpuinfo text)."""
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags(cpuinfo)
    if machine in ("x86_64", "amd64", "i686", "x86"):
        if flags & {"avx512_vnni", "avx512vnni", "avx_vnni"}:
            return "x86-vnni"
        if "avx512bw" in flags or "avx512f" in flags:
            return "x86-avx512"
        return "x86-avx2" if "avx2" in flags else "generic"
    if machine in ("aarch64", "arm64"):
        # Apple silicon has no /proc/cpuinfo but every M-series core has dot product.
        return "arm64-dotprod" if "asimddp" in flags or platform.system() == "Darwin" else "arm64"
    return "generic"


def cpu_name() -> str:
    """This CPU's model name (a label for reports; "unknown" where none is readable)."""
    try:
        import cpuinfo  # py-cpuinfo, installed with neural-compressor

        return str(cpuinfo.get_cpu_info().get("brand_raw") or platform.processor() or platform.machine())
    except Exception:  # missing, or failing in an odd sandbox: the name is only a label
        return platform.processor() or platform.machine() or "unknown"


def isa_mismatch(tuned_isa: str | None, running_isa: str | None = None) -> str | None:
    """Why an INT8 artifact tuned on ``tuned_isa`` may not hold here; None when it matches.

    Its scheme was chosen by speed and accuracy measured on that CPU: kernels differ between
    instruction sets (7-bit weights matter without VNNI), so both numbers may differ here.
    """
    running = running_isa or detect_isa()
    if not tuned_isa or tuned_isa == running:
        return None
    return (f"its INT8 scheme was measured on a {tuned_isa} CPU and this one is {running}: accuracy "
            f"and speed may differ; rebuild it for this CPU (target_isa: {running} in its quantize "
            f"stage reruns it) or measure it here before trusting its numbers")


def int8_formats(isa: str | None = None) -> Int8Formats:
    """The INT8 formats to use on ``isa`` (default: this CPU)."""
    name = isa or detect_isa()
    if name not in _FORMATS:
        raise ValueError(f"unknown instruction set {name!r}; known: {', '.join(ISA_NAMES)}")
    activation, weight, reduce_range, why = _FORMATS[name]
    return Int8Formats(name, activation, weight, reduce_range, why)  # type: ignore[arg-type]


def tensorrt_missing() -> str | None:
    """None when TensorRT's Python package imports and a CUDA GPU is visible; otherwise why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return f"the tensorrt Python package is not installed ({TENSORRT_HINT})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    return None


def executorch_missing() -> str | None:
    """None when ExecuTorch with its XNNPACK backend is importable; otherwise why not."""
    try:
        from executorch.runtime import Runtime
    except ImportError as exc:
        return f"executorch is not installed ({exc.name or exc})"
    try:
        if not Runtime.get().backend_registry.is_available("XnnpackBackend"):
            return "this executorch build has no XNNPACK backend"
    except Exception as exc:  # a broken native extension: say so rather than crash the bench
        return f"executorch's runtime does not load: {exc}"
    return None
