"""The distillation losses, each a pure function of student and teacher outputs.

Logit KD (Hinton et al.) is nearly free once teacher logits are cached, and at half depth
it is all a student needs. Shallower students lose more, and the intermediate losses are
what close that gap: hidden states (DistilBERT's cosine, or TinyBERT's MSE through a
learned projection when the widths differ) and self-attention distributions (MiniLM's
KL), each pairing student layer i with teacher layer ``layer_map[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, times T^2."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)


def hidden_state_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                      pairs: Sequence[tuple[int, int]], mask: torch.Tensor,
                      kind: str = "cosine") -> torch.Tensor:
    """Mean over ``(student index, teacher index)`` pairs of a per-token distance.

    ``cosine``: 1 - cosine similarity (DistilBERT; scale-free, needs equal widths).
    ``mse``: mean squared error (TinyBERT; the student's states are already projected to
    the teacher's width). Only real tokens count, so padding cannot dilute the loss.
    """
    keep = mask.bool()
    losses = []
    for s_idx, t_idx in pairs:
        s = student_hidden[s_idx][keep]
        t = teacher_hidden[t_idx][keep].to(s.dtype)
        if kind == "cosine":
            losses.append(1 - F.cosine_similarity(s, t, dim=-1).mean())
        else:
            losses.append(F.mse_loss(s, t))
    return torch.stack(losses).mean()


def attention_kl_loss(student_attn: Sequence[torch.Tensor], teacher_attn: Sequence[torch.Tensor],
                      pairs: Sequence[tuple[int, int]], mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) between self-attention distributions (MiniLM).

    Each map is (batch, heads, query, key) with rows that sum to 1 over real keys. The KL is
    averaged over heads and real query positions. If the head counts differ (a student from
    another pretrained model), each side's maps are averaged over heads first.
    """
    query = mask.bool()
    losses = []
    for s_idx, t_idx in pairs:
        s, t = student_attn[s_idx], teacher_attn[t_idx].to(student_attn[s_idx].dtype)
        if s.shape[1] != t.shape[1]:
            s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
        # masked keys have probability 0 on both sides; clamp keeps 0 * log 0 at 0
        kl = (t * (torch.log(t.clamp_min(1e-12)) - torch.log(s.clamp_min(1e-12)))).sum(-1)
        kl = kl.mean(1)  # over heads: (batch, query)
        losses.append(kl[query].mean())
    return torch.stack(losses).mean()
