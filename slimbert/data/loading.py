"""Load labelled examples from a built-in asset, local files or the Hugging Face hub.

Whatever the source, the result is the same: train/dev/test splits of texts (and
optional text pairs) with integer labels, a label-name list, and a fingerprint of the
content so that downstream stages can be cached on what they actually read.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from slimbert.data.config import DatasetConfig
from slimbert.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
FILE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".json", ".parquet"}


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # int64 label ids
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, index: np.ndarray) -> Split:
        return Split(
            texts=[self.texts[i] for i in index],
            labels=self.labels[index],
            pairs=[self.pairs[i] for i in index] if self.pairs is not None else None,
        )


class WithheldSplits(dict):
    """Splits with some withheld: absent from ``in`` and iteration, and an error to read.

    Model selection (``slimbert optimize``) trains and ranks candidates on data whose test
    split is withheld this way, so no stage can read it before the one confirmation.
    """

    def __init__(self, splits: dict[str, Split], withheld: tuple[str, ...]):
        super().__init__({k: v for k, v in splits.items() if k not in withheld})
        self.withheld = withheld

    def __getitem__(self, name: str) -> Split:
        if name in self.withheld:
            raise DataError(f"the {name} split is withheld while candidates are selected; a stage "
                            "that reads it cannot run inside a search.",
                            hint="run that stage in a recipe of its own, not in `slimbert optimize`.")
        return super().__getitem__(name)


@dataclass
class TextClassificationData:
    splits: dict[str, Split]
    label_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # provenance, recorded in manifests
    # the whole dataset's fingerprint, kept by a view that withholds splits: a stage trained
    # without reading the test split is keyed on the same data as one that could read it
    whole_fingerprint: str | None = None

    def withholding(self, *names: str) -> TextClassificationData:
        """This data with the ``names`` splits withheld (see WithheldSplits)."""
        return TextClassificationData(WithheldSplits(self.splits, names), self.label_names,
                                      {**self.info, "withheld": list(names)}, self.fingerprint)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def fingerprint(self) -> str:
        """sha256 over every example and label, so caches key on content, not names."""
        if self.whole_fingerprint is not None:
            return self.whole_fingerprint
        digest = hashlib.sha256()
        digest.update("\x1f".join(self.label_names).encode())
        # a selection split (held out of train) is hashed too; data without one hashes as before
        for name in SPLITS + (("selection",) if "selection" in self.splits else ()):
            split = self.splits[name]
            digest.update(name.encode())
            for i, text in enumerate(split.texts):
                pair = split.pairs[i] if split.pairs is not None else ""
                digest.update(f"{text}\x1f{pair}\x1f{split.labels[i]}\x1e".encode())
        return digest.hexdigest()


# --- raw rows from each kind of source --------------------------------------------------
# Each reader returns {split name: (texts, pairs or None, raw labels)}; splits it lacks are
# absent and get carved out of train later.
RawSplit = tuple[list[str], list[str] | None, list[Any]]


def _read_rt_snippets(cfg: DatasetConfig) -> dict[str, RawSplit]:
    from slimbert.assets import fetch_asset

    path = fetch_asset("rt-snippets") / "movieReviewSnippets_GroundTruth.txt"
    texts, labels = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.rstrip("\r").split("\t")
        if len(parts) < 3:
            continue
        rating = float(parts[1])
        if rating == 0:  # neutral by the raters' mean: neither class
            continue
        texts.append(parts[2].strip())
        labels.append("positive" if rating > 0 else "negative")
    return {"train": (texts, None, labels)}


BUILTIN_DATASETS = {"rt-snippets": _read_rt_snippets}


def _read_table(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise DataError(
            f"dataset file {path} does not exist.",
            hint="check the path in the recipe's `dataset:` section (relative paths are "
            "relative to the recipe file) or the --dataset option (relative to this folder).",
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix == ".tsv":
            return pd.read_csv(path, sep="\t", quoting=3)
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True)
        if suffix == ".json":
            return pd.read_json(path)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except Exception as exc:
        raise DataError(f"could not read dataset file {path}: {exc}") from exc
    raise DataError(
        f"dataset file {path} has an unsupported type {suffix!r}.",
        hint=f"use one of {', '.join(sorted(FILE_SUFFIXES))}.",
    )


def _columns_from_frame(frame: Any, cfg: DatasetConfig, where: str) -> RawSplit:
    wanted = [cfg.text, cfg.label] + ([cfg.text_pair] if cfg.text_pair else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where} has no column {missing[0]!r}; its columns are: "
            f"{', '.join(map(str, frame.columns))}.",
            hint="set dataset.text / dataset.text_pair / dataset.label in the recipe (on the "
            "command line: --text-column / --text-pair-column / --label-column) to the right "
            "column names.",
        )
    unlabelled = int(frame[cfg.label].isna().sum())
    if unlabelled:  # e.g. a hidden test set's blanks; said, so a miscounted file is noticed
        log.warning("%s: %d of %d rows have no %r and are left out", where, unlabelled, len(frame), cfg.label)
        frame = frame.dropna(subset=[cfg.label])
    texts = frame[cfg.text].fillna("").astype(str).tolist()
    pairs = frame[cfg.text_pair].fillna("").astype(str).tolist() if cfg.text_pair else None
    return texts, pairs, frame[cfg.label].tolist()


def _read_files(cfg: DatasetConfig, base: Path) -> dict[str, RawSplit]:
    files = {"train": cfg.train, "dev": cfg.dev, "test": cfg.test}
    if cfg.train is None:
        files = {"train": cfg.source}
    out = {}
    for split, name in files.items():
        if name is None:
            continue
        path = Path(name).expanduser()
        path = path if path.is_absolute() else base / path
        out[split] = _columns_from_frame(_read_table(path), cfg, str(path))
    return out


def _read_hub(cfg: DatasetConfig) -> dict[str, RawSplit]:
    import datasets

    try:
        ds = datasets.load_dataset(cfg.source, cfg.hub_config)
    except Exception as exc:
        raise DataError(
            f"could not load dataset {cfg.source!r} from the Hugging Face hub "
            f"(not a built-in name and no such local file): {exc}",
            hint="check the id; offline, only datasets already in the Hugging Face cache "
            "load. Built-in datasets: " + ", ".join(BUILTIN_DATASETS),
        ) from exc
    out = {}
    for split, hub_name in cfg.hub_splits.items():
        if hub_name not in ds:
            continue
        part = ds[hub_name]
        names = getattr(part.features.get(cfg.label), "names", None)
        frame = part.to_pandas()
        texts, pairs, labels = _columns_from_frame(frame, cfg, f"{cfg.source}[{hub_name}]")
        if names is not None:  # ClassLabel: ints -> names, -1 means "no label" (hidden test)
            keep = [i for i, v in enumerate(labels) if v >= 0]
            texts = [texts[i] for i in keep]
            pairs = [pairs[i] for i in keep] if pairs is not None else None
            labels = [names[labels[i]] for i in keep]
        if texts:
            out[split] = (texts, pairs, labels)
    return out


def with_absolute_paths(cfg: DatasetConfig, base: Path) -> DatasetConfig:
    """``cfg`` with its file names made absolute, so that it reads the same from any folder.

    Artifacts record this form: a later `slimbert bench` of a run's model, started
    elsewhere, then evaluates on the very split the model was trained against.
    """
    def absolute(name: str | None) -> str | None:
        if name is None or name in BUILTIN_DATASETS:
            return name
        path = Path(name).expanduser()
        path = path if path.is_absolute() else base / path
        return str(path.resolve()) if path.exists() else name

    source = cfg.source if cfg.train is not None else absolute(cfg.source)
    return replace(cfg, source=source, train=absolute(cfg.train), dev=absolute(cfg.dev),
                   test=absolute(cfg.test))


def _is_file_like(source: str) -> bool:
    return Path(source).suffix.lower() in FILE_SUFFIXES or Path(source).expanduser().exists()


# --- assembling splits -------------------------------------------------------------------


def _label_vocab(raw_labels: list[Any]) -> list[Any]:
    values = set(raw_labels)
    numeric = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    return sorted(values) if numeric else sorted(values, key=str)


def _carve(split: RawSplit, fractions: dict[str, float], seed: int) -> dict[str, RawSplit]:
    """Split ``split`` into train plus the named fractions, by a seeded shuffle."""
    texts, pairs, labels = split
    order = np.random.default_rng(seed).permutation(len(texts))
    out, start = {}, 0
    for name, frac in fractions.items():
        count = int(round(frac * len(texts)))
        idx = order[start : start + count]
        start += count
        out[name] = _subset(split, idx)
    out["train"] = _subset(split, order[start:])
    return out


def _subset(split: RawSplit, idx: np.ndarray) -> RawSplit:
    texts, pairs, labels = split
    return (
        [texts[i] for i in idx],
        [pairs[i] for i in idx] if pairs is not None else None,
        [labels[i] for i in idx],
    )


def hold_out_selection(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(train, selection): ``fraction`` of each label's training examples held out.

    Per label, so an imbalanced dataset's rare classes are in the selection split in their
    share (a class too rare to give one example stays whole in train). Its own seeded
    stream: dev and test are the same with or without a selection split.
    """
    rng = np.random.default_rng([seed, 1])
    held = []
    for label in np.unique(train.labels):
        members = np.flatnonzero(train.labels == label)
        held.extend(rng.permutation(members)[: int(round(fraction * len(members)))])
    held_mask = np.zeros(len(train), dtype=bool)
    held_mask[held] = True
    return train.take(np.flatnonzero(~held_mask)), train.take(np.flatnonzero(held_mask))


def load_dataset(cfg: DatasetConfig, *, seed: int = 0, base: Path | None = None) -> TextClassificationData:
    """Load, split and label-encode the dataset described by ``cfg``."""
    base = base or Path.cwd()
    source = cfg.source
    if cfg.train is not None:
        raw, kind = _read_files(cfg, base), "files"
    elif source in BUILTIN_DATASETS:
        raw, kind = BUILTIN_DATASETS[source](cfg), "builtin"
    elif _is_file_like(source) or (base / source).exists():
        raw, kind = _read_files(cfg, base), "file"
    else:
        raw, kind = _read_hub(cfg), "hub"

    if "train" not in raw or not raw["train"][0]:
        raise DataError(
            f"dataset {source or cfg.train!r} has no training examples.",
            hint="check the file or the hub split names (dataset.hub_splits).",
        )
    missing = {s: getattr(cfg.split, s) for s in ("dev", "test") if s not in raw}
    carved = []
    if missing:
        raw.update(_carve(raw["train"], missing, seed))
        carved = sorted(missing)

    vocab = _label_vocab(raw["train"][2])
    index = {v: i for i, v in enumerate(vocab)}
    for split in ("dev", "test"):
        unknown = sorted({str(v) for v in raw[split][2] if v not in index})
        if unknown:
            raise DataError(
                f"the {split} split of {source or cfg.train!r} has labels that never occur "
                f"in train: {', '.join(unknown[:5])}.",
                hint="every dev/test label must be a training label; check the label "
                "column and the split files.",
            )
    if len(vocab) < 2:
        raise DataError(
            f"dataset {source or cfg.train!r} has a single label ({vocab[0]!r}); "
            "classification needs at least two.",
        )

    splits = {}
    for name in ("train", "dev", "test"):
        texts, pairs, labels = raw[name]
        if not texts:
            raise DataError(f"the {name} split of {source or cfg.train!r} is empty.")
        split = Split(texts, np.array([index[v] for v in labels], dtype=np.int64), pairs)
        if cfg.limit is not None and len(split) > cfg.limit:
            split = split.take(np.arange(cfg.limit))
        splits[name] = split
    if cfg.split.selection:
        splits["train"], splits["selection"] = hold_out_selection(splits["train"], cfg.split.selection, seed)

    info = {
        "source": source if cfg.train is None else {"train": cfg.train, "dev": cfg.dev, "test": cfg.test},
        "kind": kind,
        "carved_splits": carved,
        "split_fractions": {s: getattr(cfg.split, s) for s in carved},
        "split_seed": seed,
        "sizes": {k: len(v) for k, v in splits.items()},
    }
    if cfg.split.selection:
        info["selection_fraction"] = cfg.split.selection
    data = TextClassificationData(splits, [str(v) for v in vocab], info)
    data.info["fingerprint"] = data.fingerprint
    log.info("dataset %s: %s, labels %s", source, info["sizes"], data.label_names)
    return data
