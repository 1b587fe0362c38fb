"""Random-weight BERT shapes on the GPU serving runtimes: the latency table of issue 29.

    python benchmarks/gpu_shapes.py --shape student-3x384 --out part.json [--work DIR]
        [--targets torch-cuda-compile-fp16 torch-cuda-graph-fp16 ...]

Why random weights: latency depends on a model's shape, not on its values, and a random
model of each shape is built on the GPU machine itself, so nothing has to travel there
(BERT-base alone is 440 MB; what travels is capped at 64 MiB). The three shapes are the
3-layer 384-wide student, the MiniLM-L6 teacher (6 x 384) and BERT-base (12 x 768).

Each row is one runtime, timed at batch 1 and 32 with 128 tokens through slimbert's own
``Session.run`` (host inputs in, host logits out: the copies are in every row alike). The
first call of each batch size, which compiles and captures, is timed apart
(``first_call_s``) and kept out of the latency. Every row's logits on one fixed batch are
compared with eager fp32 of the same weights (relative error), so a graph that replays
stale buffers shows up as wrong, not as fast. Rows are written to ``--out`` as each one
finishes: if the process is stopped, the rows measured so far remain.
"""

from __future__ import annotations

import argparse
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from slimbert.artifacts import write_json_atomic
from slimbert.bench.latency import measure_latency, synthetic_batch
from slimbert.runtimes import all_runtimes


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int = 30522
    max_positions: int = 512


SHAPES = {
    "student-3x384": Shape(layers=3, hidden=384, heads=12, intermediate=1536),
    "minilm-l6-6x384": Shape(layers=6, hidden=384, heads=12, intermediate=1536),
    "bert-base-12x768": Shape(layers=12, hidden=768, heads=12, intermediate=3072),
}
# issue 29's targets for slimbert's best graph-captured row at batch 1 (targets, not measurements)
TARGET_B1_MS = {"student-3x384": 0.15, "minilm-l6-6x384": 0.30, "bert-base-12x768": 0.55}
BASELINE = "torch-cuda-compile-fp16"  # the torch.compile(mode="reduce-overhead") one-liner
REFERENCE = "torch-cuda"  # eager fp32 of the same weights: what every row's logits are held to
# in order of what matters most: a row cut off by a phase timeout should be the least needed
DEFAULT_TARGETS = [BASELINE, "torch-cuda-graph-fp16", "torch-cuda-fp16", "ort-cuda-graph",
                   "torch-cuda-graph-int8wo", "torch-cuda-graph-fp8"]
BATCH_SIZES = [1, 32]
SEQ_LEN = 128


@dataclass(frozen=True)
class Timing:
    """How long each batch size is timed: enough replays for a stable median at ~0.2 ms each."""

    warmup: int = 20
    min_iters: int = 50
    max_iters: int = 2000
    budget_s: float = 1.0


def is_graph_runtime(target: str) -> bool:
    """slimbert's graph-captured runtimes: the rows issue 29's targets apply to."""
    return target.startswith("torch-cuda-graph-") or target == "ort-cuda-graph"


def make_model_folder(shape: Shape, folder: Path, seed: int = 0) -> Path:
    """Save a random BertForSequenceClassification of ``shape`` with a minimal tokenizer.

    The tokenizer only tells runtimes which inputs the model takes; latency batches are
    drawn from the model's full vocabulary (``synthetic_batch``).
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie"]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    config = BertConfig(vocab_size=shape.vocab_size, hidden_size=shape.hidden,
                        num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                        intermediate_size=shape.intermediate, max_position_embeddings=shape.max_positions,
                        num_labels=2)
    torch.manual_seed(seed)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    return folder


def onnx_folder(model_folder: Path) -> Path:
    """The model exported to ONNX beside it (once), for the ONNX Runtime rows."""
    from slimbert.export.config import OnnxExportConfig
    from slimbert.export.onnx import copy_model_metadata, torch_export
    from slimbert.formats import ONNX_FILE
    from slimbert.models import load_classifier
    from slimbert.runtimes.torch_runtime import model_input_names

    out = model_folder.parent / f"{model_folder.name}-onnx"
    if not (out / ONNX_FILE).is_file():
        out.mkdir(parents=True, exist_ok=True)
        model = load_classifier(model_folder).eval()
        torch_export(model, model_input_names(model_folder), out / ONNX_FILE, OnnxExportConfig())
        copy_model_metadata(model_folder, out)
    return out


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """||out - ref|| / ||ref||: the check METHOD-style comparisons use (fp16 lands near 1e-3)."""
    return float(np.linalg.norm(out - ref) / max(float(np.linalg.norm(ref)), 1e-30))


def measure_target(target: str, folder: Path, shape: Shape, timing: Timing, batch_sizes: list[int],
                   check_batch: dict[str, np.ndarray], reference: np.ndarray | None) -> dict:
    """One row: unavailable (why), failed (the error), or measured (latency per batch size)."""
    runtime = all_runtimes()[target]
    reason = runtime.unavailable_reason()
    if reason:
        return {"target": target, "status": "unavailable", "reason": reason}
    row: dict = {"target": target, "description": runtime.description}
    try:
        start = time.perf_counter()
        path = onnx_folder(folder) if runtime.kind == "onnx" else folder
        session = runtime.load_alone(path)
        row["load_s"] = round(time.perf_counter() - start, 2)
        row["first_call_s"], row["latency"] = {}, []
        for batch_size in batch_sizes:
            batch = synthetic_batch(batch_size, SEQ_LEN, shape.vocab_size, session.input_names)
            start = time.perf_counter()
            session.run(batch)  # compiles / captures this bucket: setup, not latency
            row["first_call_s"][batch_size] = round(time.perf_counter() - start, 2)
            stats = measure_latency(session, batch, warmup=timing.warmup, min_iters=timing.min_iters,
                                    max_iters=timing.max_iters, budget_s=timing.budget_s)
            row["latency"].append(asdict(stats))
        logits = session.run({k: v for k, v in check_batch.items() if k in session.input_names})
        row["logits"] = logits
        if reference is not None:
            row["rel_error_vs_fp32"] = relative_error(logits, reference)
        if getattr(session, "setup_seconds", None):
            row["setup_seconds"] = dict(session.setup_seconds)
        row["status"] = "measured"
    except Exception as exc:  # one broken runtime must not cost the other rows
        row.update(status="failed", reason=f"{type(exc).__name__}: {exc}".splitlines()[0],
                   traceback=traceback.format_exc().splitlines()[-12:])
    return row


def run_shape(name: str, shape: Shape, work: Path, out: Path, targets: list[str], *,
              reference: str = REFERENCE, batch_sizes: list[int] | None = None,
              timing: Timing = Timing()) -> dict:
    """Build the shape's random model, measure every target on it, rewrite ``out`` after each row."""
    batch_sizes = batch_sizes or BATCH_SIZES
    part = {"shape": name, "config": asdict(shape), "seq_len": SEQ_LEN, "batch_sizes": batch_sizes,
            "reference": reference, "timing": asdict(timing), **device_info(), "rows": [], "done": False}
    write_json_atomic(out, part)
    folder = make_model_folder(shape, work / name)
    check_batch = synthetic_batch(max(batch_sizes), SEQ_LEN, shape.vocab_size,
                                  ("input_ids", "attention_mask", "token_type_ids"), seed=1)
    ref_row = measure_target(reference, folder, shape, Timing(warmup=1, min_iters=1, max_iters=1),
                             [1], check_batch, None)
    ref_logits = ref_row.pop("logits", None)
    part["reference_status"] = {k: ref_row[k] for k in ("status", "reason") if k in ref_row}
    for target in targets:
        row = measure_target(target, folder, shape, timing, batch_sizes, check_batch, ref_logits)
        row.pop("logits", None)
        part["rows"].append(row)
        write_json_atomic(out, part)
        _release_gpu()
    part["done"] = True
    write_json_atomic(out, part)
    return part


def device_info() -> dict:
    """The card and the versions, in every file that holds a number."""
    info = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["capability"] = list(torch.cuda.get_device_capability())
    else:
        info["gpu"] = None
    return info


def _release_gpu() -> None:
    """Free what a row left (compiled graphs, captured pools) before the next is timed."""
    import gc

    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def no_cuda_message() -> str | None:
    """Why this bench cannot run here, or None when a CUDA GPU is visible."""
    if torch.cuda.is_available():
        return None
    return (f"gpu_shapes.py needs a CUDA GPU visible to PyTorch; this torch ({torch.__version__}, "
            f"CUDA {torch.version.cuda}) sees none. Run benchmarks/gpu_measure.sh on a GPU machine "
            "(docs/gpu.md, 'How to measure').")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--out", type=Path, required=True, help="this shape's JSON (rewritten per row)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/slimbert-gpu-shapes"),
                        help="where the random models are saved")
    parser.add_argument("--targets", nargs="+", default=DEFAULT_TARGETS)
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in all_runtimes()]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}; known: {', '.join(sorted(all_runtimes()))}")
    message = no_cuda_message()
    if message:
        raise SystemExit(message)
    part = run_shape(args.shape, SHAPES[args.shape], args.work, args.out, args.targets)
    for row in part["rows"]:
        p50 = {s["batch_size"]: round(s["p50_ms"], 3) for s in row.get("latency", [])}
        print(args.shape, row["target"], row["status"], p50 or row.get("reason", ""))


if __name__ == "__main__":
    main()
