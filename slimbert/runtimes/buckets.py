"""Shape buckets for graph-captured runtimes: which (batch, sequence) shape a batch runs as.

A CUDA graph replays fixed shapes. Serving stacks (vLLM, TensorRT-LLM, ONNX Runtime's
``gpu_graph_id``) therefore capture one graph per bucket and pad each request up to the
smallest bucket that holds it. The ladders here grow by about 1.5x, so padding wastes at
most a third of the work, and a session captures only the buckets its traffic reaches.
This module is plain numpy: the padding, chunking and slicing are tested without a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from slimbert.errors import SlimbertError
from slimbert.runtimes.base import Session

BATCH_LADDER = (1, 2, 4, 8, 16, 32, 64)
SEQ_LADDER = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclass(frozen=True)
class Buckets:
    """The shapes a session may capture: batch sizes and sequence lengths, ascending."""

    batch_sizes: tuple[int, ...] = BATCH_LADDER
    seq_lens: tuple[int, ...] = SEQ_LADDER

    def __post_init__(self) -> None:
        for name, values in (("batch_sizes", self.batch_sizes), ("seq_lens", self.seq_lens)):
            if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
                raise SlimbertError(f"bucket {name} must be distinct positive integers in ascending "
                                    f"order, got {list(values)}")

    @property
    def max_batch(self) -> int:
        return self.batch_sizes[-1]

    def within(self, max_positions: int) -> Buckets:
        """These buckets cut to a model's position limit (which becomes the last length)."""
        seq = tuple(s for s in self.seq_lens if s < max_positions) + (max_positions,)
        return Buckets(self.batch_sizes, tuple(sorted(set(seq))))

    def fitted(self, lengths: Sequence[int]) -> Buckets:
        """Sequence buckets at the data's length quantiles, then this ladder above its longest.

        The data's own lengths get tight buckets; longer requests (a latency sweep, a
        document longer than any seen) still find one on the ladder.
        """
        fitted = seq_buckets_from_lengths(lengths, self.seq_lens[-1])
        above = {s for s in self.seq_lens if s > fitted[-1]}
        return Buckets(self.batch_sizes, tuple(sorted(set(fitted) | above)))

    def pick(self, rows: int, seq_len: int) -> tuple[int, int]:
        """The smallest bucket that holds ``rows`` x ``seq_len`` (rows <= max_batch)."""
        if seq_len > self.seq_lens[-1]:
            raise SlimbertError(
                f"a batch of length {seq_len} is longer than the longest bucket ({self.seq_lens[-1]})",
                hint="add a longer sequence bucket, or truncate inputs to the model's max_length.")
        batch = next(b for b in self.batch_sizes if b >= rows)
        seq = next(s for s in self.seq_lens if s >= seq_len)
        return batch, seq


def seq_buckets_from_lengths(lengths: Sequence[int], max_len: int, *, multiple: int = 16,
                             quantiles: Sequence[float] = (0.5, 0.75, 0.9, 0.99)) -> tuple[int, ...]:
    """Sequence buckets fitted to a dataset: its length quantiles rounded up to ``multiple``,
    and its longest length (capped at ``max_len``) as the last bucket.

    Short-text data (most sentences under 32 tokens) then never pays for 128-token graphs,
    and long documents get a bucket at their real maximum instead of the next power of two.
    """
    if len(lengths) == 0:
        raise SlimbertError("no lengths to fit sequence buckets to")
    longest = min(max_len, max(int(max(lengths)), 1))
    values = np.quantile(np.asarray(lengths), list(quantiles))
    rounded = {-(-int(np.ceil(v)) // multiple) * multiple for v in values}
    return tuple(sorted({b for b in rounded if b < longest} | {longest}))


def pad_batch(batch: dict[str, np.ndarray], rows: int, seq_len: int) -> dict[str, np.ndarray]:
    """``batch`` zero-padded to ``rows`` x ``seq_len``; the model sees padding it masks out.

    Padded positions get attention_mask 0, as a tokenizer's padding would. Padded rows keep
    one attended token: a row with every position masked is NaN in some attention kernels,
    and although the row is sliced off, a NaN must never be computed in a captured graph.
    """
    n, length = next(iter(batch.values())).shape
    if n > rows or length > seq_len:
        raise ValueError(f"batch {n}x{length} does not fit bucket {rows}x{seq_len}")
    padded = {}
    for name, values in batch.items():
        out = np.zeros((rows, seq_len), dtype=values.dtype)
        out[:n, :length] = values
        padded[name] = out
    if "attention_mask" in padded and rows > n:
        padded["attention_mask"][n:, 0] = 1
    return padded


# a function that runs one bucket: padded numpy inputs -> logits (rows of the bucket)
BucketForward = Callable[[dict[str, np.ndarray]], np.ndarray]
# (rows, seq_len) -> that bucket's forward, built (captured) once
CaptureFn = Callable[[int, int], BucketForward]


class BucketedSession(Session):
    """Pads each batch to a bucket, runs that bucket's captured forward, slices the rows back.

    Batches larger than the largest batch bucket run in chunks. The capture function is the
    only CUDA-specific part, so the padding, chunking and slicing are tested on CPU with an
    eager forward in its place.
    """

    def __init__(self, input_names: tuple[str, ...], buckets: Buckets, capture: CaptureFn):
        self.input_names = input_names
        self.buckets = buckets
        self._capture = capture
        self._forwards: dict[tuple[int, int], BucketForward] = {}
        self.setup_seconds: dict[str, float] = {}  # "rows x seq" -> compile + warm-up + capture

    @property
    def captured(self) -> list[tuple[int, int]]:
        return sorted(self._forwards)

    def _forward(self, rows: int, seq_len: int) -> BucketForward:
        key = (rows, seq_len)
        if key not in self._forwards:
            start = time.perf_counter()
            self._forwards[key] = self._capture(rows, seq_len)
            self.setup_seconds[f"{rows}x{seq_len}"] = round(time.perf_counter() - start, 3)
        return self._forwards[key]

    def fit_to_lengths(self, lengths: Sequence[int]) -> None:
        """Refit the sequence buckets to a dataset's lengths (before anything is captured)."""
        if self._forwards:
            raise SlimbertError("buckets are refitted before the first capture, not after")
        self.buckets = self.buckets.fitted(lengths)

    def warm(self, shapes: list[tuple[int, int]]) -> None:
        """Capture the buckets of these (batch, sequence) shapes ahead of timing."""
        for rows, seq_len in shapes:
            self._forward(*self.buckets.pick(min(rows, self.buckets.max_batch), seq_len))

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        batch = {k: batch[k] for k in self.input_names}
        n, seq_len = batch[self.input_names[0]].shape
        outputs = []
        for start in range(0, n, self.buckets.max_batch):
            chunk = {k: v[start:start + self.buckets.max_batch] for k, v in batch.items()}
            rows = len(chunk[self.input_names[0]])
            bucket_rows, bucket_seq = self.buckets.pick(rows, seq_len)
            logits = self._forward(bucket_rows, bucket_seq)(pad_batch(chunk, bucket_rows, bucket_seq))
            outputs.append(logits[:rows])
        return np.concatenate(outputs)
