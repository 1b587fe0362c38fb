import pytest
import torch
from transformers import AutoModelForSequenceClassification

from slimbert.compress.student import build_student, find_layers, resolve_layers
from slimbert.errors import ModelError
from slimbert.models import load_classifier


def test_every_other_layer_student_copies_weights_and_reloads(tiny_classifier, tmp_path):
    teacher = load_classifier(tiny_classifier)
    layers = resolve_layers("every-other", 4)
    assert layers == [0, 2]
    student = build_student(teacher, layers)
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    t_layers, s_layers = find_layers(teacher)[2], find_layers(student)[2]
    for s_idx, t_idx in enumerate(layers):
        for a, b in zip(s_layers[s_idx].parameters(), t_layers[t_idx].parameters(), strict=True):
            assert torch.equal(a, b)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    student.save_pretrained(tmp_path / "s")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert len(find_layers(reloaded)[2]) == 2


def test_other_architectures_are_found_by_structure():
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    small = dict(vocab_size=100, max_position_embeddings=40)
    roberta = RobertaForSequenceClassification(RobertaConfig(
        hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, **small))
    distil = DistilBertForSequenceClassification(DistilBertConfig(
        dim=16, n_layers=3, n_heads=2, hidden_dim=32, **small))
    for model, key in ((roberta, "num_hidden_layers"), (distil, "n_layers")):
        student = build_student(model, [0, 2])
        assert getattr(student.config, key) == 2 and len(find_layers(student)[2]) == 2


@pytest.mark.parametrize("choice, message", [
    ([], "empty"), ([0, 4], "out of range"), ([2, 0], "distinct and increasing"), ([1, 1], "distinct"),
])
def test_bad_layer_lists(choice, message):
    with pytest.raises(ModelError, match=message):
        resolve_layers(choice, 4)
