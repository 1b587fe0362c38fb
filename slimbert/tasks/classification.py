"""The text-classification task (sentence or sentence pair -> label): slimbert's first task.

Its model loading, export and scoring are the code paths every classification recipe has
always used; the task only names them, so their stage hashes and results are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slimbert.validation import accuracy, agreement


class ClassificationTask:
    name = "text-classification"
    output_names = ("logits",)
    # a row's outputs are class scores: the bench reads labels off them and scores them
    # against the dataset's labels alone (no reference row needed)
    outputs_are_labels = True

    def load_model(self, folder: Path) -> Any:
        from slimbert.models import load_classifier

        model = load_classifier(Path(folder))
        model.config.return_dict = True
        return model

    def export_module(self, model: Any) -> Any:
        return model

    def example_scores(self, candidate: np.ndarray, reference: np.ndarray | None = None,
                       labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """1.0 per correctly labelled example: the mean is accuracy, and McNemar pairs them."""
        if labels is None:
            raise ValueError("classification scores need the labels")
        return {"accuracy": (candidate.argmax(-1) == labels).astype(np.float64)}

    def agreement(self, reference: np.ndarray, candidate: np.ndarray) -> float:
        return agreement(reference, candidate)

    dev_metric = "accuracy"  # what a quantize stage's tolerance is in points of

    def dev_score(self, logits: np.ndarray, fp32_logits: np.ndarray, labels: np.ndarray) -> float:
        """A quantized model's dev score: accuracy on the labels."""
        return accuracy(logits, labels)


TASK = ClassificationTask()
