"""Vocabulary pruning (as TextPruner): keep only the embedding rows the task uses.

A 30k-token BERT vocabulary is most of a small student's weights (MiniLM-L6 at hidden 384:
11.7M of its 22.7M parameters), yet a task corpus touches a fraction of it. The kept rows
are the token ids of the corpus (by default the train and dev texts: the test split stays
unseen, so its accuracy says what happens to new text) that occur at least ``min_count``
times, plus the special tokens (and, by default, the ASCII single characters, so that
unseen words still split into pieces instead of [UNK]); ``word_embeddings`` is sliced and
a WordPiece vocab.txt with those tokens, in their original order, is written beside the
model, so every exporter, runtime and bundle uses the pruned tokenizer unchanged.

Semantics of the pruned tokenizer (WordPiece, greedy longest-match-first): the new vocab
is a subset of the old one, and every piece the old tokenizer produced for a corpus word
is kept, so the greedy match picks the same pieces: corpus texts tokenize to the same
tokens (checked after pruning; with ``min_count`` > 1, the texts all of whose tokens were
kept). A word outside the corpus gets the longest pieces the
kept vocab still has; if it cannot be spelled from them, it becomes [UNK].
"""

from __future__ import annotations

import logging
import string
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimbert.data import TextClassificationData
from slimbert.errors import ModelError

log = logging.getLogger(__name__)

SUPPORTED = "WordPiece tokenizers (BertTokenizerFast: BERT, MiniLM, ELECTRA, DistilBERT)"
# tokenizer options that shape tokenization and must survive the rebuild
_TOKENIZER_KWARGS = ("do_lower_case", "tokenize_chinese_chars", "strip_accents", "model_max_length",
                     "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


@dataclass
class VocabPlan:
    kept_ids: np.ndarray  # original ids, ascending; new id = position
    tokens: list[str]  # the kept tokens in new-id order


def check_wordpiece(tokenizer) -> None:
    """Refuse tokenizers whose vocabulary this module cannot rebuild faithfully."""
    from tokenizers.models import WordPiece

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not isinstance(backend.model, WordPiece) or not hasattr(tokenizer, "vocab"):
        model = type(backend.model).__name__ if backend is not None else type(tokenizer).__name__
        raise ModelError(
            f"vocabulary pruning supports {SUPPORTED}; this model's tokenizer is "
            f"{type(tokenizer).__name__} ({model}).",
            hint="use method: structured or magnitude for this model, or a WordPiece encoder.",
        )


def corpus_texts(data: TextClassificationData, splits: Sequence[str]) -> list[str]:
    """The texts (and pairs) of ``splits``: the corpus the vocabulary is chosen from."""
    missing = [name for name in splits if name not in data.splits]
    if missing:
        raise ModelError(f"vocabulary pruning: the dataset has no {', '.join(missing)} split "
                         f"(it has {', '.join(data.splits)}).",
                         hint="name existing splits in vocab_splits.")
    return [t for name in splits for t in data.splits[name].texts + list(data.splits[name].pairs or [])]


def corpus_token_counts(tokenizer, texts: list[str]) -> np.ndarray:
    """How often each token id occurs in ``texts``, untruncated."""
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    for start in range(0, len(texts), 2048):
        enc = tokenizer(texts[start:start + 2048], add_special_tokens=False, truncation=False)
        for ids in enc["input_ids"]:
            np.add.at(counts, ids, 1)
    return counts


def plan_vocab(tokenizer, texts: list[str], *, keep_ascii_chars: bool = True,
               min_count: int = 1) -> VocabPlan:
    """Which token ids to keep, in their original order."""
    check_wordpiece(tokenizer)
    vocab: dict[str, int] = tokenizer.vocab
    counts = corpus_token_counts(tokenizer, texts)
    keep = set(np.flatnonzero(counts >= min_count).tolist()) | set(tokenizer.all_special_ids)
    if keep_ascii_chars:
        prefix = tokenizer.backend_tokenizer.model.continuing_subword_prefix
        for ch in string.printable.strip():
            for token in (ch, prefix + ch):
                if token in vocab:
                    keep.add(vocab[token])
    kept = np.array(sorted(keep), dtype=np.int64)
    inverse = {i: t for t, i in vocab.items()}
    return VocabPlan(kept_ids=kept, tokens=[inverse[int(i)] for i in kept])


def build_tokenizer(tokenizer, tokens: list[str]):
    """A tokenizer of the same class and options over ``tokens`` (a WordPiece vocab.txt)."""
    kwargs = {k: tokenizer.init_kwargs[k] for k in _TOKENIZER_KWARGS if k in tokenizer.init_kwargs}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
        new = type(tokenizer)(vocab_file=str(vocab_file), **kwargs)
    old_backend, new_backend = tokenizer.backend_tokenizer, new.backend_tokenizer
    for part in ("normalizer", "pre_tokenizer"):
        if repr(getattr(old_backend, part)) != repr(getattr(new_backend, part)):
            raise ModelError(
                f"the rebuilt tokenizer's {part} differs from the original's "
                f"({getattr(new_backend, part)!r} vs {getattr(old_backend, part)!r}).",
                hint=f"vocabulary pruning supports {SUPPORTED} with standard BERT normalisation.",
            )
    return new


def check_same_tokens(old, new, kept_ids: np.ndarray, texts: list[str]) -> int:
    """Every text whose tokens were all kept must tokenize to the same tokens.

    Returns how many texts were checked (all of them unless ``min_count`` dropped tokens).
    """
    kept = np.zeros(len(old), dtype=bool)
    kept[kept_ids] = True
    checked = 0
    for start in range(0, len(texts), 2048):
        chunk = texts[start:start + 2048]
        before = old(chunk, truncation=False)["input_ids"]
        after = new(chunk, truncation=False)["input_ids"]
        for text, a, b in zip(chunk, before, after, strict=True):
            if not kept[a].all():
                continue
            if list(kept_ids[b]) != a:
                raise ModelError(f"the pruned tokenizer splits {text!r} differently from the original.",
                                 hint="this is a bug in vocabulary pruning; please report it.")
            checked += 1
    return checked


def _slice_embedding(old: nn.Embedding, kept: torch.Tensor, pad_id: int | None) -> nn.Embedding:
    new = nn.Embedding(len(kept), old.embedding_dim, padding_idx=pad_id,
                       dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.copy_(old.weight[kept])
    return new


def slice_model_vocab(model: nn.Module, kept_ids: np.ndarray, pad_id: int | None) -> None:
    """Keep only ``kept_ids`` rows of the input (and any output) embeddings, in place."""
    kept = torch.as_tensor(kept_ids, dtype=torch.long)
    old_in = model.get_input_embeddings()
    model.set_input_embeddings(_slice_embedding(old_in, kept, pad_id))
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:  # an MLM/LM head: tied weights follow the input, the biases are sliced
        if out.weight is not old_in.weight:
            out.weight = nn.Parameter(out.weight.detach()[kept].clone())
        out.out_features = len(kept)
        sliced: dict[int, nn.Parameter] = {}  # heads keep the vocab bias in two places (BERT: tied)
        for module in model.modules():
            bias = getattr(module, "bias", None)
            if isinstance(bias, nn.Parameter) and bias.shape == (old_in.num_embeddings,):
                if id(bias) not in sliced:
                    sliced[id(bias)] = nn.Parameter(bias.detach()[kept].clone())
                module.bias = sliced[id(bias)]
    model.config.vocab_size = len(kept)
    if pad_id is not None:
        model.config.pad_token_id = pad_id
    if out is not None and getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()


def prune_vocab(model: nn.Module, tokenizer, data: TextClassificationData, *,
                splits: Sequence[str] = ("train", "dev"), keep_ascii_chars: bool = True,
                min_count: int = 1) -> tuple[Any, dict[str, Any]]:
    """Slice ``model``'s vocabulary in place; returns the new tokenizer and what changed."""
    texts = corpus_texts(data, splits)
    plan = plan_vocab(tokenizer, texts, keep_ascii_chars=keep_ascii_chars, min_count=min_count)
    new_tokenizer = build_tokenizer(tokenizer, plan.tokens)
    checked = check_same_tokens(tokenizer, new_tokenizer, plan.kept_ids, texts)
    before = model.get_input_embeddings().num_embeddings
    slice_model_vocab(model, plan.kept_ids, new_tokenizer.pad_token_id)
    log.info("vocabulary pruned: %d -> %d embedding rows", before, len(plan.kept_ids))
    return new_tokenizer, {"embedding_rows_before": before, "embedding_rows_after": len(plan.kept_ids),
                           "corpus_splits": list(splits), "corpus_texts": len(texts),
                           "min_count": min_count, "texts_tokenized_unchanged": checked,
                           "keep_ascii_chars": keep_ascii_chars}
