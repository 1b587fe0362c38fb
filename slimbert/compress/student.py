"""Build a shallower student by copying layers out of a teacher.

Works for any transformers encoder whose layers sit in one ModuleList (BERT, RoBERTa,
ELECTRA, MPNet: ``encoder.layer``; DistilBERT: ``transformer.layer``), found on the
model's base model rather than by class, so new BERT-family models work unchanged.
"""

from __future__ import annotations

import copy

from torch import nn

from slimbert.compress.config import resolve_layers  # noqa: F401  (torch-free, planned too)
from slimbert.errors import ModelError

_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")
_DEPTH_KEYS = ("num_hidden_layers", "n_layers")


def find_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent module, attribute name, layer list) of the encoder's stack."""
    base = getattr(model, "base_model", model)
    for path in _LAYER_PATHS:
        *parents, attr = path.split(".")
        owner = base
        for part in parents:
            owner = getattr(owner, part, None)
        stack = getattr(owner, attr, None) if owner is not None else None
        if isinstance(stack, nn.ModuleList):
            return owner, attr, stack
    raise ModelError(
        f"cannot find the encoder layers of {type(model).__name__} "
        f"(looked for {', '.join(_LAYER_PATHS)}).",
        hint="slimbert supports BERT-family encoders whose layers form one ModuleList.",
    )


def uniform_layer_map(student_depth: int, teacher_depth: int) -> list[int]:
    """Teacher layer whose output student layer i imitates: the last of each block (TinyBERT).

    3 of 6 layers pair with teacher layers 1, 3, 5 (0-based), so the student's last layer
    imitates the teacher's last, the one its classifier was trained on.
    """
    return [(i + 1) * teacher_depth // student_depth - 1 for i in range(student_depth)]


def build_student(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A copy of ``teacher`` that keeps only ``layers`` (plus embeddings and head)."""
    student = copy.deepcopy(teacher)
    parent, attr, stack = find_layers(student)
    setattr(parent, attr, nn.ModuleList([stack[i] for i in layers]))
    for key in _DEPTH_KEYS:
        if hasattr(student.config, key):
            setattr(student.config, key, len(layers))
    return student
