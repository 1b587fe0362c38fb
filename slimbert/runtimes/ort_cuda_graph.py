"""ONNX Runtime's CUDA provider with I/O binding and CUDA graphs, one graph per shape bucket.

``enable_cuda_graph`` makes ORT capture a run into a CUDA graph and replay it; the graph
reads and writes fixed device buffers, so inputs and outputs are bound once per bucket as
``OrtValue``s on the GPU and only their contents change between runs. ORT keys several
graphs in one session by the ``gpu_graph_id`` run option (a positive integer): each bucket
gets its own id and its own bound buffers, as buckets.py pads batches to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimbert.errors import ExportError
from slimbert.runtimes.base import Runtime, Session, register
from slimbert.runtimes.buckets import BucketedSession, Buckets

_CAPTURE_RUNS = 2  # ORT runs once normally before it captures; the second run records the graph
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32}


def ort_bucket_capture(session, input_names: tuple[str, ...]):
    """A capture function (see buckets.BucketedSession) over an ORT CUDA-graph session."""
    import onnxruntime as ort

    output = session.get_outputs()[0]
    num_labels = output.shape[-1]
    if not isinstance(num_labels, int):
        raise ExportError(f"the ONNX graph's output {output.name!r} has no fixed label dimension "
                          f"({output.shape}); CUDA graphs need fixed output shapes",
                          hint="re-export the model with slimbert export --format onnx.")
    input_types = {i.name: _ORT_DTYPES[i.type] for i in session.get_inputs()}
    next_id = iter(range(1, 1 << 30))

    def capture(rows: int, seq_len: int):
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("gpu_graph_id", str(next(next_id)))
        binding = session.io_binding()
        inputs = {}
        for name in input_names:
            inputs[name] = ort.OrtValue.ortvalue_from_numpy(
                np.ones((rows, seq_len), dtype=input_types[name]), "cuda", 0)
            binding.bind_ortvalue_input(name, inputs[name])
        logits = ort.OrtValue.ortvalue_from_shape_and_type(
            (rows, num_labels), _ORT_DTYPES[output.type], "cuda", 0)
        binding.bind_ortvalue_output(output.name, logits)
        for _ in range(_CAPTURE_RUNS):
            session.run_with_iobinding(binding, run_options)

        def forward(padded: dict[str, np.ndarray]) -> np.ndarray:
            for name in input_names:
                inputs[name].update_inplace(np.ascontiguousarray(padded[name], dtype=input_types[name]))
            session.run_with_iobinding(binding, run_options)
            return logits.numpy().astype(np.float32)

        return forward

    return capture


class OrtCudaGraphRuntime(Runtime):
    """ONNX Runtime CUDA provider, I/O binding on the GPU, a CUDA graph per shape bucket."""

    kind = "onnx"
    device = "cuda"
    in_default = False  # one capture per bucket: measured when named

    def __init__(self, name: str, description: str, buckets: Buckets | None = None):
        self.name, self.description = name, description
        self.buckets = buckets or Buckets()

    def unavailable_reason(self) -> str | None:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install "
                    "onnxruntime-gpu in place of onnxruntime on a machine with an NVIDIA GPU)")
        return None

    def load(self, artifact_dir: Path, threads: int | None = None) -> Session:
        import onnxruntime as ort

        from slimbert.formats import ONNX_FILE

        self.check_available()
        path = Path(artifact_dir) / ONNX_FILE
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                str(path), options,
                providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(
                f"ONNX Runtime cannot load {path} with CUDA graphs: {str(exc).splitlines()[0]}",
                hint="CUDA graphs need every node on the CUDA provider; `slimbert bench --targets "
                     "ort-cuda` runs the graph without them.") from exc
        names = tuple(i.name for i in session.get_inputs())
        return BucketedSession(names, self.buckets, ort_bucket_capture(session, names))


register(OrtCudaGraphRuntime("ort-cuda-graph",
                             "ONNX Runtime CUDA provider, I/O binding + CUDA graphs per shape bucket"))
