import pytest
import torch

from slimbert.compress.prune_magnitude import (
    MaskHolder,
    cubic_sparsity,
    magnitude_masks,
    prunable_weights,
)
from tests.conftest import build_tiny_bert


def load(folder):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder)


def sparsity(weights):
    total = sum(w.numel() for w in weights.values())
    return sum(int((w == 0).sum()) for w in weights.values()) / total


def test_cubic_schedule_rises_fast_then_flattens_and_reaches_the_target():
    values = [cubic_sparsity(t, 100, 0.8) for t in range(0, 121, 10)]
    assert values[0] == 0 and values[10] == pytest.approx(0.8) and values[-1] == 0.8
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    assert values[1] - values[0] > values[9] - values[8]  # prune early, when it is cheap


def test_global_and_per_layer_masks_hit_the_target():
    torch.manual_seed(0)
    weights = {"a": torch.randn(50, 40), "b": torch.randn(30, 20) * 10}
    glob = magnitude_masks(weights, 0.5, "global")
    kept = sum(int(m.sum()) for m in glob.values())
    assert kept == pytest.approx(0.5 * 2600, abs=1)
    assert glob["b"].float().mean() > glob["a"].float().mean()  # large weights survive globally
    per = magnitude_masks(weights, 0.5, "per-layer")
    for name in weights:
        assert per[name].float().mean() == pytest.approx(0.5, abs=0.01)


def test_masks_hold_through_training_and_become_permanent(tmp_path):
    model = load(build_tiny_bert(tmp_path / "m", layers=2, num_labels=2))
    holder = MaskHolder(model, 0.6, "global", total_steps=40)
    weights = prunable_weights(model)
    assert sparsity(weights) == pytest.approx(0.0, abs=0.01)  # gradual starts dense
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = torch.randint(5, 30, (4, 8))
    model.train()
    for step in range(40):
        holder.at_step(step)
        out = model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1]))
        out.loss.backward()
        optim.step()
        optim.zero_grad()
    model(input_ids=ids)  # the hook re-applies the masks before the next forward
    assert sparsity(weights) == pytest.approx(0.6, abs=0.01)
    info = holder.finish()
    assert info["prunable_sparsity"] == pytest.approx(0.6, abs=0.01)
    model.save_pretrained(tmp_path / "p")
    assert sparsity(prunable_weights(load(tmp_path / "p"))) == pytest.approx(0.6, abs=0.01)
    assert not model._forward_pre_hooks  # no hook left behind


def test_two_four_masks_keep_the_two_largest_of_every_four(tmp_path):
    model = load(build_tiny_bert(tmp_path / "m", num_labels=2))
    weights = prunable_weights(model)
    masks = magnitude_masks(weights, 0.5, "2:4")
    for name, w in weights.items():
        groups = masks[name].reshape(-1, 4)
        assert (groups.sum(dim=1) == 2).all(), name
        kept = (w.detach().abs().reshape(-1, 4) * groups).amax(dim=1)
        dropped = (w.detach().abs().reshape(-1, 4) * ~groups).amax(dim=1)
        assert (kept >= dropped).all()
    holder = MaskHolder(model, 0.5, "2:4")
    report = holder.finish()
    assert report["prunable_sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_two_four_is_exactly_half_and_one_shot():
    from slimbert.compress.prune import PruneConfig

    with pytest.raises(ValueError, match="2:4"):
        PruneConfig(method="magnitude", scope="2:4", sparsity=0.8)
    with pytest.raises(ValueError, match="2:4"):
        PruneConfig(method="magnitude", scope="2:4", sparsity=0.5, schedule="gradual")
    PruneConfig(method="magnitude", scope="2:4", sparsity=0.5)


@pytest.mark.parametrize("criterion", ["magnitude", "movement"])
def test_killed_gradual_run_resumes_on_the_ramp_where_it_stopped(criterion, sentiment_csv, tiny_encoder,
                                                                 tmp_path):
    """The masks follow the trainer's step: a resumed run ends with the uninterrupted run's weights."""
    from slimbert.compress.prune_movement import MovementPruner
    from slimbert.compress.trainer import TrainConfig, train
    from slimbert.data import DatasetConfig, encode_split, load_dataset
    from slimbert.models import load_classifier, load_tokenizer
    from tests.compress.test_trainer import Killed, ce_loss

    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    enc = {k: encode_split(load_tokenizer(tiny_encoder), v, 32) for k, v in data.splits.items()}
    cfg = TrainConfig(epochs=3, lr=5e-4, batch_size=16, checkpoint_every=5, patience=0)
    labels = enc["train"].labels
    total = 3 * -(-len(enc["train"]) // 16)

    def run(work, loss_fn):
        torch.manual_seed(0)
        model = load_classifier(tiny_encoder, data.label_names)
        holder = (MaskHolder(model, 0.7, "global", total_steps=total) if criterion == "magnitude"
                  else MovementPruner(model, 0.7, "per-layer", total_steps=total))
        train(model, enc["train"], enc["dev"], 2, cfg, loss_fn, work, seed=3, progress=False,
              select_from_step=holder.select_from_step, on_step=holder.at_step)
        holder.finish()
        return model, holder

    reference, _ = run(tmp_path / "ref", ce_loss(labels))
    with pytest.raises(Killed):  # dies after the checkpoint at step 25, on the ramp
        run(tmp_path / "work", ce_loss(labels, kill_at=28, seen=[]))
    resumed, holder = run(tmp_path / "work", ce_loss(labels))
    assert holder.select_from_step > 28  # the kill came on the ramp
    assert holder.step == total - 1
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
