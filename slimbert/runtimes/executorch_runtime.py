"""ExecuTorch programs (``model.pte``) with the XNNPACK delegate, through ExecuTorch's Python runtime.

The same native runtime and XNNPACK kernels an Android/iOS app links, run here on this
CPU: accuracy is the phone's, latency is this machine's at a phone's thread count.
ExecuTorch is optional; without it the target is listed as unavailable with the install line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from slimbert.errors import ExportError, SlimbertError
from slimbert.formats import EXECUTORCH_HINT, PTE_FILE
from slimbert.formats import EXECUTORCH_META_FILE as META_FILE
from slimbert.hw import executorch_missing
from slimbert.runtimes.base import Runtime, Session, register

PHONE_THREADS = 4


class ExecutorchSession(Session):
    def __init__(self, method, input_names: tuple[str, ...], max_batch: int, max_seq_len: int):
        self.method = method
        self.input_names = input_names
        self.max_batch, self.max_seq_len = max_batch, max_seq_len

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        n, seq = batch[self.input_names[0]].shape
        if seq > self.max_seq_len:
            raise SlimbertError(
                f"a batch of {seq} tokens is longer than the {self.max_seq_len} this ExecuTorch "
                "program was exported for.",
                hint="re-export with a larger max_seq_len, or bench with a shorter seq_len.",
            )
        outs = []
        for start in range(0, n, self.max_batch):  # memory is planned for max_batch rows
            args = [torch.from_numpy(np.ascontiguousarray(batch[k][start:start + self.max_batch]))
                    for k in self.input_names]
            outs.append(self.method.execute(args)[0].numpy())
        return np.concatenate(outs).astype(np.float32, copy=False)


class ExecutorchRuntime(Runtime):
    name = "executorch-xnnpack"
    kind = "executorch"
    device = "mobile"
    description = "ExecuTorch, XNNPACK delegate (fp32/int8 .pte), phone thread count"

    def __init__(self) -> None:
        self.default_threads = min(PHONE_THREADS, os.cpu_count() or 1)

    def unavailable_reason(self) -> str | None:
        reason = executorch_missing()
        return f"{reason}; {EXECUTORCH_HINT}" if reason else None

    def load(self, artifact_dir: Path, threads: int | None = None) -> Session:
        from executorch.runtime import Runtime as EtRuntime

        self.check_available()
        path, meta_path = Path(artifact_dir) / PTE_FILE, Path(artifact_dir) / META_FILE
        if not meta_path.is_file():
            raise ExportError(f"{artifact_dir} has no {META_FILE} (input names and shape bounds).",
                              hint="re-run the export-executorch stage.")
        meta = json.loads(meta_path.read_text())
        _set_threads(threads or self.default_threads)
        try:
            method = EtRuntime.get().load_program(path).load_method("forward")
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ExportError(f"ExecuTorch cannot load {path}: {first}",
                              hint="the file may be corrupt or from another executorch version: "
                              "re-run the export-executorch stage.") from exc
        return ExecutorchSession(method, tuple(meta["input_names"]), meta["max_batch"], meta["max_seq_len"])


def _set_threads(threads: int) -> None:
    """ExecuTorch's XNNPACK delegate shares one process-wide threadpool; size it."""
    try:
        from executorch.extension.pybindings import portable_lib
    except ImportError:
        return
    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    if reset is not None and portable_lib._threadpool_get_thread_count() != threads:
        reset(threads)


register(ExecutorchRuntime())
