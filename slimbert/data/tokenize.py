"""Tokenize once, then batch by length so padding does not eat the CPU.

Sentences in the default task average ~25 tokens; padding each random batch to its
longest member roughly doubles the work. Training batches are therefore drawn from
length-sorted pools of 50 batches (shuffled pools, shuffled batch order: still random
enough for SGD), and evaluation sorts the whole split by length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from slimbert.data.loading import Split

POOL_BATCHES = 50


@dataclass
class EncodedSplit:
    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    labels: np.ndarray
    pad_id: int
    input_names: tuple[str, ...]  # what the model takes: input_ids, attention_mask, ...

    def __len__(self) -> int:
        return len(self.input_ids)

    def head(self, n: int) -> EncodedSplit:
        """The first ``n`` examples (all of them if there are fewer)."""
        return EncodedSplit(
            input_ids=self.input_ids[:n],
            token_type_ids=self.token_type_ids[:n] if self.token_type_ids is not None else None,
            labels=self.labels[:n],
            pad_id=self.pad_id,
            input_names=self.input_names,
        )

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))


def encode_split(tokenizer, split: Split, max_length: int) -> EncodedSplit:
    """Token ids for every example, truncated to ``max_length`` and not padded."""
    enc = tokenizer(
        split.texts,
        split.pairs,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    wants_types = "token_type_ids" in tokenizer.model_input_names
    names = ("input_ids", "attention_mask") + (("token_type_ids",) if wants_types else ())
    return EncodedSplit(
        input_ids=[np.asarray(x, dtype=np.int64) for x in enc["input_ids"]],
        token_type_ids=(
            [np.asarray(x, dtype=np.int64) for x in enc["token_type_ids"]] if wants_types else None
        ),
        labels=split.labels,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        input_names=names,
    )


def collate(enc: EncodedSplit, index: np.ndarray) -> dict[str, np.ndarray]:
    """Pad the examples at ``index`` to their longest member."""
    width = max(len(enc.input_ids[i]) for i in index)
    ids = np.full((len(index), width), enc.pad_id, dtype=np.int64)
    mask = np.zeros((len(index), width), dtype=np.int64)
    types = np.zeros((len(index), width), dtype=np.int64) if enc.token_type_ids else None
    for row, i in enumerate(index):
        n = len(enc.input_ids[i])
        ids[row, :n] = enc.input_ids[i]
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = enc.token_type_ids[i]
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def training_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                     pool_batches: int = POOL_BATCHES) -> list[np.ndarray]:
    """The epoch's batches of example indices; a pure function of its arguments.

    Being pure is what makes mid-epoch resume exact: a resumed run rebuilds the same
    list and skips the batches it already trained on. ``pool_batches=1`` gives plain
    random batches (no length grouping).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def iterate_batches(enc: EncodedSplit, batch_size: int) -> Iterator[tuple[np.ndarray, dict]]:
    """Evaluation batches in length order; yields (indices, padded batch)."""
    order = np.argsort(enc.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield index, collate(enc, index)
