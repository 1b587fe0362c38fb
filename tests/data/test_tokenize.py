import numpy as np
import pytest

from slimbert.data import DatasetConfig, classification_metrics, collate, encode_split, load_dataset
from slimbert.data.tokenize import training_batches
from slimbert.models import load_tokenizer


def test_training_batches_are_a_pure_permutation_grouped_by_length():
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    first = training_batches(lengths, 32, seed=7, epoch=2)
    again = training_batches(lengths, 32, seed=7, epoch=2)
    other = training_batches(lengths, 32, seed=7, epoch=3)
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert not all(len(a) == len(b) and (a == b).all() for a, b in zip(first, other, strict=False))
    flat = np.concatenate(first)
    assert sorted(flat.tolist()) == list(range(1000))
    # bucketing: padding waste far below random batching
    waste = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in first)
    random_batches = np.array_split(np.random.default_rng(1).permutation(1000), 32)
    random_waste = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in random_batches)
    assert waste < 0.2 * random_waste


def test_encode_and_collate(sentiment_csv, tiny_classifier):
    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    enc = encode_split(load_tokenizer(tiny_classifier), data.splits["dev"], max_length=8)
    assert max(enc.lengths) <= 8 and enc.input_names == ("input_ids", "attention_mask", "token_type_ids")
    batch = collate(enc, np.array([0, 1, 2]))
    width = max(enc.lengths[:3])
    assert batch["input_ids"].shape == (3, width)
    assert (batch["attention_mask"].sum(1) == enc.lengths[:3]).all()


def test_metrics_match_hand_computed_values():
    labels = np.array([0, 0, 1, 1, 1, 0])
    preds = np.array([0, 1, 1, 1, 0, 0])
    m = classification_metrics(labels, preds, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 0: tp 2, fp 1, fn 1 -> f1 2/3; class 1 likewise
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["mcc"] == pytest.approx((2 * 2 - 1 * 1) / 9)
    three = classification_metrics(np.array([0, 1, 2]), np.array([0, 1, 1]), 3)
    assert "mcc" not in three and three["accuracy"] == pytest.approx(2 / 3)
