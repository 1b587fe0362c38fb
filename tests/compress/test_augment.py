"""TinyBERT-style augmentation: which tokens change, into what, and how they are labelled."""

import numpy as np
import pytest
import torch

from slimbert.compress.augment import (
    GENERATED,
    AugmentConfig,
    WordTokens,
    augment_by_masked_lm,
    augment_by_neighbours,
)
from slimbert.data import encode_split
from slimbert.data.loading import Split
from slimbert.models import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tests.conftest import build_tiny_bert

    return load_tokenizer(build_tiny_bert(tmp_path_factory.mktemp("tok"), layers=1))


@pytest.fixture
def enc(tokenizer):
    split = Split(texts=["the movie was good", "a very dull plot", "great fun and the cast"],
                  pairs=None, labels=np.array([1, 0, 1]))
    return encode_split(tokenizer, split, 32)


def ids(tokenizer, *words):
    return [tokenizer.convert_tokens_to_ids(w) for w in words]


def test_word_tokens_are_whole_alphabetic_words(tokenizer):
    words = WordTokens.of(tokenizer)
    good, cls, a = ids(tokenizer, "good", "[CLS]", "a")
    assert words.is_word[good] and not words.is_word[cls] and not words.is_word[a]


def test_neighbour_replacement_uses_the_nearest_word_and_labels_copies_for_the_teacher(tokenizer, enc):
    torch.manual_seed(0)
    emb = torch.randn(len(tokenizer), 16)
    good, great, dull, boring = ids(tokenizer, "good", "great", "dull", "boring")
    emb[great] = emb[good] + 0.01 * torch.randn(16)
    emb[boring] = emb[dull] + 0.01 * torch.randn(16)
    cfg = AugmentConfig(copies=2, replace_prob=1.0, neighbours=1)
    out = augment_by_neighbours(enc, emb, tokenizer, cfg, seed=0, progress=False)
    n = len(enc)
    assert len(out) == n + 2 * n  # every sentence has words, so every copy differs
    assert list(out.labels[:n]) == list(enc.labels) and (out.labels[n:] == GENERATED).all()
    first_copy = out.input_ids[n]
    assert len(first_copy) == len(enc.input_ids[0])
    assert first_copy[0] == enc.input_ids[0][0] and first_copy[-1] == enc.input_ids[0][-1]  # [CLS] [SEP]
    assert great in first_copy and good not in first_copy
    assert boring in out.input_ids[n + 1]
    again = augment_by_neighbours(enc, emb, tokenizer, cfg, seed=0, progress=False)
    assert all(np.array_equal(x, y) for x, y in zip(out.input_ids, again.input_ids, strict=True))


def test_masked_lm_replacement_takes_the_models_top_word(tokenizer, enc):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)).eval()
    cfg = AugmentConfig(copies=1, replace_prob=1.0, neighbours=1, method="masked-lm", mlm_model="x")
    out = augment_by_masked_lm(enc, mlm, tokenizer, cfg, seed=0, progress=False)
    words = WordTokens.of(tokenizer)
    original = enc.input_ids[0]
    copy = out.input_ids[len(enc)]
    changed = np.flatnonzero(copy != original)
    assert len(changed) and words.is_word[copy[changed]].all()
    masked = torch.tensor(original).clone()
    masked[torch.from_numpy(np.flatnonzero(words.replaceable(original)))] = tokenizer.mask_token_id
    with torch.no_grad():
        logits = mlm(input_ids=masked[None]).logits[0]
    logits[:, ~torch.from_numpy(words.is_word)] = float("-inf")
    assert (copy[changed] == logits.argmax(-1).numpy()[changed]).all()
