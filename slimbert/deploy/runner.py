#!/usr/bin/env python3
"""On-device runner of a slimbert bundle: verify, check, predict, bench.

This file ships inside every bundle and runs on the target device, so it depends on the
standard library plus numpy, onnxruntime and tokenizers only (never torch, transformers
or slimbert: a Raspberry Pi or a phone should not need them). It reads the bundle it sits
in, resolved through symlinks, so ``<root>/current/runner.py`` keeps using the same release
even if ``current`` is switched while it runs. It stays compatible with Python 3.8.

Exit codes: 0 ok, 2 bad arguments, 3 a file does not match bundle.json, 4 a Python package
is missing, 5 the model cannot run (bad input length, unreadable model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time

BUNDLE_DIR = os.path.dirname(os.path.realpath(__file__))
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
PACKAGES = ("numpy", "onnxruntime", "tokenizers")  # import name == pip name for all three

EXIT_VERIFY, EXIT_MISSING, EXIT_CANNOT_RUN = 3, 4, 5


def fail(code: int, *lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)
    sys.exit(code)


def read_json(name: str) -> dict:
    with open(os.path.join(BUNDLE_DIR, name), encoding="utf-8") as fh:
        return json.load(fh)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- verify / check


def cmd_verify(args: argparse.Namespace) -> None:
    """A partial upload or a flipped bit must never be activated: compare every file's hash."""
    try:
        manifest = read_json(BUNDLE_FILE)
    except (OSError, ValueError) as exc:
        fail(EXIT_VERIFY, f"bundle verification failed: cannot read {BUNDLE_FILE} ({exc})")
    bad = []
    for name, expected in sorted(manifest.get("files", {}).items()):
        path = os.path.join(BUNDLE_DIR, name)
        if not os.path.isfile(path):
            bad.append(f"{name} (missing)")
        elif sha256_file(path) != expected:
            bad.append(f"{name} (sha256 mismatch)")
    if bad:
        fail(EXIT_VERIFY, "bundle verification failed: " + ", ".join(bad))
    print(json.dumps({"verified": len(manifest["files"]), "bundle_id": manifest.get("bundle_id")}))


def cmd_check(args: argparse.Namespace) -> None:
    """Find a missing runtime before the bundle is activated, with the command that fixes it."""
    missing, versions = [], {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            module = __import__(name)
        except ImportError:
            missing.append(name)
        else:
            versions[name] = getattr(module, "__version__", "?")
    if missing:
        fail(EXIT_MISSING, f"missing Python packages: {', '.join(missing)}",
             f"fix: {sys.executable} -m pip install {' '.join(missing)}")
    print(json.dumps(versions))


# ---------------------------------------------------------------------------- model


def load_session(threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Spinning threads would keep cores busy between runs and skew the timings of whatever
    # else the device does; slimbert's own benchmarks disable it too, so numbers compare.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(os.path.join(BUNDLE_DIR, MODEL_FILE), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        fail(EXIT_CANNOT_RUN, f"onnxruntime cannot load {MODEL_FILE}: {str(exc).splitlines()[0]}")


def max_positions(config: dict) -> int | None:
    positions = config.get("max_position_embeddings")
    if positions and config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # RoBERTa offsets positions by the padding index
    return positions


def cmd_predict(args: argparse.Namespace) -> None:
    import numpy as np
    from tokenizers import Tokenizer

    config = read_json("config.json")
    tokenizer = Tokenizer.from_file(os.path.join(BUNDLE_DIR, "tokenizer.json"))
    tokenizer.enable_truncation(min(args.max_length, max_positions(config) or args.max_length))
    tokenizer.enable_padding(pad_id=config.get("pad_token_id") or 0)
    encodings = tokenizer.encode_batch(args.texts)
    session = load_session(args.threads)
    names = [i.name for i in session.get_inputs()]
    columns = {"input_ids": [e.ids for e in encodings],
               "attention_mask": [e.attention_mask for e in encodings],
               "token_type_ids": [e.type_ids for e in encodings]}
    feed = {n: np.asarray(columns[n], dtype=np.int64) for n in names}
    logits = session.run(None, feed)[0]
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    probs = exp / exp.sum(-1, keepdims=True)
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    labels = [id2label.get(i, str(i)) for i in range(probs.shape[-1])]
    out = []
    for n, text in enumerate(args.texts):  # no zip(strict=): the runner supports Python 3.8
        row = probs[n]
        best = int(row.argmax())
        out.append({"text": text, "label": labels[best], "score": round(float(row[best]), 6),
                    "scores": {label: round(float(row[i]), 6) for i, label in enumerate(labels)}})
    print(json.dumps(out))


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, names: list, seed: int = 0) -> dict:
    """Full-length inputs, as slimbert/bench/latency.py builds them, so rows compare."""
    import numpy as np

    rng = np.random.default_rng(seed)
    # skip the low ids, where BERT vocabularies keep special and unused tokens
    ids = rng.integers(min(1000, vocab_size // 4), vocab_size, size=(batch_size, seq_len), dtype=np.int64)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in names:
        batch["token_type_ids"] = np.zeros_like(ids)
    return {k: v for k, v in batch.items() if k in names}


def measure(session, batch: dict, warmup: int, min_iters: int, max_iters: int, budget_s: float) -> dict:
    import numpy as np

    for _ in range(warmup):
        session.run(None, batch)
    times = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        session.run(None, batch)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    p50 = float(np.percentile(ms, 50))
    batch_size, seq_len = batch["input_ids"].shape
    return {"batch_size": int(batch_size), "seq_len": int(seq_len), "iterations": len(times),
            "p50_ms": p50, "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "throughput": batch_size / (p50 / 1e3)}


def cmd_bench(args: argparse.Namespace) -> None:
    import onnxruntime as ort

    config = read_json("config.json")
    bundle = read_json(BUNDLE_FILE)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        fail(2, f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not batch_sizes or min(batch_sizes) < 1 or args.seq_len < 2:
        fail(2, "batch sizes must be >= 1 and --seq-len >= 2")
    limit = max_positions(config)
    if limit and args.seq_len > limit:
        fail(EXIT_CANNOT_RUN, f"--seq-len {args.seq_len} is beyond the model's maximum of {limit} positions")
    vocab_size = config.get("vocab_size")
    if not vocab_size:
        from tokenizers import Tokenizer

        vocab_size = Tokenizer.from_file(os.path.join(BUNDLE_DIR, "tokenizer.json")).get_vocab_size()
    session = load_session(args.threads)
    names = [i.name for i in session.get_inputs()]
    latency = [measure(session, synthetic_batch(b, args.seq_len, vocab_size, names), args.warmup,
                       args.min_iters, args.max_iters, args.budget_s) for b in batch_sizes]
    model_bytes = sum(os.path.getsize(os.path.join(BUNDLE_DIR, n)) for n in os.listdir(BUNDLE_DIR)
                      if n.endswith((".onnx", ".onnx.data")))
    print(json.dumps({
        "latency": latency,
        "size_mb": round(model_bytes / 1e6, 2),
        "bundle_id": bundle.get("bundle_id"),
        "artifact": bundle.get("artifact"),
        "platform": f"{platform.platform()} ({platform.machine()}, {os.cpu_count()} cores)",
        "threads": args.threads,
        "onnxruntime": ort.__version__,
    }))


# ---------------------------------------------------------------------------- main


def parse_args(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="runner.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check every file against bundle.json").set_defaults(fn=cmd_verify)
    check = sub.add_parser("check", help="check that numpy, onnxruntime and tokenizers import")
    check.set_defaults(fn=cmd_check)
    predict = sub.add_parser("predict", help="classify TEXTs; prints JSON labels and scores")
    predict.add_argument("texts", nargs="+", metavar="TEXT")
    predict.add_argument("--max-length", type=int, default=512)
    predict.add_argument("--threads", type=int, default=None)
    predict.set_defaults(fn=cmd_predict)
    bench = sub.add_parser("bench", help="latency on full-length synthetic inputs; prints JSON")
    bench.add_argument("--batch-sizes", default="1,8")
    bench.add_argument("--seq-len", type=int, default=128)
    bench.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--min-iters", type=int, default=10)
    bench.add_argument("--max-iters", type=int, default=200)
    bench.add_argument("--budget-s", type=float, default=2.0)
    bench.set_defaults(fn=cmd_bench)
    return parser.parse_args(argv)


def main(argv: list | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.fn(args)


if __name__ == "__main__":
    main()
