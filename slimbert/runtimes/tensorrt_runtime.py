"""TensorRT engines (built by the export-tensorrt stage, or by its build_engine.sh on the device)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimbert.errors import ExportError
from slimbert.formats import ENGINE_FILE
from slimbert.formats import TENSORRT_BUILD_SCRIPT as BUILD_SCRIPT
from slimbert.hw import tensorrt_missing
from slimbert.runtimes.base import Runtime, Session, register


class TensorrtSession(Session):
    """Runs an engine on CUDA tensors owned by torch (no pycuda needed)."""

    def __init__(self, engine):
        import tensorrt as trt
        import torch

        self.engine = engine
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._torch_dtype = {trt.float32: torch.float32, trt.float16: torch.float16,
                             trt.bfloat16: torch.bfloat16, trt.int64: torch.int64, trt.int32: torch.int32}

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        inputs = {}
        for name in self.input_names:
            dtype = self._torch_dtype[self.engine.get_tensor_dtype(name)]
            inputs[name] = torch.from_numpy(batch[name]).to("cuda", dtype)
            self.context.set_input_shape(name, tuple(inputs[name].shape))
            self.context.set_tensor_address(name, inputs[name].data_ptr())
        shape = tuple(self.context.get_tensor_shape(self.output_name))
        out = torch.empty(shape, dtype=self._torch_dtype[self.engine.get_tensor_dtype(self.output_name)],
                          device="cuda")
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return out.float().cpu().numpy()


class TensorrtRuntime(Runtime):
    name = "tensorrt"
    kind = "tensorrt"
    device = "cuda"
    description = "TensorRT engine (FP16/BF16, or INT8/FP8 from Q/DQ), CUDA GPU"

    def unavailable_reason(self) -> str | None:
        return tensorrt_missing()

    def load(self, artifact_dir: Path, threads: int | None = None) -> Session:
        import tensorrt as trt

        self.check_available()
        path = Path(artifact_dir) / ENGINE_FILE
        if not path.is_file():
            raise ExportError(f"{artifact_dir} has no {ENGINE_FILE} (TensorRT was not available where it "
                              "was exported).", hint=f"run {BUILD_SCRIPT} in that folder on this GPU.")
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ExportError(f"TensorRT cannot load {path}: built by another TensorRT version or GPU?",
                              hint=f"rebuild it here with {BUILD_SCRIPT}.")
        return TensorrtSession(engine)


register(TensorrtRuntime())
