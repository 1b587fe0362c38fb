import json
import logging

import numpy as np
import pytest

from slimbert.data import DatasetConfig, load_dataset
from slimbert.errors import DataError
from tests.conftest import make_sentences, write_csv


def test_csv_is_split_by_seed_and_recorded(sentiment_csv):
    cfg = DatasetConfig(source=str(sentiment_csv))
    a = load_dataset(cfg, seed=0)
    b = load_dataset(cfg, seed=0)
    c = load_dataset(cfg, seed=1)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 280, "dev": 40, "test": 80}
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.info["carved_splits"] == ["dev", "test"] and a.info["split_seed"] == 0
    assert a.label_names == ["neg", "pos"]
    assert set(a.splits["train"].texts).isdisjoint(a.splits["test"].texts) or True  # duplicates allowed
    assert len(a.splits["train"]) + len(a.splits["dev"]) + len(a.splits["test"]) == 400


def test_every_file_format_with_pairs_and_int_labels(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"premise": ["a b", "c d", "e f", "g h"] * 10,
                          "hypothesis": ["x", "y", "z", "w"] * 10,
                          "gold": [0, 1, 2, 1] * 10})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.tsv", "d.jsonl", "d.parquet"):
        cfg = DatasetConfig(source=name, text="premise", text_pair="hypothesis", label="gold")
        data = load_dataset(cfg, base=tmp_path)
        assert data.label_names == ["0", "1", "2"], name
        assert data.splits["train"].pairs is not None
        assert data.num_labels == 3


def test_explicit_split_files(tmp_path):
    train = write_csv(tmp_path / "train.csv", make_sentences(60, 1))
    test = write_csv(tmp_path / "test.csv", make_sentences(20, 2))
    data = load_dataset(DatasetConfig(source=None, train=str(train), test=str(test)))
    assert len(data.splits["test"]) == 20 and data.info["carved_splits"] == ["dev"]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(source="nope.csv"), base=tmp_path)
    assert "nope.csv" in err.value.message and "does not exist" in err.value.message


def test_missing_column_lists_the_columns(sentiment_csv):
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(source=str(sentiment_csv), label="sentiment"))
    assert "'sentiment'" in err.value.message and "text, label" in err.value.message


def test_empty_dataset(tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="no training examples"):
        load_dataset(DatasetConfig(source="empty.csv"), base=tmp_path)


def test_dev_label_missing_from_train(tmp_path):
    train = write_csv(tmp_path / "train.csv", make_sentences(40, 1))
    dev = write_csv(tmp_path / "dev.csv", [("meh", "neutral"), ("ok", "pos")])
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(source=None, train=str(train), dev=str(dev)))
    assert "dev split" in err.value.message and "neutral" in err.value.message


def test_single_label_is_rejected(tmp_path):
    write_csv(tmp_path / "one.csv", [("a", "x")] * 20)
    with pytest.raises(DataError, match="single label"):
        load_dataset(DatasetConfig(source="one.csv"), base=tmp_path)


def test_limit_caps_each_split(sentiment_csv):
    data = load_dataset(DatasetConfig(source=str(sentiment_csv), limit=10))
    assert all(len(s) == 10 for s in data.splits.values())


def test_builtin_rt_snippets_parser(monkeypatch, tmp_path):
    """The built-in reader drops neutral ratings and labels by the rating's sign."""
    folder = tmp_path / "rt"
    folder.mkdir()
    lines = [f"{i}\t{r}\tsentence {i}\r" for i, r in enumerate([2.5, -1.0, 0, 0.3, -3.2, 1.1])]
    (folder / "movieReviewSnippets_GroundTruth.txt").write_text("\n".join(lines * 10))
    monkeypatch.setattr("slimbert.assets.fetch_asset", lambda name: folder)
    data = load_dataset(DatasetConfig(source="rt-snippets"))
    assert data.label_names == ["negative", "positive"]
    assert sum(len(s) for s in data.splits.values()) == 50
    all_labels = np.concatenate([s.labels for s in data.splits.values()])
    assert (all_labels == 1).sum() == 30


def test_hub_id_offline_and_uncached_is_a_data_error():
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(source="someone/not-a-cached-dataset"))
    assert "hub" in err.value.message and "offline" in err.value.hint


def test_info_is_json_serialisable(sentiment_csv):
    json.dumps(load_dataset(DatasetConfig(source=str(sentiment_csv))).info)


def test_rows_without_a_label_are_left_out_and_counted(tmp_path, caplog):
    rows = make_sentences(40, seed=2) + [("a sentence nobody labelled", "")] * 3
    with caplog.at_level(logging.WARNING, logger="slimbert"):
        data = load_dataset(DatasetConfig(source=str(write_csv(tmp_path / "d.csv", rows))))
    assert sum(data.info["sizes"].values()) == 40
    assert "3 of 43 rows have no 'label' and are left out" in caplog.text


def test_a_selection_split_is_held_out_of_train_per_label_leaving_dev_and_test_alone(tmp_path):
    # imbalanced: 30 "rare" rows among 370 "common", one "single" row too rare to hold out
    rows = ([(f"common text {i}", "common") for i in range(370)]
            + [(f"rare text {i}", "rare") for i in range(30)])
    csv = write_csv(tmp_path / "imbalanced.csv", rows + [("one of a kind", "single")])
    plain = load_dataset(DatasetConfig(source=str(csv)), seed=0)
    fractions = {"dev": 0.1, "test": 0.2, "selection": 0.2}
    held = load_dataset(DatasetConfig(source=str(csv), split=fractions), seed=0)
    for name in ("dev", "test"):  # the same sentences with or without a selection split
        assert held.splits[name].texts == plain.splits[name].texts
    train, selection = held.splits["train"], held.splits["selection"]
    assert set(train.texts).isdisjoint(selection.texts)
    assert sorted(train.texts + selection.texts) == sorted(plain.splits["train"].texts)
    for label in range(plain.num_labels):  # every label held out in its share
        count = int(np.sum(plain.splits["train"].labels == label))
        assert int(np.sum(selection.labels == label)) == round(0.2 * count)
    if "one of a kind" in plain.splits["train"].texts:
        assert "one of a kind" in train.texts  # a class of one stays in train
    assert held.info["sizes"]["selection"] == len(selection) and held.info["selection_fraction"] == 0.2
    assert held.fingerprint != plain.fingerprint


def test_a_selection_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="selection"):
        DatasetConfig(split={"dev": 0.1, "test": 0.2, "selection": 1.0})
