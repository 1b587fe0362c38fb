"""ORT-format models (``model.ort``) on ONNX Runtime's CPU provider, with a phone's threads.

This is the file an Android/iOS app ships (see export/ort_mobile.py). On a development
machine it runs through the same CPU kernels a mobile build uses, so its accuracy is the
phone's; its latency is this CPU's, with the thread count of a phone's big cores.
"""

from __future__ import annotations

import os
from pathlib import Path

from slimbert.formats import ORT_FILE
from slimbert.runtimes.base import Session, register
from slimbert.runtimes.onnxruntime_runtime import OrtRuntime

PHONE_THREADS = 4  # big cores of a typical phone SoC; capped at this machine's cores


class OrtMobileRuntime(OrtRuntime):
    kind = "ort-mobile"
    model_file = ORT_FILE

    def __init__(self) -> None:
        super().__init__("ort-mobile", "mobile", ["CPUExecutionProvider"],
                         "ONNX Runtime, ORT format (mobile build), CPU provider, phone thread count")
        self.default_threads = min(PHONE_THREADS, os.cpu_count() or 1)

    def session_options(self, options) -> None:
        options.add_session_config_entry("session.load_model_format", "ORT")

    def load(self, artifact_dir: Path, threads: int | None = None) -> Session:
        return super().load(artifact_dir, threads=threads or self.default_threads)

    def load_alone(self, artifact_dir: Path, threads: int | None = None) -> Session:
        return super().load_alone(artifact_dir, threads=threads or self.default_threads)


register(OrtMobileRuntime())
