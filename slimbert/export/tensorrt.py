"""TensorRT engines from ONNX: explicit-quantization INT8/FP8 from Q/DQ graphs, or FP16/BF16.

An engine is specific to the GPU (and TensorRT version) that builds it, so the artifact
always carries what the target device needs to build its own: the ONNX graph, the shape
ranges, and the exact ``trtexec`` command (``build_engine.sh``). Where TensorRT and a CUDA
GPU are present, the stage also builds the engine here with TensorRT's Python API
(optimization profile for batch and sequence ranges, persistent timing cache) and records
each layer's chosen precision through the engine inspector.

TensorRT parses standard ONNX only: ONNX Runtime's fused contrib ops (Attention,
SkipLayerNormalization, ...) are refused with a clear error; export with ``optimize: false``
for TensorRT (its own builder fuses attention). INT8 and FP8 come from the graph's Q/DQ
nodes (``quantize-onnx`` mode fp8 or static with format qdq, or the ``qat`` stage), not
from TensorRT's deprecated implicit calibration.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from slimbert.errors import ExportError
from slimbert.export.config import TensorrtConfig
from slimbert.export.onnx import copy_model_metadata
from slimbert.formats import ENGINE_FILE, ONNX_FILE
from slimbert.formats import TENSORRT_BUILD_SCRIPT as BUILD_SCRIPT
from slimbert.hw import tensorrt_missing

log = logging.getLogger(__name__)

SHAPES_FILE = "tensorrt.json"
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}




def trtexec_command(cfg: TensorrtConfig, names: list[str]) -> str:
    """The trtexec call that builds the same engine on the device itself."""

    def shape_arg(which: str) -> str:
        return ",".join(f"{n}:{'x'.join(map(str, s[which]))}" for n, s in cfg.shapes(names).items())

    args = ["trtexec", f"--onnx={ONNX_FILE}", f"--saveEngine={ENGINE_FILE}",
            f"--minShapes={shape_arg('min')}", f"--optShapes={shape_arg('opt')}",
            f"--maxShapes={shape_arg('max')}", f"--memPoolSize=workspace:{int(cfg.workspace_gb * 1024)}M",
            "--timingCacheFile=timing.cache", "--profilingVerbosity=detailed",
            "--exportLayerInfo=layers.json"]
    if cfg.sparse_weights:
        args.append("--sparsity=enable")
    args += {"fp16": ["--fp16"], "bf16": ["--bf16"], "fp32": [], "int8": ["--int8", "--fp16"],
             "fp8": ["--fp8", "--fp16"]}[cfg.precision]
    return " ".join(shlex.quote(a) for a in args)


def _check_graph(path: Path, precision: str) -> list[str]:
    """Input names; refuses contrib ops, and INT8/FP8 without Q/DQ nodes."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    contrib = sorted({n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")})
    if contrib:
        raise ExportError(
            f"{path} contains ONNX Runtime contrib ops TensorRT cannot parse: {', '.join(contrib)}.",
            hint="export for TensorRT without ORT fusion (export-onnx stage: optimize: false).",
        )
    if precision in ("int8", "fp8") and not {n.op_type for n in graph.node} & _QDQ_OPS:
        raise ExportError(
            f"precision {precision} builds from the graph's Q/DQ nodes, and {path} has none.",
            hint="feed a Q/DQ graph: quantize-onnx (mode: fp8, or static with format: qdq) or qat.",
        )
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def build_engine(onnx_path: Path, engine_path: Path, cfg: TensorrtConfig, names: list[str],
                 timing_cache: Path) -> dict[str, Any]:
    """Build with TensorRT's Python API; returns build facts and per-layer precisions."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors)}",
                          hint="the first error names the node; export at another opset or unfused.")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gb * (1 << 30)))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    flags = {"fp16": ["FP16"], "bf16": ["BF16"], "fp32": [], "int8": ["INT8", "FP16"],
             "fp8": ["FP8", "FP16"]}[cfg.precision]
    for flag in flags + (["SPARSE_WEIGHTS"] if cfg.sparse_weights else []):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for name, shape in cfg.shapes(names).items():
        profile.set_shape(name, shape["min"], shape["opt"], shape["max"])
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path} ({cfg.precision}).",
                          hint="see TensorRT's log above; try precision fp16 or a smaller max shape.")
    engine_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    precisions: dict[str, int] = {}
    for layer in info.get("Layers", []):
        if isinstance(layer, dict):
            for output in layer.get("Outputs", []):
                fmt = str(output.get("Format/Datatype", "unknown"))
                precisions[fmt] = precisions.get(fmt, 0) + 1
    return {"tensorrt": trt.__version__, "layers": len(info.get("Layers", [])),
            "layer_output_formats": precisions, "engine_mb": round(engine_path.stat().st_size / 1e6, 1),
            "layer_info": info}


def export_tensorrt(src_dir: Path, out_dir: Path, cfg: TensorrtConfig) -> dict[str, Any]:
    """Package ``src_dir``'s ONNX graph for TensorRT; build the engine here when possible."""
    names = _check_graph(src_dir / ONNX_FILE, cfg.precision)
    shutil.copy2(src_dir / ONNX_FILE, out_dir / ONNX_FILE)
    copy_model_metadata(src_dir, out_dir)
    command = trtexec_command(cfg, names)
    script = out_dir / BUILD_SCRIPT
    script.write_text("#!/bin/sh\n# Build the engine on the GPU that will run it (engines are "
                      f'GPU-specific).\ncd "$(dirname "$0")" && {command}\n')
    script.chmod(0o755)
    (out_dir / SHAPES_FILE).write_text(json.dumps({"inputs": cfg.shapes(names), **asdict(cfg)}, indent=2))
    metrics: dict[str, Any] = {"precision": cfg.precision, "trtexec": command, "inputs": names,
                               "engine": None}
    reason = "build: never" if cfg.build == "never" else tensorrt_missing()
    if reason is None:
        built = build_engine(out_dir / ONNX_FILE, out_dir / ENGINE_FILE, cfg, names, out_dir / "timing.cache")
        (out_dir / "layers.json").write_text(json.dumps(built.pop("layer_info"), indent=1))
        metrics["engine"] = built
    else:
        log.warning("TensorRT engine not built here (%s); the artifact carries %s to build it on the "
                    "device", reason, BUILD_SCRIPT)
        metrics["engine_not_built"] = reason
    return metrics
