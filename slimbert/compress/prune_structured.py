"""Structured pruning: remove whole attention heads and FFN neurons, so the matrices shrink.

Importance scores (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): a
gate of ones multiplies each head's context output and each FFN neuron's activation; the
gradient of the task loss with respect to a gate, |dL/dg| accumulated over batches, is the
first-order (Taylor) estimate of the loss change when that unit is removed. Gates are
forward hooks, not ``head_mask``, so scoring works on layers whose heads were already
pruned (transformers' head_mask assumes every layer has all heads). The ``magnitude``
scorer needs no data: the L2 norm of a unit's weights.

Slicing: heads go through transformers' own ``model.prune_heads`` (it records
``config.pruned_heads`` in original head numbering, so ``from_pretrained`` re-prunes on
load and composing with earlier pruning works). FFN neurons are sliced out of
``intermediate.dense`` (rows) and ``output.dense`` (columns); the same number is removed
from every layer, because BertConfig has one ``intermediate_size`` and a model with equal
layers reloads with plain ``from_pretrained``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from slimbert.compress.student import find_layers
from slimbert.errors import ModelError

log = logging.getLogger(__name__)


@dataclass
class Scores:
    heads: list[torch.Tensor]  # per layer, one score per *current* head
    neurons: list[torch.Tensor]  # per layer, one score per current FFN neuron


def _parts(layer: nn.Module) -> tuple[nn.Module, nn.Module, nn.Linear, nn.Linear]:
    """(attention, self-attention, FFN up projection, FFN down projection) of a BERT layer."""
    try:
        return layer.attention, layer.attention.self, layer.intermediate.dense, layer.output.dense
    except AttributeError:
        raise ModelError(
            f"structured pruning supports BERT-style layers (attention.self, intermediate, "
            f"output); this model's layers are {type(layer).__name__}.",
            hint="use a BERT/MiniLM/ELECTRA/RoBERTa encoder, or method: magnitude.",
        ) from None


def layer_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(heads, FFN neurons) of every layer, as it is now."""
    return [(_parts(layer)[1].num_attention_heads, _parts(layer)[2].out_features)
            for layer in find_layers(model)[2]]


def magnitude_scores(model: nn.Module, batches=None, loss_fn=None) -> Scores:
    heads, neurons = [], []
    for layer in find_layers(model)[2]:
        _, att, up, down = _parts(layer)
        size = att.attention_head_size
        qkv = torch.cat([att.query.weight, att.key.weight, att.value.weight], dim=1)  # [all_head, 3h]
        per_head = qkv.detach().pow(2).sum(1).view(-1, size).sum(1)
        out = layer.attention.output.dense.weight.detach().pow(2).sum(0).view(-1, size).sum(1)
        heads.append((per_head + out).sqrt())
        neurons.append((up.weight.detach().pow(2).sum(1) + down.weight.detach().pow(2).sum(0)).sqrt())
    return Scores(heads, neurons)


def taylor_scores(model: nn.Module, batches, loss_fn: Callable[[nn.Module, dict], torch.Tensor]) -> Scores:
    """Michel et al.'s gate-gradient importance, averaged over ``batches``."""
    layers = find_layers(model)[2]
    head_gates, neuron_gates, handles = [], [], []
    for layer in layers:
        _, att, up, _ = _parts(layer)
        hg = torch.ones(att.num_attention_heads, requires_grad=True)
        ng = torch.ones(up.out_features, requires_grad=True)
        head_gates.append(hg)
        neuron_gates.append(ng)

        def gate_heads(module, args, output, hg=hg, size=att.attention_head_size):
            context = output[0] * hg.repeat_interleave(size)
            return (context, *output[1:])

        def gate_neurons(module, args, output, ng=ng):
            return output * ng

        handles.append(att.register_forward_hook(gate_heads))
        handles.append(layer.intermediate.register_forward_hook(gate_neurons))
    head_acc = [torch.zeros_like(g) for g in head_gates]
    neuron_acc = [torch.zeros_like(g) for g in neuron_gates]
    was_training = model.training
    model.eval()  # no dropout: scores of a deterministic function
    params = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        count = 0
        for batch in batches:
            loss = loss_fn(model, batch)
            grads = torch.autograd.grad(loss, head_gates + neuron_gates)
            for acc, g in zip(head_acc + neuron_acc, grads, strict=True):
                acc += g.abs()
            count += 1
        if count == 0:
            raise ModelError("no batches to score importance on.", hint="the training split is empty.")
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in zip(model.parameters(), params, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    # Michel et al. normalise head scores per layer (L2), which makes them comparable
    heads = [acc / count / (acc / count).norm().clamp_min(1e-12) for acc in head_acc]
    return Scores(heads, [acc / count for acc in neuron_acc])


SCORERS: dict[str, Callable[..., Scores]] = {"taylor": taylor_scores, "magnitude": magnitude_scores}


def original_head_ids(model: nn.Module, layer_index: int) -> list[int]:
    """Original numbers of the heads a layer still has (``prune_heads`` speaks in those)."""
    layer = find_layers(model)[2][layer_index]
    total = model.config.num_attention_heads
    pruned = set(getattr(layer.attention, "pruned_heads", set()))
    remaining = [h for h in range(total) if h not in pruned]
    assert len(remaining) == _parts(layer)[1].num_attention_heads
    return remaining


def choose_heads(model: nn.Module, scores: Scores, fraction: float) -> dict[int, list[int]]:
    """Per layer, the ``round(fraction * heads)`` least important heads (original numbers)."""
    plan = {}
    for i, layer_scores in enumerate(scores.heads):
        n = len(layer_scores)
        k = int(round(fraction * n))
        if k >= n:
            raise ModelError(
                f"heads_fraction {fraction} would prune all {n} heads of layer {i}.",
                hint="every layer keeps at least one head: lower heads_fraction.",
            )
        if k:
            order = torch.argsort(layer_scores, stable=True)[:k].tolist()
            ids = original_head_ids(model, i)
            plan[i] = sorted(ids[j] for j in order)
    return plan


def prune_heads(model: nn.Module, plan: dict[int, list[int]]) -> None:
    """Remove heads (original numbering) with transformers' own pruning, recorded in the config."""
    for i, heads in plan.items():
        remaining = original_head_ids(model, i)
        bad = [h for h in heads if h not in remaining]
        if bad:
            raise ModelError(f"heads {bad} of layer {i} do not exist or are already pruned.",
                             hint=f"layer {i} has heads {remaining}.")
        if set(remaining) <= set(heads):
            raise ModelError(f"pruning heads {sorted(heads)} would remove every head of layer {i}.",
                             hint="every layer keeps at least one head.")
    model.prune_heads({i: list(h) for i, h in plan.items() if h})


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    w = linear.weight.detach().index_select(dim, index).clone()
    b = linear.bias.detach().clone() if linear.bias is not None else None
    if dim == 0 and b is not None:
        b = b[index]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype, device=w.device)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def prune_neurons(model: nn.Module, scores: Scores, fraction: float, multiple: int = 1) -> int:
    """Drop the same number of least important FFN neurons from every layer; returns the new size.

    With ``multiple`` > 1 the kept count is rounded down to a multiple of it (GEMM kernels
    run fastest on sizes in multiples of their tile), pruning slightly more than asked.
    """
    layers = find_layers(model)[2]
    sizes = {_parts(layer)[2].out_features for layer in layers}
    if len(sizes) != 1:
        raise ModelError(f"FFN sizes differ between layers ({sorted(sizes)}); BertConfig has one "
                         "intermediate_size, so the model could not be reloaded.",
                         hint="prune FFN neurons only on models with equal layers.")
    size = sizes.pop()
    keep = size - int(round(fraction * size))
    if fraction > 0 and multiple > 1:
        keep = keep // multiple * multiple
    if keep < 1:
        raise ModelError(f"ffn_fraction {fraction} would remove every FFN neuron.",
                         hint="use ffn_fraction < 1.")
    if keep == size:
        return size
    for layer, layer_scores in zip(layers, scores.neurons, strict=True):
        index = torch.sort(torch.argsort(layer_scores, descending=True, stable=True)[:keep]).values
        layer.intermediate.dense = _slice_linear(layer.intermediate.dense, index, 0)
        layer.output.dense = _slice_linear(layer.output.dense, index, 1)
    model.config.intermediate_size = keep
    return keep


def prune_structured(model: nn.Module, *, heads_fraction: float, ffn_fraction: float, scorer: str,
                     batches=None, loss_fn=None, ffn_multiple: int = 1) -> dict:
    """Score, then remove heads and FFN neurons in place; returns what was removed."""
    before = layer_shapes(model)
    scores = SCORERS[scorer](model, batches, loss_fn)
    heads = choose_heads(model, scores, heads_fraction)
    prune_heads(model, heads)
    prune_neurons(model, scores, ffn_fraction, ffn_multiple)
    after = layer_shapes(model)
    log.info("structured pruning: (heads, neurons) per layer %s -> %s", before, after)
    return {"pruned_heads": {str(k): v for k, v in heads.items()},
            "shape_before": [list(s) for s in before], "shape_after": [list(s) for s in after],
            "head_scores": [np.round(s.numpy(), 5).tolist() for s in scores.heads]}
