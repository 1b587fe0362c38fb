"""ONNX Runtime sessions on its CPU, CUDA and TensorRT execution providers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimbert.errors import ExportError
from slimbert.formats import ONNX_FILE
from slimbert.runtimes.base import Runtime, Session, register

# ops that quantize activations with a scale computed from the whole input tensor at run time
DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})


def has_dynamic_quantization(path: Path) -> bool:
    """Whether the graph at ``path`` computes activation scales per batch (dynamic INT8).

    An ORT-format file (a flatbuffer) is not readable by onnx; both formats store op types
    as plain strings, so that file is scanned for them."""
    if path.suffix != ".onnx":
        data = path.read_bytes()
        return any(op.encode() in data for op in DYNAMIC_QUANT_OPS)
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in DYNAMIC_QUANT_OPS for node in graph.node)


class OrtSession(Session):
    def __init__(self, session, batch_dependent: bool = False):
        self.session = session
        self.input_names = tuple(i.name for i in session.get_inputs())
        self.batch_dependent = batch_dependent

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: batch[k] for k in self.input_names}
        return self.session.run(None, feed)[0]


class OrtRuntime(Runtime):
    kind = "onnx"
    model_file: str | None = None  # None: model.onnx; subclasses run other formats (model.ort)

    def session_options(self, options) -> None:
        """Hook for subclasses: extra ONNX Runtime session settings."""

    def __init__(self, name: str, device: str, providers: list[str], description: str):
        self.name, self.device, self.providers, self.description = name, device, providers, description

    def unavailable_reason(self) -> str | None:
        import onnxruntime as ort

        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            return (f"onnxruntime {ort.__version__} has no {missing[0]} (install onnxruntime-gpu "
                    "on a machine with an NVIDIA GPU, and TensorRT for the TensorRT provider)")
        return None

    def load(self, artifact_dir: Path, threads: int | None = None) -> Session:
        # Spinning worker threads steal cores from whichever session runs next; sessions
        # that take turns in one process (interleaved timing) must not spin.
        return self._load(artifact_dir, threads, spinning=False)

    def load_alone(self, artifact_dir: Path, threads: int | None = None) -> Session:
        # ONNX Runtime's default: workers spin briefly between runs, as in a serving process
        return self._load(artifact_dir, threads, spinning=True)

    def _load(self, artifact_dir: Path, threads: int | None, spinning: bool) -> Session:
        import onnxruntime as ort

        self.check_available()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session_options(options)
        path = Path(artifact_dir) / (self.model_file or ONNX_FILE)
        # ORT's defaults, nothing switched off: a report must hold what every other loader of
        # the file gets (onnxruntime defaults, Optimum, the deploy runner). Skipping the
        # SkipLayerNormalization fusion was 9-13% faster on CPU, but moved a dynamic-INT8
        # graph's logits by up to 0.46 against any other loader (docs/quantize.md).
        try:
            session = ort.InferenceSession(str(path), options, providers=self.providers)
        except Exception as exc:
            raise ExportError(
                f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}",
                hint="the file may be corrupt or truncated: re-run the export stage.",
            ) from exc
        return OrtSession(session, batch_dependent=has_dynamic_quantization(path))


register(OrtRuntime("ort-cpu", "cpu", ["CPUExecutionProvider"], "ONNX Runtime, CPU provider"))
register(OrtRuntime("ort-cuda", "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"],
                    "ONNX Runtime, CUDA provider"))
register(OrtRuntime("ort-tensorrt", "cuda",
                    ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                    "ONNX Runtime, TensorRT provider"))
