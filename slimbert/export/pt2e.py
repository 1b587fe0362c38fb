"""torch.export and PT2E helpers shared by export-executorch (XNNPACK) and quantize-torch (x86, INC).

A classifier is captured as a module of positional tensors (input_ids, attention_mask[,
token_type_ids]) returning logits, with dynamic batch and sequence dims: the calling
convention of a .pte method and of a saved ``model.pt2`` program alike. PT2E quantization
inserts observers into that captured graph (``prepare_pt2e``), sees real batches
(``calibrate``) and converts to a Q/DQ graph (``convert_pt2e``).

A quantize-torch artifact is ``model.pt2`` (``torch.export.save``) beside ``pt2e.json``
(input names, sequence bound, how it was quantized), ``config.json`` and the tokenizer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from slimbert.runtimes.pt2e_runtime import to_args

log = logging.getLogger(__name__)


def logits_module(model, names: tuple[str, ...]):
    """Wrap a Hugging Face classifier: positional tensors in, logits out."""
    import torch

    class Logits(torch.nn.Module):
        """Positional tensors in, logits out: the calling convention of a .pte/.pt2 program."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
                      "token_type_ids": token_type_ids}
            return self.model(**{n: inputs[n] for n in names}).logits

    return Logits().eval()


def example_args(names: tuple[str, ...], vocab_size: int) -> tuple:
    import torch

    ids = torch.randint(vocab_size // 4, vocab_size, (2, 16), dtype=torch.long)
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
               "token_type_ids": torch.zeros_like(ids)}
    return tuple(example[n] for n in names)


def dynamic_shapes(names: tuple[str, ...], *, max_seq_len: int, max_batch: int | None = None) -> tuple:
    """Batch (1..max_batch, unbounded if None) and sequence (2..max_seq_len) dims for every input."""
    import torch

    batch = (torch.export.Dim("batch", min=1, max=max_batch) if max_batch
             else torch.export.Dim("batch", min=1))
    seq = torch.export.Dim("sequence", min=2, max=max_seq_len)
    return ({0: batch, 1: seq},) * len(names)


def export_logits(module, names: tuple[str, ...], *, vocab_size: int, max_seq_len: int,
                  max_batch: int | None = None):
    """``torch.export`` the logits module with dynamic batch and sequence dims."""
    import torch

    return torch.export.export(module, example_args(names, vocab_size),
                               dynamic_shapes=dynamic_shapes(names, max_seq_len=max_seq_len,
                                                             max_batch=max_batch),
                               strict=False)


def spread(items: list, wanted: int) -> list:
    """``wanted`` items spread evenly over ``items`` (batches come in length order: short and
    long sentences both count)."""
    picks = sorted({round(i * (len(items) - 1) / max(wanted - 1, 1)) for i in range(min(wanted, len(items)))})
    return [items[i] for i in picks]


def calibrate(prepared, names: tuple[str, ...], batches: Iterable[dict],
              max_seq_len: int | None = None) -> int:
    """Run batches through a prepared (observed) graph; returns how many it saw."""
    import torch

    seen = 0
    with torch.no_grad():
        for batch in batches:
            prepared(*to_args(batch, names, max_seq_len))
            seen += 1
    return seen
