import pytest
import torch
from torch import nn

from slimbert.compress.prune_magnitude import prunable_weights
from slimbert.compress.prune_movement import MovementMask, MovementPruner
from tests.conftest import build_tiny_bert


def load(folder):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder)


def test_scores_get_the_straight_through_gradient_and_masked_weights_keep_their_values():
    torch.manual_seed(0)
    weight = torch.randn(4, 6)
    gate = MovementMask(weight, init="zero")
    gate.mask = torch.rand(4, 6) > 0.5
    dense = weight.clone().requires_grad_(True)
    upstream = torch.randn(4, 6)
    (gate(dense) * upstream).sum().backward()
    assert torch.allclose(gate.scores.grad, upstream * weight)  # dL/dS = dL/dW' * W
    assert torch.equal(dense.grad, upstream * gate.mask)  # masked weights get no update...
    assert torch.equal(dense.detach(), weight)  # ...and are not zeroed: they can come back


def test_movement_prunes_weights_the_loss_pushes_to_zero_not_the_smallest():
    """Half the weights are large but pulled toward zero by the loss; magnitude would keep them."""
    torch.manual_seed(0)
    size = torch.rand(8, 8) + 1.0
    pulled = torch.rand(8, 8) > 0.5
    linear = nn.Linear(8, 8)
    with torch.no_grad():
        linear.weight.copy_(torch.where(pulled, size * 3, size * 0.1))  # the pulled ones are the largest
    pruner = MovementPruner(linear, 0.5, "per-layer", total_steps=100, linears={"dense": linear},
                            init="zero")
    optim = torch.optim.AdamW(linear.parameters(), lr=1e-2, weight_decay=0.0)
    for step in range(100):
        pruner.at_step(step)
        # loss gradient dL/dW' = +1 on pulled weights (descent shrinks them), -1 on the others
        loss = (linear.weight * torch.where(pulled, 1.0, -1.0)).sum()
        loss.backward()
        optim.step()
        optim.zero_grad()
    pruner.finish()
    kept = linear.weight != 0
    assert kept.float().mean() == pytest.approx(0.5, abs=0.02)
    assert (kept == ~pulled).float().mean() > 0.95  # the small, growing weights survive


def test_magnitude_init_starts_from_magnitude_pruning():
    torch.manual_seed(0)
    linear = nn.Linear(16, 16)
    pruner = MovementPruner(linear, 0.5, "per-layer", total_steps=10, linears={"dense": linear})
    pruner.at_step(10)  # past the ramp, before any training: the scores are still |w|
    gate, dense = linear.parametrizations.weight[0], linear.parametrizations.weight.original.detach()
    threshold = dense.abs().flatten().kthvalue(128).values
    assert torch.equal(gate.mask, dense.abs() > threshold)


def test_movement_pruning_through_training_leaves_a_plain_sparse_model(tmp_path):
    model = load(build_tiny_bert(tmp_path / "m", layers=2, num_labels=2))
    before = set(model.state_dict())
    pruner = MovementPruner(model, 0.6, "per-layer", total_steps=40)
    assert any("scores" in n for n, _ in model.named_parameters())  # the trainer optimises them
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(5, 30, (4, 8))
    model.train()
    for step in range(40):
        pruner.at_step(step)
        if step == 3:
            assert pruner.current == 0.0  # warm-up: the scores learn before anything is pruned
        model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        optim.step()
        optim.zero_grad()
    info = pruner.finish()
    assert info["prunable_sparsity"] == pytest.approx(0.6, abs=0.01)
    for w in prunable_weights(model).values():  # per matrix, as ranked
        assert (w == 0).float().mean() == pytest.approx(0.6, abs=0.01)
    assert set(model.state_dict()) == before  # no scores, no parametrization keys
    model.save_pretrained(tmp_path / "p")
    reloaded = prunable_weights(load(tmp_path / "p"))
    assert sum(int((w == 0).sum()) for w in reloaded.values()) / sum(w.numel() for w in reloaded.values()) \
        == pytest.approx(0.6, abs=0.01)


def test_movement_needs_a_gradual_schedule_with_recovery():
    from slimbert.compress.prune import PruneConfig, RecoveryConfig

    for bad in ({"schedule": "one-shot", "recovery": RecoveryConfig()},
                {"schedule": "gradual", "recovery": None},
                {"schedule": "gradual", "recovery": RecoveryConfig(), "scope": "2:4"}):
        with pytest.raises(ValueError, match="movement|2:4"):
            PruneConfig(method="movement", sparsity=0.5, **bad)
    PruneConfig(method="movement", sparsity=0.8, schedule="gradual", recovery=RecoveryConfig(),
                scope="per-layer")
