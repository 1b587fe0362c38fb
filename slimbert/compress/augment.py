"""TinyBERT-style data augmentation: more sentences for the teacher to label.

A small task set limits a shallow student more than its capacity does: the teacher's
function is only shown at a few thousand points. Replacing words with near neighbours
gives new, plausible inputs; the teacher's soft targets on them are the labels (the hard
label of the source sentence may no longer hold, so generated examples carry label -1 and
only the distillation losses see them).

Two ways to pick replacements, as TinyBERT does:
- ``embedding-neighbours``: the nearest whole-word tokens by cosine in the teacher's own
  input embedding matrix (offline, no extra model; TinyBERT uses GloVe for this);
- ``masked-lm``: the top predictions of a masked language model at the masked word
  (needs a model with an MLM head that shares the tokenizer, e.g. bert-base-uncased).
Augmentation works on token ids, so the new examples need no re-tokenization.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from slimbert.compress.config import AugmentConfig
from slimbert.data import EncodedSplit
from slimbert.errors import ModelError
from slimbert.progress import progress_bar

log = logging.getLogger(__name__)

GENERATED = -1  # label of an example the teacher labels


@dataclass(frozen=True)
class WordTokens:
    """Which vocabulary entries are whole words, and which continue the previous token."""

    is_word: np.ndarray  # bool per id: a replaceable word (letters only, starts a word)
    continues: np.ndarray  # bool per id: a piece that continues the word before it

    @classmethod
    def of(cls, tokenizer) -> WordTokens:
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        special = set(tokenizer.all_special_ids)
        backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
        if backend is not None:
            wordpiece = type(backend).__name__ == "WordPiece"
        else:
            wordpiece = any(t.startswith("##") for t in vocab if t)
        is_word = np.zeros(len(vocab), dtype=bool)
        continues = np.zeros(len(vocab), dtype=bool)
        for i, tok in enumerate(vocab):
            if i in special or not tok:
                continue
            if wordpiece:
                continues[i] = tok.startswith("##")
                is_word[i] = tok.isalpha() and len(tok) > 1
            else:  # byte-level BPE / sentencepiece: a word starts with a space marker
                starts = tok[0] in "\u0120\u2581"
                body = tok[1:] if starts else tok
                continues[i] = not starts and body.isalpha()
                is_word[i] = starts and body.isalpha() and len(body) > 1
        return cls(is_word, continues)

    def replaceable(self, ids: np.ndarray) -> np.ndarray:
        """Positions holding a one-token word (not followed by a continuation piece)."""
        continued = np.append(self.continues[ids[1:]], False)
        return self.is_word[ids] & ~continued


def embedding_neighbours(embeddings: torch.Tensor, words: WordTokens, wanted: np.ndarray,
                         k: int, chunk: int = 2048) -> dict[int, np.ndarray]:
    """The ``k`` nearest whole-word tokens (cosine) of every id in ``wanted``."""
    candidates = np.flatnonzero(words.is_word)
    if len(candidates) <= k:
        raise ModelError(f"the vocabulary has only {len(candidates)} whole-word tokens, too few "
                         f"for {k} neighbours each.", hint="lower augment.neighbours.")
    emb = torch.nn.functional.normalize(embeddings.detach().float(), dim=-1)
    cand = emb[torch.from_numpy(candidates)]
    table: dict[int, np.ndarray] = {}
    for start in range(0, len(wanted), chunk):
        ids = wanted[start:start + chunk]
        sims = emb[torch.from_numpy(ids)] @ cand.T
        top = sims.topk(k + 1, dim=-1).indices.numpy()
        for token, row in zip(ids.tolist(), candidates[top], strict=True):
            table[token] = row[row != token][:k]
    return table


def augment_by_neighbours(enc: EncodedSplit, embeddings: torch.Tensor, tokenizer, cfg: AugmentConfig,
                          seed: int, progress: bool = True) -> EncodedSplit:
    """``enc`` followed by ``cfg.copies`` word-replaced copies of each example."""
    words = WordTokens.of(tokenizer)
    used = np.unique(np.concatenate(enc.input_ids))
    table = embedding_neighbours(embeddings, words, used[words.is_word[used]], cfg.neighbours)
    rng = np.random.default_rng([seed, 7])

    def replace(ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        new = ids.copy()
        for p in positions:
            row = table[int(ids[p])]
            new[p] = row[rng.integers(len(row))]
        return new

    return _generate(enc, words, cfg, rng, lambda batch: [replace(ids, pos) for ids, pos in batch],
                     progress=progress)


@torch.no_grad()
def augment_by_masked_lm(enc: EncodedSplit, mlm, tokenizer, cfg: AugmentConfig, seed: int,
                         batch_size: int = 64, progress: bool = True) -> EncodedSplit:
    """Like ``augment_by_neighbours``, with candidates from ``mlm``'s predictions at a mask."""
    if tokenizer.mask_token_id is None:
        raise ModelError("masked-LM augmentation needs a tokenizer with a [MASK] token.",
                         hint="use augment.method: embedding-neighbours.")
    words = WordTokens.of(tokenizer)
    allowed = torch.from_numpy(words.is_word)
    rng = np.random.default_rng([seed, 7])
    mlm.eval()

    def replace(batch: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), enc.pad_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (x, pos) in enumerate(batch):
            ids[row, :len(x)] = torch.from_numpy(x)
            ids[row, pos] = tokenizer.mask_token_id
            mask[row, :len(x)] = 1
        logits = mlm(input_ids=ids, attention_mask=mask).logits
        logits[..., ~allowed[: logits.shape[-1]]] = float("-inf")
        top = logits.topk(cfg.neighbours, dim=-1).indices.numpy()
        out = []
        for row, (x, pos) in enumerate(batch):
            new = x.copy()
            for p in pos:
                new[p] = top[row, p, rng.integers(cfg.neighbours)]
            out.append(new)
        return out

    return _generate(enc, words, cfg, rng, replace, batch_size, progress)


def _generate(enc: EncodedSplit, words: WordTokens, cfg: AugmentConfig, rng: np.random.Generator,
              replace, batch_size: int = 256, progress: bool = True) -> EncodedSplit:
    """Draw the positions to replace, let ``replace`` fill them, drop unchanged copies."""
    jobs: list[tuple[int, np.ndarray]] = []
    for _ in range(cfg.copies):
        for i, ids in enumerate(enc.input_ids):
            pos = np.flatnonzero(words.replaceable(ids) & (rng.random(len(ids)) < cfg.replace_prob))
            if len(pos):
                jobs.append((i, pos))
    new_ids: list[np.ndarray] = []
    sources: list[int] = []
    bar = progress_bar(total=len(jobs), desc="augment", enabled=progress)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        for (i, _), ids in zip(chunk, replace([(enc.input_ids[i], pos) for i, pos in chunk]), strict=True):
            if not np.array_equal(ids, enc.input_ids[i]):
                new_ids.append(ids)
                sources.append(i)
        bar.update(len(chunk))
    bar.close()
    log.info("augmentation: %d new examples from %d (%.1f per example)",
             len(new_ids), len(enc), len(new_ids) / max(1, len(enc)))
    return EncodedSplit(
        input_ids=list(enc.input_ids) + new_ids,
        token_type_ids=(list(enc.token_type_ids) + [enc.token_type_ids[i] for i in sources]
                        if enc.token_type_ids is not None else None),
        labels=np.concatenate([enc.labels, np.full(len(new_ids), GENERATED, dtype=enc.labels.dtype)]),
        pad_id=enc.pad_id,
        input_names=enc.input_names,
    )
