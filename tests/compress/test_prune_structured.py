import pytest
import torch
import torch.nn.functional as F

from slimbert.compress.prune_structured import (
    choose_heads,
    layer_shapes,
    magnitude_scores,
    prune_heads,
    prune_structured,
    taylor_scores,
)
from slimbert.errors import ModelError
from tests.conftest import build_tiny_bert


@pytest.fixture
def model_dir(tmp_path):
    return build_tiny_bert(tmp_path / "m", layers=2, num_labels=2)  # 4 heads, FFN 64 per layer


def load(folder):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder).eval()


def batch(folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    texts = ["the movie was good", "a dull and boring film", "great fun", "the plot is flat"]
    enc = dict(tok(texts, padding=True, return_tensors="pt"))
    enc["labels"] = torch.tensor([1, 0, 1, 0])
    return enc


def loss_fn(model, b):
    return F.cross_entropy(model(**{k: v for k, v in b.items() if k != "labels"}).logits, b["labels"])


def logits(model, b):
    with torch.no_grad():
        return model(**{k: v for k, v in b.items() if k != "labels"}).logits


def test_pruned_model_reloads_with_from_pretrained(model_dir, tmp_path):
    model, b = load(model_dir), batch(model_dir)
    info = prune_structured(model, heads_fraction=0.5, ffn_fraction=0.5, scorer="taylor",
                            batches=[b], loss_fn=loss_fn)
    assert layer_shapes(model) == [(2, 32), (2, 32)]
    assert info["shape_before"] == [[4, 64], [4, 64]]
    model.save_pretrained(tmp_path / "p")
    again = load(tmp_path / "p")
    assert layer_shapes(again) == [(2, 32), (2, 32)]
    assert again.config.intermediate_size == 32
    assert {int(k): sorted(v) for k, v in again.config.pruned_heads.items()} == {
        int(k): v for k, v in info["pruned_heads"].items()}
    torch.testing.assert_close(logits(again, b), logits(model, b))


def test_pruning_composes_with_already_pruned_heads(model_dir, tmp_path):
    model, b = load(model_dir), batch(model_dir)
    prune_heads(model, {0: [1], 1: [0, 3]})
    model.save_pretrained(tmp_path / "first")
    model = load(tmp_path / "first")
    assert layer_shapes(model) == [(3, 64), (2, 64)]
    # scores are per remaining head; the plan must speak original head numbers
    info = prune_structured(model, heads_fraction=0.5, ffn_fraction=0.0, scorer="taylor",
                            batches=[b], loss_fn=loss_fn)
    assert layer_shapes(model) == [(1, 64), (1, 64)]  # round(1.5) = 2 of 3, round(1.0) = 1 of 2
    assert all(h not in (1,) for h in info["pruned_heads"]["0"])
    assert all(h not in (0, 3) for h in info["pruned_heads"]["1"])
    model.save_pretrained(tmp_path / "second")
    again = load(tmp_path / "second")
    assert len(again.config.pruned_heads[0]) == 3 and len(again.config.pruned_heads[1]) == 3
    torch.testing.assert_close(logits(again, b), logits(model, b))


def test_ffn_size_can_be_rounded_down_to_a_multiple(model_dir):
    model = load(model_dir)
    prune_structured(model, heads_fraction=0.0, ffn_fraction=0.3, scorer="magnitude", ffn_multiple=16)
    assert layer_shapes(model) == [(4, 32), (4, 32)]  # 64 - 19 = 45 -> 32
    assert model.config.intermediate_size == 32


def test_a_layer_keeps_at_least_one_head(model_dir):
    model = load(model_dir)
    with pytest.raises(ModelError) as err:
        prune_heads(model, {1: [0, 1, 2, 3]})
    assert "every head of layer 1" in err.value.message
    with pytest.raises(ModelError) as err:
        choose_heads(model, magnitude_scores(model), 0.9)  # round(3.6) = 4 of 4
    assert "all 4 heads" in err.value.message and "at least one head" in err.value.hint
    with pytest.raises(ModelError):
        prune_heads(model, {0: [7]})  # no such head


def test_taylor_and_magnitude_scores_rank_dead_units_last(model_dir):
    model, b = load(model_dir), batch(model_dir)
    att = model.bert.encoder.layer[0].attention.self
    size = att.attention_head_size
    ffn = model.bert.encoder.layer[1].intermediate.dense
    with torch.no_grad():  # head 2 of layer 0 outputs nothing; neuron 5 of layer 1 is dead
        for lin in (att.query, att.key, att.value):
            lin.weight[2 * size:3 * size] = 0
            lin.bias[2 * size:3 * size] = 0
        model.bert.encoder.layer[0].attention.output.dense.weight[:, 2 * size:3 * size] = 0
        ffn.weight[5] = 0
        ffn.bias[5] = 0
        model.bert.encoder.layer[1].output.dense.weight[:, 5] = 0
    for scores in (taylor_scores(model, [b], loss_fn), magnitude_scores(model)):
        assert int(torch.argmin(scores.heads[0])) == 2
        assert int(torch.argmin(scores.neurons[1])) == 5
        assert float(scores.heads[0][2]) == 0.0
    prune_structured(model, heads_fraction=0.25, ffn_fraction=1 / 64, scorer="taylor",
                     batches=[b], loss_fn=loss_fn)
    assert 2 in model.bert.encoder.layer[0].attention.pruned_heads
    assert layer_shapes(model) == [(3, 63), (3, 63)]
    dead_rows = model.bert.encoder.layer[1].intermediate.dense.weight.abs().sum(1) == 0
    assert not dead_rows.any()  # the dead neuron is the one that went
