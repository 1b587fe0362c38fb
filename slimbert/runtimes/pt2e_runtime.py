"""PT2E programs (``model.pt2``, written by quantize-torch) on this CPU, compiled or eager.

A converted PT2E graph is a Q/DQ reference graph: run eagerly, every quantize/dequantize is
an fp32 op and the model is slower than fp32. Inductor (``torch.compile``, with freezing)
pattern-matches the Q/DQ pairs around linears into oneDNN INT8 kernels: that is what makes
X86InductorQuantizer's INT8 fast. Inductor needs a C++ compiler; without one the
``torch-pt2e-cpu`` target runs eagerly and says so in the log. ``torch-pt2e-cpu-eager``
runs the reference graph on purpose (accuracy checks, compiled-vs-eager comparisons).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from slimbert.errors import ExportError, SlimbertError
from slimbert.formats import PT2_FILE, PT2_META_FILE
from slimbert.runtimes.base import Runtime, Session, register

log = logging.getLogger(__name__)


class Pt2eSession(Session):
    """Runs a logits module of positional tensors (an ExportedProgram's module, maybe compiled)."""

    def __init__(self, module, input_names: tuple[str, ...], max_seq_len: int | None = None,
                 compiled: bool = False, batch_dependent: bool = False):
        self.module = module
        self.input_names = input_names
        self.max_seq_len = max_seq_len
        self.compiled = compiled
        self.batch_dependent = batch_dependent  # dynamic PT2E: activation ranges per batch

    @contextlib.contextmanager
    def _context(self):
        if not self.compiled:
            yield
            return
        import torch._inductor.config as inductor_config

        # freezing folds the INT8 weights into oneDNN's packed layout: needed by every
        # (re)compilation, so it is set around each call, not once at load
        with inductor_config.patch(freezing=True), warnings.catch_warnings():
            # Inductor's oneDNN lowering warns about its own tensor copies while compiling
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\._inductor")
            yield

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        seq = batch[self.input_names[0]].shape[1]
        if self.max_seq_len and seq > self.max_seq_len:
            raise SlimbertError(
                f"a batch of {seq} tokens is longer than the {self.max_seq_len} this PT2E program "
                "was exported for.",
                hint="re-run quantize-torch with a larger max_seq_len, or bench with a shorter seq_len.",
            )
        with torch.no_grad(), self._context():
            logits = self.module(*to_args(batch, self.input_names))
        return logits.float().numpy()


def silence_torchao() -> None:
    """torchao 0.18 logs "Failed to load ... _C_mxfp8 / _C_cutlass_90a" on import: harmless."""
    logging.getLogger("torchao").setLevel(logging.ERROR)


def to_args(batch: dict[str, Any], names: tuple[str, ...], max_seq_len: int | None = None) -> tuple:
    """A numpy batch (from ``iterate_batches``) as the positional tensors of a logits module."""
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(batch[n][:, :max_seq_len])) for n in names)


def compiler_missing() -> str | None:
    """None when Inductor finds a C++ compiler for CPU kernels; otherwise why not."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as exc:
        return f"Inductor finds no C++ compiler ({str(exc).splitlines()[0] if str(exc) else exc})"
    return None


def load_program(artifact_dir: Path):
    """The ExportedProgram in ``artifact_dir`` and its metadata (pt2e.json)."""
    import torch

    path, meta_path = Path(artifact_dir) / PT2_FILE, Path(artifact_dir) / PT2_META_FILE
    if not path.is_file() or not meta_path.is_file():
        raise ExportError(f"{artifact_dir} has no {PT2_FILE} with its {PT2_META_FILE}.",
                          hint="run the quantize-torch stage to produce one.")
    silence_torchao()
    import torchao.quantization.pt2e  # noqa: F401  (registers the quantized_decomposed ops)

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(f"torch.export cannot load {path}: {first}",
                          hint="the file may be corrupt or from another torch/torchao version: "
                          "re-run the quantize-torch stage.") from exc
    return program, json.loads(meta_path.read_text())


class Pt2eRuntime(Runtime):
    kind = "pt2e"
    device = "cpu"

    def __init__(self, name: str, compile: bool, description: str, in_default: bool = True):
        self.name, self.compile, self.description, self.in_default = name, compile, description, in_default

    def unavailable_reason(self) -> str | None:
        try:
            import torchao.quantization.pt2e  # noqa: F401
        except ImportError as exc:
            return f"torchao is not installed ({exc}); pip install torchao==0.18.0"
        return None

    def load(self, artifact_dir: Path, threads: int | None = None) -> Session:
        import torch

        self.check_available()
        if threads:
            torch.set_num_threads(threads)
        program, meta = load_program(artifact_dir)
        names, max_seq_len = tuple(meta["input_names"]), meta.get("max_seq_len")
        dynamic = meta.get("mode") == "dynamic"
        module = program.module()
        if not self.compile:
            return Pt2eSession(module, names, max_seq_len, batch_dependent=dynamic)
        reason = compiler_missing()
        if reason:
            log.warning("%s: %s; running the PT2E program eagerly (its Q/DQ ops in fp32: slower than "
                        "fp32). Install g++ (or set CXX) for oneDNN INT8 kernels.", self.name, reason)
            return Pt2eSession(module, names, max_seq_len, batch_dependent=dynamic)
        # dynamic=True: one compilation serves every batch and sequence length
        session = Pt2eSession(torch.compile(module, dynamic=True), names, max_seq_len, compiled=True,
                              batch_dependent=dynamic)
        ids = np.zeros((2, 8), dtype=np.int64)
        warmup = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": ids}
        session.run(warmup)  # compile now, not inside the first timed call (batch 1 compiles once more)
        return session


register(Pt2eRuntime("torch-pt2e-cpu", True,
                     "PyTorch PT2E program (.pt2), torch.compile/Inductor (oneDNN INT8), CPU"))
register(Pt2eRuntime("torch-pt2e-cpu-eager", False,
                     "PyTorch PT2E program (.pt2), eager reference Q/DQ graph, CPU", in_default=False))
