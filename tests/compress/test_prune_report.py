import torch

from slimbert.compress.prune_magnitude import MaskHolder
from slimbert.compress.prune_report import gzip_size, sparsity_report
from slimbert.compress.prune_structured import prune_heads
from tests.conftest import build_tiny_bert


def test_report_counts_zeros_heads_neurons_and_compressed_size(tmp_path):
    from transformers import AutoModelForSequenceClassification

    folder = build_tiny_bert(tmp_path / "m", layers=2, num_labels=2)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    dense = sparsity_report(model, folder)
    assert dense["zeros"] == 0 and dense["heads"] == 8 and dense["ffn_neurons"] == 128
    assert dense["embedding_rows"] == model.config.vocab_size
    assert dense["params"] == sum(p.numel() for p in model.parameters())
    prune_heads(model, {0: [0, 1]})
    MaskHolder(model, 0.9, "global").finish()
    model.save_pretrained(tmp_path / "p")
    pruned = sparsity_report(model, tmp_path / "p")
    assert [r["heads"] for r in pruned["layers"]] == [2, 4]
    assert pruned["layers"][0]["sparsity"] > 0.8
    assert pruned["zeros"] > 0.5 * pruned["params"]
    files = pruned["files"]["model.safetensors"]
    assert files["gzip_bytes"] < 0.5 * files["bytes"]  # zeros compress
    assert gzip_size(folder / "model.safetensors") > 0.8 * (folder / "model.safetensors").stat().st_size
    assert torch.count_nonzero(model.classifier.weight) == model.classifier.weight.numel()
