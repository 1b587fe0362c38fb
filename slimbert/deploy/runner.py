#!/usr/bin/env python3
"""On-device runner of a slimbert bundle: verify, check, health, predict, bench.

This file ships inside every bundle and runs on the target device, so it depends on the
standard library plus numpy, tokenizers and the bundle's runtime only: onnxruntime for
``model.onnx`` and ``model.ort``, ExecuTorch (with torch, which its Python runtime takes
tensors from) for ``model.pte``; never transformers or slimbert. It reads the bundle it sits
in, resolved through symlinks, so ``<root>/current/runner.py`` keeps using the same release
even if ``current`` is switched while it runs. It stays compatible with Python 3.8.

Exit codes: 0 ok, 2 bad arguments, 3 a file does not match bundle.json, 4 a Python package
is missing, 5 the model cannot run (bad input length, unreadable model, a kernel missing),
6 the health check disagrees with the predictions recorded on the build machine.
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
HEALTH_FILE = "health.json"
DEFAULT_MODEL_FILE = "model.onnx"  # bundles made before bundle.json named its model file
# import names == pip names; the runtime's packages follow from the model file's suffix
PACKAGES = {".onnx": ("numpy", "onnxruntime", "tokenizers"), ".ort": ("numpy", "onnxruntime", "tokenizers"),
            ".pte": ("numpy", "tokenizers", "torch", "executorch")}

EXIT_VERIFY, EXIT_MISSING, EXIT_CANNOT_RUN, EXIT_UNHEALTHY = 3, 4, 5, 6


def fail(code: int, *lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)
    sys.exit(code)


def read_json(name: str) -> dict:
    with open(os.path.join(BUNDLE_DIR, name), encoding="utf-8") as fh:
        return json.load(fh)


def model_file() -> str:
    try:
        return read_json(BUNDLE_FILE).get("model_file") or DEFAULT_MODEL_FILE
    except (OSError, ValueError):
        return DEFAULT_MODEL_FILE


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
    for name in PACKAGES[os.path.splitext(model_file())[1]]:
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


class OrtModel:
    """model.onnx or model.ort in onnxruntime (it reads both formats)."""

    def __init__(self, path: str, threads) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Spinning threads would keep cores busy between runs and skew the timings of whatever
        # else the device does; slimbert's own benchmarks disable it too, so numbers compare.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.runtime = "onnxruntime " + ort.__version__

    def run(self, feed: dict):
        return self.session.run(None, feed)[0]


class PteModel:
    """model.pte in ExecuTorch's runtime; memory is planned for max_batch rows, so run in chunks."""

    def __init__(self, path: str, threads) -> None:
        from executorch.runtime import Runtime

        meta = read_json("executorch.json")
        self.input_names = list(meta["input_names"])
        self.max_batch, self.max_seq_len = int(meta["max_batch"]), int(meta["max_seq_len"])
        self.method = Runtime.get().load_program(path).load_method("forward")
        import executorch

        self.runtime = "executorch " + getattr(executorch, "__version__", "?")

    def run(self, feed: dict):
        import numpy as np
        import torch

        n, seq = feed[self.input_names[0]].shape
        if seq > self.max_seq_len:
            raise ValueError(f"{seq} tokens is more than the {self.max_seq_len} the program was exported for")
        outs = []
        for start in range(0, n, self.max_batch):
            args = [torch.from_numpy(np.ascontiguousarray(feed[k][start:start + self.max_batch]))
                    for k in self.input_names]
            outs.append(self.method.execute(args)[0].numpy())
        return np.concatenate(outs).astype(np.float32, copy=False)


def load_session(threads: int | None):
    """The bundle's model in its runtime; any failure to load is exit 5 with the runtime's reason."""
    name = model_file()
    cls = PteModel if name.endswith(".pte") else OrtModel
    try:
        return cls(os.path.join(BUNDLE_DIR, name), threads)
    except Exception as exc:  # the runtimes raise their own exception types
        fail(EXIT_CANNOT_RUN, f"cannot load {name}: {(str(exc) or type(exc).__name__).splitlines()[0]}")


def run_model(model, feed: dict):
    """Logits for ``feed``; a graph the device cannot execute (a missing kernel) is exit 5."""
    try:
        return model.run({n: feed[n] for n in model.input_names})
    except Exception as exc:
        fail(EXIT_CANNOT_RUN, f"the model does not run on this device ({model.runtime}): "
                              f"{(str(exc) or type(exc).__name__).splitlines()[0]}")


def max_positions(config: dict) -> int | None:
    positions = config.get("max_position_embeddings")
    if positions and config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # RoBERTa offsets positions by the padding index
    return positions


def encode(config: dict, texts: list, max_length: int) -> dict:
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(BUNDLE_DIR, "tokenizer.json"))
    tokenizer.enable_truncation(min(max_length, max_positions(config) or max_length))
    tokenizer.enable_padding(pad_id=config.get("pad_token_id") or 0)
    encodings = tokenizer.encode_batch(texts)
    columns = {"input_ids": [e.ids for e in encodings],
               "attention_mask": [e.attention_mask for e in encodings],
               "token_type_ids": [e.type_ids for e in encodings]}
    return {k: np.asarray(v, dtype=np.int64) for k, v in columns.items()}


def cmd_predict(args: argparse.Namespace) -> None:
    import numpy as np

    config = read_json("config.json")
    feed = encode(config, args.texts, args.max_length)
    logits = run_model(load_session(args.threads), feed)
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


def run_served(session, feed: dict):
    """Logits of each example alone, unpadded: as a server answers one request. A dynamic-INT8
    graph computes activation scales over its whole input, so a padded batch of the health
    examples would judge a shape no request has (and the bench scores it this way too)."""
    import numpy as np

    rows = []
    for i in range(feed["input_ids"].shape[0]):
        n = max(int(feed["attention_mask"][i].sum()), 1)
        rows.append(run_model(session, {k: v[i:i + 1, :n] for k, v in feed.items()}))
    return np.concatenate(rows, axis=0)


def cmd_record(args: argparse.Namespace) -> None:
    """On the build machine: the examples' token ids and this runtime's predictions, as JSON."""
    import numpy as np

    config = read_json("config.json")
    feed = encode(config, args.texts, args.max_length)
    logits = run_served(load_session(None), feed)
    if not np.isfinite(logits).all():
        fail(EXIT_CANNOT_RUN, "the model gives non-finite logits on the health-check examples")
    print(json.dumps({"texts": args.texts, **{k: v.tolist() for k, v in feed.items()},
                      "predictions": [int(i) for i in logits.argmax(-1)],
                      "logits": [[round(float(x), 5) for x in row] for row in logits]}))


def cmd_health(args: argparse.Namespace) -> None:
    """Run the model on the recorded examples; exit 6 unless it agrees with the build machine.

    The tokenizer is checked too (same ids as recorded), so a tokenizers version that splits
    text differently is caught here, before the release goes live, and not by users.
    """
    import numpy as np

    config, health = read_json("config.json"), read_json(HEALTH_FILE)
    recorded = {k: np.asarray(health[k], dtype=np.int64) for k in ("input_ids", "attention_mask",
                                                                   "token_type_ids")}
    ids = encode(config, health["texts"], recorded["input_ids"].shape[1])["input_ids"]
    tokenizer_ok = ids.shape == recorded["input_ids"].shape and bool((ids == recorded["input_ids"]).all())
    feed = recorded  # the graph is judged on the recorded inputs either way
    model = load_session(args.threads)
    logits = run_served(model, feed)
    finite = bool(np.isfinite(logits).all())
    predictions = [int(i) for i in logits.argmax(-1)]
    expected = health["predictions"]
    agreement = sum(predictions[i] == e for i, e in enumerate(expected)) / max(len(expected), 1)
    report = {"examples": len(expected), "agreement": round(agreement, 4),
              "min_agreement": health["min_agreement"], "finite": finite, "tokenizer_matches": tokenizer_ok,
              "max_abs_logit_diff": round(float(np.abs(logits - np.asarray(health["logits"])).max()), 5)
              if finite else None, "runtime": model.runtime}
    print(json.dumps(report))
    problems = []
    if not finite:
        problems.append("non-finite logits")
    if agreement < health["min_agreement"]:
        problems.append(f"agrees with the build machine on {agreement:.1%} of {len(expected)} recorded "
                        f"examples "
                        f"(< min_agreement {health['min_agreement']:.1%})")
    if not tokenizer_ok:
        problems.append("the tokenizer gives other token ids than on the build machine")
    if problems:
        fail(EXIT_UNHEALTHY, "health check failed: " + "; ".join(problems) + f" ({model.runtime})")


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
        run_model(session, batch)
    times = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        run_model(session, batch)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    p50 = float(np.percentile(ms, 50))
    batch_size, seq_len = batch["input_ids"].shape
    return {"batch_size": int(batch_size), "seq_len": int(seq_len), "iterations": len(times),
            "p50_ms": p50, "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "throughput": batch_size / (p50 / 1e3)}


def cmd_bench(args: argparse.Namespace) -> None:
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
    model = load_session(args.threads)
    names = model.input_names
    latency = [measure(model, synthetic_batch(b, args.seq_len, vocab_size, names), args.warmup,
                       args.min_iters, args.max_iters, args.budget_s) for b in batch_sizes]
    model_bytes = sum(os.path.getsize(os.path.join(BUNDLE_DIR, n)) for n in os.listdir(BUNDLE_DIR)
                      if n.endswith((".onnx", ".onnx.data", ".ort", ".pte")))
    print(json.dumps({
        "latency": latency,
        "size_mb": round(model_bytes / 1e6, 2),
        "bundle_id": bundle.get("bundle_id"),
        "artifact": bundle.get("artifact"),
        "kind": bundle.get("kind") or "onnx",
        "platform": f"{platform.platform()} ({platform.machine()}, {os.cpu_count()} cores)",
        "threads": args.threads,
        "onnxruntime": model.runtime.split(" ", 1)[1] if model.runtime.startswith("onnxruntime") else None,
        "runtime": model.runtime,
    }))


# ---------------------------------------------------------------------------- main


def parse_args(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="runner.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check every file against bundle.json").set_defaults(fn=cmd_verify)
    check = sub.add_parser("check", help="check that the runtime's Python packages import")
    check.set_defaults(fn=cmd_check)
    health = sub.add_parser("health", help="run the model on the recorded examples; exit 6 on disagreement")
    health.add_argument("--threads", type=int, default=None)
    health.set_defaults(fn=cmd_health)
    record = sub.add_parser("record", help="(build machine) token ids and predictions of TEXTs as JSON")
    record.add_argument("texts", nargs="+", metavar="TEXT")
    record.add_argument("--max-length", type=int, default=128)
    record.set_defaults(fn=cmd_record)
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
