"""Does a plain onnxruntime session, with default options, give what the bench measured?

A report is worth what a user of the file gets. Every other loader of an ONNX artifact
(onnxruntime with default options, Optimum's ORTModel, the deploy runner on a device) runs
ONNX Runtime's default graph optimizations; a bench that switched one off measured a
graph nobody else runs (a dynamic-INT8 graph's logits moved by up to 0.46). This check
loads each ONNX row's file in a session with nothing set and compares its predictions on
the bench's own split with the row's, in the shape the bench scored them: one example at a
time for a graph with dynamic activation scales (they depend on the rest of the batch), the
bench's batches otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slimbert.bench.report import BenchReport
from slimbert.data import TextClassificationData, encode_split
from slimbert.formats import ONNX_FILE


def plain_session_agreement(report: BenchReport, data: TextClassificationData,
                            max_length: int) -> list[dict[str, Any]]:
    """Per ONNX row on ort-cpu: the share of the bench's predictions a default session reproduces."""
    import onnxruntime as ort

    from slimbert.models import load_tokenizer
    from slimbert.runtimes.onnxruntime_runtime import OrtSession, has_dynamic_quantization

    split = data.splits[report.config.get("split", "test")]
    results = []
    for row in report.find(target="ort-cpu"):
        path = Path(row.path)
        plain = OrtSession(ort.InferenceSession(str(path / ONNX_FILE), providers=["CPUExecutionProvider"]),
                           batch_dependent=has_dynamic_quantization(path / ONNX_FILE))
        encoded = encode_split(load_tokenizer(path), split, max_length)
        predictions = plain.served_logits(encoded, report.config.get("eval_batch_size", 64)).argmax(-1)
        bench = np.asarray(row.predictions)
        results.append({"artifact": row.artifact, "path": str(path), "examples": len(bench),
                        "agreement": float(np.mean(predictions == bench)),
                        "differing": int(np.sum(predictions != bench))})
    return results
