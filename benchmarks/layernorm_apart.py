"""What keeping Add + LayerNormalization apart in INT8 files buys, artifact by artifact.

    python benchmarks/layernorm_apart.py --folder runs/optimize/candidates \
        [--results benchmarks/results/layernorm_apart.json]

For every INT8 QOperator graph in ``--folder`` (its subfolders' ``model.onnx`` files with
QOperator INT8 ops; Q/DQ graphs have none) quantized while ONNX Runtime could still fuse it,
the file is rewritten as ``quantize-onnx`` now writes it (slimbert.quantize.onnx_ptq.
keep_add_layernorm_apart: dynamic dims unnamed, so ORT's SkipLayerNormFusion does not match)
into a temporary folder, and both are loaded with ORT's defaults, as every loader runs them:

- ``p50_ms_fused`` / ``p50_ms_apart``: batch 1, 128 tokens, all cores, interleaved rounds;
- ``identical_to_fusion_off``: the rewritten file's logits equal the original's loaded with
  SkipLayerNormFusion disabled (the graph ort-cpu measured before it loaded with defaults).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from slimbert.artifacts import write_json_atomic
from slimbert.bench.latency import interleaved_p50_ms, synthetic_batch
from slimbert.models import load_tokenizer
from slimbert.quantize.onnx_ptq import keep_add_layernorm_apart

RESULTS = Path(__file__).parent / "results" / "layernorm_apart.json"
QOPERATOR_OPS = {"QAttention", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul"}


def int8_graphs(folder: Path) -> list[Path]:
    import onnx

    found = []
    for path in sorted(folder.glob("*/model.onnx")):
        ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
        if ops & QOPERATOR_OPS:
            found.append(path.parent)
    return found


def compare(folder: Path, work: Path, rounds: int = 8, runs: int = 15) -> dict:
    import onnxruntime as ort

    apart = work / "model.onnx"
    shutil.copy2(folder / "model.onnx", apart)
    keep_add_layernorm_apart(apart)
    cpu = ["CPUExecutionProvider"]
    sessions = {"fused": ort.InferenceSession(str(folder / "model.onnx"), providers=cpu),
                "apart": ort.InferenceSession(str(apart), providers=cpu)}
    off = ort.InferenceSession(str(folder / "model.onnx"), providers=cpu,
                               disabled_optimizers=["SkipLayerNormFusion"])
    names = tuple(i.name for i in off.get_inputs())
    feed = synthetic_batch(1, 128, load_tokenizer(folder).vocab_size, names)
    identical = bool(np.array_equal(sessions["apart"].run(None, feed)[0], off.run(None, feed)[0]))
    p50 = interleaved_p50_ms({k: partial(s.run, None, feed) for k, s in sessions.items()},
                             rounds=rounds, per_round=runs)
    return {"artifact": folder.name, "p50_ms_fused": p50["fused"], "p50_ms_apart": p50["apart"],
            "fused_over_apart": round(p50["fused"] / p50["apart"], 3), "identical_to_fusion_off": identical}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for folder in int8_graphs(args.folder):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(compare(folder, Path(tmp)))
        print(rows[-1])
    ratios = [r["fused_over_apart"] for r in rows]
    summary = {"artifacts": len(rows), "median_fused_over_apart": round(float(np.median(ratios)), 3),
               "min": min(ratios), "max": max(ratios),
               "all_identical_to_fusion_off": all(r["identical_to_fusion_off"] for r in rows)}
    write_json_atomic(args.results, {"folder": str(args.folder), "machine": platform.processor() or
                                     platform.machine(), "summary": summary, "rows": rows})
    print(summary)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
