"""What every PT2E backend shares: the job (graphs, data, the fp32 reference), quantizing a
copy of the fp32 graph with a quantizer, and reading which Linear layers came out INT8.

The fp32 layers are read from the converted graph (Linear ops whose weight is not
dequantized from INT8), whatever the backend says it did.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimbert.data import EncodedSplit, iterate_batches
from slimbert.export.pt2e import calibrate
from slimbert.quantize.config import TorchQuantizeConfig
from slimbert.validation import accuracy, drop_points

LAYER_PREFIX = "model."  # the logits wrapper's attribute: stripped in reports (HF module names)


@dataclass
class TorchQuantJob:
    """One quantization of one classifier: what every backend needs."""

    module: Any  # the eager logits module (positional tensors in, logits out)
    program: Any  # its fp32 ExportedProgram (dynamic batch and sequence)
    names: tuple[str, ...]
    vocab_size: int
    max_seq_len: int
    cfg: TorchQuantizeConfig
    calibration: EncodedSplit
    dev: EncodedSplit
    fp32_logits: np.ndarray | None = None
    progress: bool = False

    def fp32_graph(self):
        """A fresh copy of the fp32 graph (prepare_pt2e rewrites the graph it is given)."""
        return copy.deepcopy(self.program.module())

    def calibration_batches(self) -> Iterator[dict]:
        """Training batches, one collated at a time; dynamic mode needs one (weight observers)."""
        batches = (b for _, b in iterate_batches(self.calibration, self.cfg.calibration_batch_size))
        return iter([next(batches)]) if self.cfg.mode == "dynamic" else batches

    def logits(self, module) -> np.ndarray:
        """Dev logits as served: a dynamic program example by example (its ranges are per batch)."""
        from slimbert.runtimes.pt2e_runtime import Pt2eSession

        dynamic = self.cfg.mode == "dynamic"
        session = Pt2eSession(module, self.names, self.max_seq_len, batch_dependent=dynamic)
        return session.served_logits(self.dev)

    def drop_points(self, logits: np.ndarray) -> float:
        return drop_points(accuracy(self.fp32_logits, self.dev.labels), accuracy(logits, self.dev.labels))


def pt2e_quantize(job: TorchQuantJob, quantizer):
    """prepare_pt2e -> calibrate on training batches -> convert_pt2e (INT8 weights folded)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(job.fp32_graph(), quantizer)
    calibrate(prepared, job.names, job.calibration_batches(), job.max_seq_len)
    return convert_pt2e(prepared)


def quantize_only(job: TorchQuantJob, make_quantizer: Callable[[str], Any]) -> Callable[[str], np.ndarray]:
    """The fallback's ranking probe: dev logits with only the named layer quantized."""
    return lambda name: job.logits(pt2e_quantize(job, make_quantizer(name)))


def linear_names(job: TorchQuantJob) -> list[str]:
    """The Linear layers of the fp32 graph, in graph order: the fallback's units."""
    return [name for name, _ in linear_layers(job.program.module())]


# ---- graph inspection ------------------------------------------------------------------------

def _module_name(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return node.name
    path = list(stack.values())[-1][0]
    return path.removeprefix("L['self'].")


def display(name: str) -> str:
    return name.removeprefix(LAYER_PREFIX)


def linear_layers(graph_module) -> list[tuple[str, bool]]:
    """(module name, INT8 weight?) for every linear op, in graph order."""
    import torch

    rows = []
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.linear.default:
            weight = node.args[1]
            quantized = getattr(weight, "op", None) == "call_function" and "dequantize" in str(weight.target)
            rows.append((_module_name(node), quantized))
    return rows


def fp32_layers(graph_module) -> list[str]:
    return [display(name) for name, quantized in linear_layers(graph_module) if not quantized]
