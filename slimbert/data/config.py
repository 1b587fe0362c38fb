"""Dataset configuration: where the examples come from and how to split them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SplitFractions:
    """Fractions carved out of the training data for splits the source lacks."""

    dev: float = 0.1
    test: float = 0.2
    # a share of the training examples (after dev and test are carved) held out as a
    # "selection" split: never trained on, never used for early stopping, so a model search
    # (`slimbert optimize`) ranks candidates on data no candidate has fitted. 0: none.
    selection: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.dev < 1 and 0 < self.test < 1 and self.dev + self.test < 1):
            raise ValueError(
                f"split fractions dev={self.dev}, test={self.test} must each be in (0, 1) "
                "and leave examples for training"
            )
        if not 0 <= self.selection < 1:
            raise ValueError(f"split fraction selection={self.selection} must be in [0, 1) "
                             "(a share of the training examples)")


@dataclass
class DatasetConfig:
    """A labelled text-classification dataset.

    ``source`` is a built-in asset name, a file (.csv .tsv .jsonl .json .parquet) or a
    Hugging Face ``datasets`` id. Separate split files may be given with train/dev/test
    instead; any split the source lacks is carved out of train by ``split`` and ``seed``.
    """

    source: str | None = "rt-snippets"
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    text: str = "text"
    text_pair: str | None = None
    label: str = "label"
    hub_config: str | None = None
    hub_splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "dev": "validation", "test": "test"}
    )
    split: SplitFractions = field(default_factory=SplitFractions)
    max_length: int = 128
    limit: int | None = None  # keep at most this many examples per split (quick runs)

    def __post_init__(self) -> None:
        if isinstance(self.split, dict):  # the Python API may pass {"dev": 0.05, "test": 0.2}
            self.split = SplitFractions(**self.split)
        if self.source is None and self.train is None:
            raise ValueError("give either `source` or a `train` file")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be positive, got {self.limit}")
