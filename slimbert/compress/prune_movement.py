"""Movement pruning (Sanh, Wolf & Rush 2020): keep the weights training moves away from zero.

Magnitude pruning keeps the largest weights, a criterion fixed before training starts.
Movement pruning learns which weights matter while distilling: every prunable weight W has
a score S, the forward pass uses W * TopK(S), and the straight-through estimator gives
dL/dS = dL/dW' * W. A weight the loss pushes toward zero (gradient and weight of the same
sign) loses score; one pushed away from zero gains it, whatever its size. The scores are
parameters of the model (a ``torch.nn.utils.parametrize`` parametrization of each Linear
weight), so the trainer optimises, checkpoints, resumes and synchronises them like any
weight, and the dense weights behind the mask stay intact, so a weight masked early can
come back when its score rises. This is the "hard" variant (a target sparsity, ``TopK``).

Scores start at |W| by default, so the first masks are magnitude pruning's and training
reorders them by movement (the optimiser moves a score by about lr per step, so over a
recovery of ~1000 steps at lr 1e-4 movement can overturn magnitude differences of ~0.1,
the size of typical BERT weights). The paper starts from zero, all scores tied, and learns
them over 10 epochs from the pretrained encoder; on the default student's 4-epoch
recovery that init (``init: zero``) pruned nearly at random once the ramp began (dev
accuracy fell to 49% at 46% sparsity). Nothing is pruned during a warm-up (``WARMUP`` of
the steps) while the scores learn; then the cubic schedule raises the sparsity to the
target by ``RAMP`` of the steps, as in magnitude pruning. ``finish`` bakes W * mask into
plain weights and removes the parametrizations: the saved model has no scores and plain keys.
Ranking is per matrix by default (``scope: per-layer``), as in the paper; a global ranking
of raw scores can empty whole matrices.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimbert.compress.prune_magnitude import (
    cubic_sparsity,
    prunable_linears,
    ramp_steps,
    sparsity_summary,
    top_score_masks,
)

log = logging.getLogger(__name__)

WARMUP = 0.1  # fraction of training steps at 0% sparsity while the scores learn
SCORE_INITS = ("magnitude", "zero")


class MovementMask(nn.Module):
    """Parametrization W -> W * mask, with the mask's gradient passed straight to the scores."""

    def __init__(self, weight: torch.Tensor, init: str = "magnitude"):
        super().__init__()
        start = weight.detach().abs().clone() if init == "magnitude" else torch.zeros_like(weight)
        self.scores = nn.Parameter(start)
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool), persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # value: the 0/1 mask; gradient: identity to the scores (straight-through)
        gate = self.mask.to(weight.dtype) + self.scores - self.scores.detach()
        return weight * gate


class MovementPruner:
    """Scores and masks on a model's encoder linears through training; same interface as MaskHolder."""

    def __init__(self, model: nn.Module, sparsity: float, scope: str, total_steps: int,
                 linears: dict[str, nn.Linear] | None = None, init: str = "magnitude"):
        if total_steps < 1:
            raise ValueError("movement pruning learns its scores while training: it needs a gradual "
                             "schedule with recovery steps")
        if init not in SCORE_INITS:
            raise ValueError(f"movement score init must be one of {', '.join(SCORE_INITS)}, got {init!r}")
        if scope not in ("per-layer", "global"):
            raise ValueError(f"movement pruning ranks per-layer or global, not {scope!r}")
        self.sparsity, self.scope, self.total_steps = sparsity, scope, total_steps
        self.linears = prunable_linears(model) if linears is None else linears  # default: the encoder's
        self.gates: dict[str, MovementMask] = {}
        for name, linear in self.linears.items():
            parametrize.register_parametrization(linear, "weight", MovementMask(linear.weight, init))
            self.gates[name] = linear.parametrizations.weight[0]
        self.step = 0
        self.current = 0.0

    @property
    def select_from_step(self) -> int:
        """First training step whose weights are at the final sparsity."""
        return ramp_steps(self.total_steps)

    def sparsity_at(self, step: int) -> float:
        start = math.floor(WARMUP * self.total_steps)
        if step < start:
            return 0.0
        return cubic_sparsity(step - start, ramp_steps(self.total_steps) - start, self.sparsity)

    @torch.no_grad()
    def _set_masks(self, sparsity: float) -> None:
        if sparsity == self.current == 0:
            return  # warm-up: the masks are still all ones
        scores = {name: gate.scores for name, gate in self.gates.items()}
        for name, mask in top_score_masks(scores, sparsity, self.scope).items():
            self.gates[name].mask = mask
        self.current = sparsity

    def at_step(self, step: int) -> None:
        """Masks from the current scores at this step's sparsity; the trainer calls it each step.

        The scores change every step, so the masks are recomputed every step; they depend
        only on the scores (checkpointed) and the step, so a resumed run continues exactly.
        """
        self.step = step
        self._set_masks(self.sparsity_at(step))

    @torch.no_grad()
    def finish(self) -> dict[str, Any]:
        """Final-sparsity masks from the kept scores, baked into plain weights."""
        held = self.current
        self._set_masks(self.sparsity)
        for linear in self.linears.values():
            parametrize.remove_parametrizations(linear, "weight", leave_parametrized=True)
        summary = sparsity_summary([linear.weight for linear in self.linears.values()], self.sparsity,
                                   self.scope, held, self.step)
        log.info("movement pruning: %.1f%% of %d encoder linear weights zeroed",
                 100 * summary["prunable_sparsity"], summary["prunable_params"])
        return {"criterion": "movement", **summary}
