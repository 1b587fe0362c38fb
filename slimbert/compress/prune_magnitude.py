"""Unstructured magnitude pruning of the encoder's linear weights, one-shot or gradual.

Masks are our own (a boolean per weight) rather than ``torch.nn.utils.prune``'s
reparametrisation, so state_dict keys, checkpoints and ``save_pretrained`` stay plain. A
forward pre-hook multiplies the weights by their masks before every forward pass: pruned
weights stay zero while the optimiser trains the rest. ``gradual`` follows Zhu & Gupta
(2017): sparsity s_t = s_f * (1 - (1 - t / T)^3), recomputed from magnitudes every few
steps and reaching the target at ``RAMP`` of the training steps, so the last part of
recovery trains at the final sparsity; the trainer's step drives the schedule (``at_step``),
so a killed run resumes on the ramp where it stopped. ``finish`` applies the final masks to
the weights the trainer kept and removes the hook: the zeros are permanent. With a gradual schedule the
trainer only picks its best dev checkpoint from steps at the final sparsity.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from slimbert.compress.student import find_layers

log = logging.getLogger(__name__)

RAMP = 0.7  # fraction of training steps over which gradual sparsity rises to the target
UPDATE_EVERY = 10  # training steps between mask updates


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The encoder layers' linear modules (embeddings, pooler and classifier stay dense)."""
    found = {}
    for i, layer in enumerate(find_layers(model)[2]):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                found[f"layer.{i}.{name}"] = module
    return found


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {f"{name}.weight": linear.weight for name, linear in prunable_linears(model).items()}


def ramp_steps(total_steps: int) -> int:
    """Training steps a gradual schedule takes to reach its target sparsity."""
    return max(1, math.floor(RAMP * total_steps))


def sparsity_summary(weights: list[torch.Tensor], target: float, scope: str, held: float,
                     steps: int) -> dict[str, Any]:
    """The unstructured pruners' report, from the final (permanently zeroed) weights."""
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return {"target_sparsity": target, "scope": scope,
            "prunable_params": total, "prunable_sparsity": round(zeros / total, 4),
            # sparsity of the weights training ended with (gradual: the best checkpoint's)
            "sparsity_at_best_checkpoint": round(held, 4), "training_steps_seen": steps}


def cubic_sparsity(step: int, total: int, final: float) -> float:
    """Zhu & Gupta's schedule from 0 to ``final`` over ``total`` steps, then constant."""
    if total <= 0 or step >= total:
        return final
    return final * (1 - (1 - step / total) ** 3)


def semi_structured_mask(weight: torch.Tensor, keep: int = 2, group: int = 4) -> torch.Tensor:
    """N:M mask: in every ``group`` consecutive inputs of each output row keep the ``keep`` largest.

    2:4 is the pattern NVIDIA's sparse tensor cores (Ampere and later) skip at full speed;
    TensorRT uses it when built with sparse weights. Any other hardware gains nothing.
    """
    if weight.shape[-1] % group:
        raise ValueError(f"2:4 sparsity needs input sizes divisible by {group}, got {tuple(weight.shape)}")
    groups = weight.detach().abs().reshape(-1, group)
    top = groups.topk(keep, dim=1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, top, True)
    return mask.reshape(weight.shape)


def top_score_masks(scores: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Keep-masks dropping the ``sparsity`` fraction of lowest scores, globally or per tensor."""
    if sparsity <= 0:
        return {k: torch.ones_like(s, dtype=torch.bool) for k, s in scores.items()}
    if scope == "global":
        flat = torch.cat([s.detach().flatten() for s in scores.values()])
        k = int(sparsity * flat.numel())
        threshold = torch.kthvalue(flat, k).values if k else flat.min() - 1
        return {name: s.detach() > threshold for name, s in scores.items()}
    masks = {}
    for name, s in scores.items():
        k = int(sparsity * s.numel())
        threshold = torch.kthvalue(s.detach().flatten(), k).values if k else s.detach().min() - 1
        masks[name] = s.detach() > threshold
    return masks


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Keep-masks zeroing the ``sparsity`` fraction of smallest |w|, globally or per tensor.

    Scope "2:4" ignores ``sparsity`` (always 50%) and keeps 2 of every 4 consecutive weights.
    """
    if scope == "2:4":
        return {name: semi_structured_mask(w) for name, w in weights.items()}
    return top_score_masks({name: w.detach().abs() for name, w in weights.items()}, sparsity, scope)


class MaskHolder:
    """Holds masks on a model through training; ``finish`` makes them permanent."""

    def __init__(self, model: nn.Module, sparsity: float, scope: str, total_steps: int = 0):
        self.model, self.sparsity, self.scope = model, sparsity, scope
        self.total_steps = total_steps  # 0: one-shot (final sparsity from the start)
        self.weights = prunable_weights(model)
        self.step = 0
        self.current = cubic_sparsity(0, ramp_steps(total_steps), sparsity) if total_steps else sparsity
        self.masks = magnitude_masks(self.weights, self.current, scope)
        self._apply()
        self.handle = model.register_forward_pre_hook(self._before_forward)

    @property
    def select_from_step(self) -> int:
        """First training step whose weights are at the final sparsity (0: one-shot)."""
        return ramp_steps(self.total_steps) if self.total_steps else 0

    @torch.no_grad()
    def _apply(self) -> None:
        for name, w in self.weights.items():
            if self.masks[name].device != w.device:  # the trainer moved the model (e.g. to a GPU)
                self.masks[name] = self.masks[name].to(w.device)
            w.mul_(self.masks[name])

    def at_step(self, step: int) -> None:
        """Set the masks for training step ``step``; the trainer calls it before each step.

        The masks at ``step`` are those of the last update step (every ``UPDATE_EVERY``
        during the ramp): a pure function of the step, so a resumed run picks the ramp up
        where it stopped. The checkpoint's weights are already zero where that update
        pruned, so recomputing from their magnitudes gives back the same masks.
        """
        self.step = step
        ramp = ramp_steps(self.total_steps)
        update = step if step >= ramp else step - step % UPDATE_EVERY
        target = cubic_sparsity(update, ramp, self.sparsity) if self.total_steps else self.sparsity
        if target != self.current:
            self.current = target
            self.masks = magnitude_masks(self.weights, target, self.scope)

    def _before_forward(self, module, args) -> None:
        self._apply()

    def finish(self) -> dict[str, Any]:
        """Final-sparsity masks on the kept weights, applied for good; the hook is removed."""
        self.handle.remove()
        total = sum(w.numel() for w in self.weights.values())
        held = sum(int((w == 0).sum()) for w in self.weights.values()) / total
        self.masks = magnitude_masks(self.weights, self.sparsity, self.scope)
        self._apply()
        return sparsity_summary(list(self.weights.values()), self.sparsity, self.scope, held, self.step)
