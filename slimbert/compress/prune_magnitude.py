"""Unstructured pruning of the encoder's linear weights by magnitude or movement.

``movement`` (Sanh et al. 2020) ranks weights by how training moves them rather than by
their size: each weight's score accumulates -w * dL/dw over the recovery steps (a weight
growing away from zero scores high, one the loss pushes toward zero scores low), and the
cubic schedule prunes the lowest scores. It needs training (a gradual schedule) and is the
stronger criterion at high sparsity during distillation, where fine-tuning has moved
weights far from their pretrained sizes.

Masks are our own (a boolean per weight) rather than ``torch.nn.utils.prune``'s
reparametrisation, so state_dict keys, checkpoints and ``save_pretrained`` stay plain. A
forward pre-hook multiplies the weights by their masks before every forward pass: pruned
weights stay zero while the optimiser trains the rest. ``gradual`` follows Zhu & Gupta
(2017): sparsity s_t = s_f * (1 - (1 - t / T)^3), recomputed from magnitudes every few
steps and reaching the target at ``RAMP`` of the training steps, so the last part of
recovery trains at the final sparsity. ``finish`` applies the final masks to the weights
the trainer kept and removes the hook: the zeros are permanent. With a gradual schedule the
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


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The encoder layers' linear weights (embeddings, pooler and classifier stay dense)."""
    found = {}
    for i, layer in enumerate(find_layers(model)[2]):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                found[f"layer.{i}.{name}.weight"] = module.weight
    return found


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
        flat = torch.cat([s.flatten() for s in scores.values()])
        k = int(sparsity * flat.numel())
        threshold = torch.kthvalue(flat, k).values if k else flat.min() - 1
        return {name: s > threshold for name, s in scores.items()}
    masks = {}
    for name, s in scores.items():
        k = int(sparsity * s.numel())
        threshold = torch.kthvalue(s.flatten(), k).values if k else s.min() - 1
        masks[name] = s > threshold
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

    def __init__(self, model: nn.Module, sparsity: float, scope: str, total_steps: int = 0,
                 criterion: str = "magnitude"):
        self.model, self.sparsity, self.scope, self.criterion = model, sparsity, scope, criterion
        self.total_steps = total_steps  # 0: one-shot (final sparsity from the start)
        self.weights = prunable_weights(model)
        self.step = 0
        self.scores = {name: torch.zeros_like(w, requires_grad=False) for name, w in self.weights.items()}
        self.grad_handles = []
        if criterion == "movement":
            for name, w in self.weights.items():
                self.grad_handles.append(w.register_hook(self._movement(name, w)))
        self.current = cubic_sparsity(0, self._ramp(), sparsity) if total_steps else sparsity
        self.masks = self._masks(self.current)
        self._apply()
        self.handle = model.register_forward_pre_hook(self._before_forward)

    def _movement(self, name: str, weight: nn.Parameter):
        def accumulate(grad: torch.Tensor) -> None:
            self.scores[name].sub_(grad.detach() * weight.detach())
        return accumulate

    def _masks(self, sparsity: float) -> dict[str, torch.Tensor]:
        """Movement scores once training has produced some; magnitudes before that."""
        if self.criterion == "movement" and any(s.any() for s in self.scores.values()):
            return top_score_masks(self.scores, sparsity, self.scope)
        return magnitude_masks(self.weights, sparsity, self.scope)

    @property
    def select_from_step(self) -> int:
        """First training step whose weights are at the final sparsity (0: one-shot)."""
        return self._ramp() if self.total_steps else 0

    def _ramp(self) -> int:
        return max(1, math.floor(RAMP * self.total_steps))

    @torch.no_grad()
    def _apply(self) -> None:
        for name, w in self.weights.items():
            w.mul_(self.masks[name])

    def _before_forward(self, module, args) -> None:
        if module.training and self.total_steps:
            self.step += 1
            if self.step % UPDATE_EVERY == 0 or self.step >= self._ramp():
                target = cubic_sparsity(self.step, self._ramp(), self.sparsity)
                if target != self.current or self.criterion == "movement":
                    self.current = target
                    self.masks = self._masks(target)
        self._apply()

    def finish(self) -> dict[str, Any]:
        """Final-sparsity masks on the kept weights, applied for good; the hook is removed."""
        self.handle.remove()
        for handle in self.grad_handles:
            handle.remove()
        total = sum(w.numel() for w in self.weights.values())
        held = sum(int((w == 0).sum()) for w in self.weights.values()) / total
        self.masks = self._masks(self.sparsity)
        self._apply()
        zeros = sum(int((w == 0).sum()) for w in self.weights.values())
        return {"criterion": self.criterion, "target_sparsity": self.sparsity, "scope": self.scope,
                "prunable_params": total, "prunable_sparsity": round(zeros / total, 4),
                # sparsity of the weights training ended with (gradual: the best checkpoint's)
                "sparsity_at_best_checkpoint": round(held, 4), "training_steps_seen": self.step}


def start_magnitude_pruning(model: nn.Module, cfg, data, max_length: int) -> tuple[MaskHolder, dict]:
    """Attach masks for ``cfg`` (a PruneConfig); gradual schedules span the recovery's steps."""
    total = 0
    if cfg.schedule == "gradual":
        rec = cfg.recovery
        total = math.ceil(len(data.splits["train"]) / rec.batch_size) * rec.epochs
    holder = MaskHolder(model, cfg.sparsity, cfg.scope, total, criterion=cfg.method)
    return holder, {"schedule": cfg.schedule, "schedule_steps": total}
