"""Calibration for static quantization: activation ranges from real examples, one batch at a time.

ORT's calibrators keep every batch's intermediate outputs until the end (their
``CalibMaxIntermediateOutputs`` option drops data in onnxruntime 1.32 instead of merging it),
and the histogram calibrators stack batches into one array, which fails on dynamically
padded batches of different lengths. Feeding the calibrator one batch per ``collect_data``
call merges ranges and histograms as it goes, so memory is bounded by one batch's
activations, not by the calibration set. The ranges are saved as ORT's calibration cache,
so every later quantization of the same graph (formats, exclusions, the sensitivity search)
reuses them without running the model again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

from slimbert.data import EncodedSplit, iterate_batches
from slimbert.errors import ExportError
from slimbert.progress import progress_bar
from slimbert.quantize.config import CalibrationName

log = logging.getLogger(__name__)




def ort_method(name: CalibrationName):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
            "distribution": CalibrationMethod.Distribution}[name]


def with_inferred_shapes(src: Path, dest: Path) -> Path:
    """Copy of ``src`` with value_info for every tensor, contrib ops included.

    The calibrator only records tensors whose type it knows; after ORT's fused contrib ops
    (Attention, SkipLayerNormalization) ONNX's own shape inference knows nothing, so the
    pooler and classifier inputs would get no range. ORT's symbolic shape inference knows
    the contrib ops.
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(src))
    try:
        model = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)
    except Exception as exc:  # the graph still quantizes; ranges may miss some tensors
        log.warning("symbolic shape inference failed on %s (%s); using ONNX shape inference",
                    src, exc)
        model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, str(dest))
    return dest


class _OneBatch:
    """A CalibrationDataReader that yields a single batch."""

    def __init__(self, batch: dict):
        self.batch: dict | None = batch

    def get_next(self) -> dict | None:
        batch, self.batch = self.batch, None
        return batch


def calibrate(model_path: Path, examples: EncodedSplit, method: CalibrationName, cache_path: Path, *,
              batch_size: int = 32, percentile: float = 99.999, progress: bool = False) -> Path:
    """Activation ranges of ``model_path`` on ``examples``, saved as ORT's calibration cache."""
    from onnxruntime.quantization import create_calibrator, save_tensors_data

    if len(examples) < batch_size:
        raise ExportError(
            f"calibration needs at least one full batch ({batch_size} examples); "
            f"the calibration split has {len(examples)}.",
            hint="use a larger split, or lower calibration_batch_size.",
        )
    options = {"percentile": percentile} if method == "percentile" else {}
    input_names = set(examples.input_names)
    total = -(-len(examples) // batch_size)
    # ORT's histogram collector prints a line per batch: keep stdout for the user's output
    with tempfile.TemporaryDirectory(prefix="slimbert-calib-") as tmp, \
            contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(model_path, [], augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=ort_method(method), extra_options=options)
        for _, batch in progress_bar(iterate_batches(examples, batch_size), enabled=progress,
                                     total=total, desc=f"calibrate ({method})", leave=False):
            calibrator.collect_data(_OneBatch({k: v for k, v in batch.items() if k in input_names}))
        ranges = calibrator.compute_data()
    save_tensors_data(ranges, cache_path)
    log.info("calibrated %d tensors with %s on %d examples", len(ranges.data), method, len(examples))
    return cache_path
