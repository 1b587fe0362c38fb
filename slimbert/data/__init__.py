"""Datasets for text classification: loading, splitting, tokenizing, scoring."""

from slimbert.data.config import DatasetConfig, SplitFractions
from slimbert.data.loading import Split, TextClassificationData, load_dataset, with_absolute_paths
from slimbert.data.metrics import classification_metrics
from slimbert.data.tokenize import EncodedSplit, collate, encode_split, iterate_batches

__all__ = [
    "DatasetConfig",
    "EncodedSplit",
    "Split",
    "SplitFractions",
    "TextClassificationData",
    "classification_metrics",
    "collate",
    "encode_split",
    "iterate_batches",
    "load_dataset",
    "with_absolute_paths",
]
