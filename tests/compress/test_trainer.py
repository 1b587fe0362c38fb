"""The training loop: learning happens, early stopping works, a killed run resumes exactly."""

import pytest
import torch
import torch.nn.functional as F

from slimbert.compress.trainer import TrainConfig, evaluate, label_tensor, train
from slimbert.data import DatasetConfig, encode_split, load_dataset
from slimbert.models import load_classifier, load_tokenizer


class Killed(Exception):
    pass


@pytest.fixture
def setup(sentiment_csv, tiny_encoder):
    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    tok = load_tokenizer(tiny_encoder)
    enc = {k: encode_split(tok, v, 32) for k, v in data.splits.items()}
    return data, enc, tiny_encoder


def ce_loss(labels, kill_at=None, seen=None):
    def loss_fn(model, batch, index):
        if seen is not None:
            seen.append(1)
            if kill_at is not None and len(seen) == kill_at:
                raise Killed
        return F.cross_entropy(model(**batch).logits, label_tensor(labels, index))
    return loss_fn


def fresh(folder, data):
    torch.manual_seed(0)
    model = load_classifier(folder, data.label_names)
    model.config.hidden_dropout_prob = 0.1
    return model


def test_training_learns_the_task(setup, tmp_path):
    data, enc, folder = setup
    model = fresh(folder, data)
    before = evaluate(model, enc["test"], 2)["accuracy"]
    cfg = TrainConfig(epochs=8, lr=1e-3, batch_size=16, patience=0)
    result = train(model, enc["train"], enc["dev"], 2, cfg, ce_loss(enc["train"].labels),
                   tmp_path / "work", seed=0, progress=False)
    after = evaluate(model, enc["test"], 2)["accuracy"]
    assert after >= 0.9 > before + 0.2
    assert result.best_dev["accuracy"] >= 0.9 and len(result.history) == 8


def test_killed_run_resumes_to_identical_weights(setup, tmp_path):
    data, enc, folder = setup
    cfg = TrainConfig(epochs=2, lr=5e-4, batch_size=16, checkpoint_every=5, patience=0)
    labels = enc["train"].labels

    reference = fresh(folder, data)
    train(reference, enc["train"], enc["dev"], 2, cfg, ce_loss(labels), tmp_path / "ref",
          seed=3, progress=False)

    interrupted = fresh(folder, data)
    with pytest.raises(Killed):  # dies mid-epoch 2, after the checkpoint at step 25
        train(interrupted, enc["train"], enc["dev"], 2, cfg, ce_loss(labels, kill_at=28, seen=[]),
              tmp_path / "work", seed=3, progress=False)
    resumed = fresh(folder, data)  # a new process starts from the pretrained weights again
    result = train(resumed, enc["train"], enc["dev"], 2, cfg, ce_loss(labels), tmp_path / "work",
                   seed=3, progress=False)
    assert result.resumed_from_step == 25
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_early_stopping(setup, tmp_path):
    data, enc, folder = setup
    model = fresh(folder, data)
    cfg = TrainConfig(epochs=30, lr=1e-12, batch_size=64, patience=1)  # lr ~0: dev never improves
    result = train(model, enc["train"], enc["dev"], 2, cfg, ce_loss(enc["train"].labels),
                   tmp_path / "work", seed=0, progress=False)
    assert result.stopped_early and len(result.history) == 2


def test_config_validation():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="metric"):
        TrainConfig(metric="loss")


def test_finetune_is_reproducible_for_a_seed(sentiment_csv, tiny_encoder, tmp_path):
    from safetensors.torch import load_file

    from slimbert.compress.finetune import FinetuneConfig, finetune

    data = load_dataset(DatasetConfig(source=str(sentiment_csv), limit=64))
    cfg = FinetuneConfig(epochs=1, lr=1e-3, batch_size=16, patience=0)
    for run in ("a", "b"):
        torch.manual_seed(1234 if run == "a" else 99)  # global RNG state must not matter
        finetune(tiny_encoder, data, cfg, tmp_path / run, tmp_path / f"w{run}", max_length=32, seed=5,
                 progress=False)
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
