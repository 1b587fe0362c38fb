"""The distillation losses: zero when the student matches, padding ignored, shapes handled."""

import pytest
import torch

from slimbert.compress.kd_losses import attention_kl_loss, hidden_state_loss, kd_loss


def test_kd_loss_is_zero_for_identical_logits_and_scaled_by_t_squared():
    logits = torch.randn(8, 3)
    assert kd_loss(logits, logits, 2.0).item() == pytest.approx(0, abs=1e-6)
    other = torch.randn(8, 3)
    assert kd_loss(other, logits, 1.0).item() > 0
    # at large T the T^2 factor keeps gradients comparable: loss tends to a finite value
    high_t = kd_loss(other, logits, 100.0).item()
    assert kd_loss(other, logits, 50.0).item() == pytest.approx(high_t, rel=0.05)


def attention(batch: int, heads: int, n: int, mask: torch.Tensor) -> torch.Tensor:
    scores = torch.randn(batch, heads, n, n).masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    return scores.softmax(-1)


@pytest.fixture
def mask():
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    return mask


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_hidden_loss_is_zero_on_match_and_ignores_padding(mask, kind):
    teacher = [torch.randn(2, 6, 8) for _ in range(3)]
    student = [t.clone() for t in teacher[:2]]
    pairs = [(0, 0), (1, 2)]
    same = hidden_state_loss(student, teacher, [(0, 0), (1, 1)], mask, kind)
    assert same.item() == pytest.approx(0, abs=1e-6)
    loss = hidden_state_loss(student, teacher, pairs, mask, kind)
    assert loss.item() > 0
    student[1][1, 4:] += 100  # padded positions of the second sentence
    padded = hidden_state_loss(student, teacher, pairs, mask, kind)
    assert padded.item() == pytest.approx(loss.item(), rel=1e-5)


def test_attention_kl_zero_on_match_positive_otherwise_and_ignores_padded_queries(mask):
    teacher = [attention(2, 4, 6, mask) for _ in range(2)]
    assert attention_kl_loss([t.clone() for t in teacher], teacher, [(0, 0), (1, 1)], mask).item() == \
        pytest.approx(0, abs=1e-6)
    student = [attention(2, 4, 6, mask)]
    loss = attention_kl_loss(student, teacher, [(0, 1)], mask)
    assert loss.item() > 0
    student[0][1, :, 4:] = torch.rand(4, 2, 6).softmax(-1)  # rows of padded queries
    assert attention_kl_loss(student, teacher, [(0, 1)], mask).item() == pytest.approx(loss.item(), rel=1e-5)


def test_attention_kl_with_different_head_counts_compares_head_averages(mask):
    teacher = attention(2, 4, 6, mask)
    student = teacher[:, :2].clone()  # 2 heads: not the teacher's average unless heads agree
    loss = attention_kl_loss([student], [teacher], [(0, 0)], mask)
    expected = attention_kl_loss([student.mean(1, keepdim=True)], [teacher.mean(1, keepdim=True)],
                                 [(0, 0)], mask)
    assert loss.item() == pytest.approx(expected.item())


def test_losses_have_gradients():
    mask = torch.ones(1, 4)
    s_hidden = torch.randn(1, 4, 8, requires_grad=True)
    hidden_state_loss([s_hidden], [torch.randn(1, 4, 8)], [(0, 0)], mask, "mse").backward()
    scores = torch.randn(1, 2, 4, 4, requires_grad=True)
    attention_kl_loss([scores.softmax(-1)], [attention(1, 2, 4, mask)], [(0, 0)], mask).backward()
    assert s_hidden.grad.abs().sum() > 0 and scores.grad.abs().sum() > 0
