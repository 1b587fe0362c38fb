"""The sparsity report: what pruning left, per layer and overall, and what it saves on disk.

Unstructured sparsity does not shrink a dense file, but zeros compress: the gzip size is
what a bundle shipped compressed actually costs, so both sizes are reported.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from slimbert.compress.student import find_layers


def _count(module: nn.Module) -> tuple[int, int]:
    params = zeros = 0
    for p in module.parameters():
        params += p.numel()
        zeros += int((p == 0).sum())
    return params, zeros


def gzip_size(path: Path) -> int:
    """Bytes of ``path`` gzip-compressed (level 6, streamed: no copy in memory)."""

    class _Counter:
        size = 0

        def write(self, data) -> int:
            self.size += len(data)
            return len(data)

        def flush(self) -> None:
            pass

    counter = _Counter()
    with open(path, "rb") as src, gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return counter.size


def sparsity_report(model: nn.Module, folder: Path | None = None) -> dict[str, Any]:
    """Params, zeros, heads and neurons kept per layer; embedding rows; file sizes in ``folder``."""
    layers = []
    for i, layer in enumerate(find_layers(model)[2]):
        params, zeros = _count(layer)
        row: dict[str, Any] = {"layer": i, "params": params, "zeros": zeros,
                               "sparsity": round(zeros / params, 4) if params else 0.0}
        attention = getattr(getattr(layer, "attention", None), "self", None)
        if attention is not None:
            row["heads"] = attention.num_attention_heads
        intermediate = getattr(getattr(layer, "intermediate", None), "dense", None)
        if intermediate is not None:
            row["ffn_neurons"] = intermediate.out_features
        layers.append(row)
    params, zeros = _count(model)
    embeddings = model.get_input_embeddings()
    report: dict[str, Any] = {
        "params": params, "zeros": zeros, "sparsity": round(zeros / params, 4),
        "embedding_rows": embeddings.num_embeddings, "embedding_params": embeddings.weight.numel(),
        "heads": sum(r.get("heads", 0) for r in layers),
        "ffn_neurons": sum(r.get("ffn_neurons", 0) for r in layers),
        "layers": layers,
    }
    if folder is not None:
        weights = [f for f in sorted(Path(folder).iterdir()) if f.suffix in (".safetensors", ".bin")]
        report["files"] = {f.name: {"bytes": f.stat().st_size, "gzip_bytes": gzip_size(f)} for f in weights}
        report["size_mb"] = round(sum(v["bytes"] for v in report["files"].values()) / 1e6, 2)
        report["gzip_mb"] = round(sum(v["gzip_bytes"] for v in report["files"].values()) / 1e6, 2)
    return report
