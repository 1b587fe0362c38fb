"""One small training run through ``train()``, for tests/compress/test_distributed.py.

``torchrun`` starts it once per process (``python -m tests.compress.ddp_worker MODEL CSV OUT``);
the tests also call ``run`` in-process for the one-process reference. The run exercises what
a multi-process launch has to get right: a loss that asks for hidden states (through DDP), a
learned parameter outside the transformers model (in a wrapper, as a distillation
projection is), dev evaluations, checkpoints and the best-weights file, and a second
``train()`` on the same work folder (resume).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from slimbert.compress.trainer import TrainConfig, label_tensor, train
from slimbert.data import DatasetConfig, encode_split, load_dataset
from slimbert.models import load_classifier, load_tokenizer

# 6 global batches: five of 8 rows (4 + 4 over 2 processes) and one of 7 (4 + 3), whose
# process losses must be weighted 8/7 and 6/7 for the step to equal one process's
TRAIN_EXAMPLES = 47
STEPS = 6


class ScaledLogits(torch.nn.Module):
    """The classifier plus one learned logit scale that is not part of it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, **inputs):
        out = self.model(**inputs)
        out.logits = out.logits * self.scale
        return out


def run(model_dir: Path, csv: Path, work: Path,
        mixed_precision: str = "no") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the tiny classifier; its final weights (+ ``extra.scale``) and a summary."""
    data = load_dataset(DatasetConfig(source=str(csv)))
    tok = load_tokenizer(model_dir)
    enc = {k: encode_split(tok, v, 32) for k, v in data.splits.items()}
    train_enc = enc["train"].head(TRAIN_EXAMPLES)
    labels = train_enc.labels
    seen: dict[str, Any] = {}

    def fresh() -> ScaledLogits:
        torch.manual_seed(0)
        return ScaledLogits(load_classifier(model_dir, data.label_names))

    model = fresh()

    def loss_fn(m, batch, index):
        seen["model"] = type(m).__name__
        seen["rows"] = max(seen.get("rows", 0), len(index))
        out = m(**batch, output_hidden_states=True)
        logits = out.logits
        ce = F.cross_entropy(logits, label_tensor(labels, index).to(logits.device))
        return ce + 1e-2 * out.hidden_states[-1][:, 0].pow(2).mean()  # [CLS]: a per-example mean

    # select_from_step: the returned (best) weights are the last step's, whatever dev says
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=8, patience=0, evals_per_epoch=2,
                      checkpoint_every=2, mixed_precision=mixed_precision)
    result = train(model, train_enc, enc["dev"], 2, cfg, loss_fn, work, seed=0, progress=False,
                   select_from_step=STEPS)
    weights = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
    weights["extra.scale"] = model.scale.detach().clone()

    again = fresh()  # a new process would resume from the finished checkpoint
    resumed = train(again, train_enc, enc["dev"], 2, cfg, loss_fn, work, seed=0, progress=False,
                    select_from_step=STEPS)
    again_weights = {**again.model.state_dict(), "extra.scale": again.scale}
    summary = {
        "model_seen_by_loss": seen["model"],
        "rows_per_process": seen["rows"],
        "steps": result.steps,
        "losses": [h["loss"] for h in result.history],
        "dev": [h["dev_accuracy"] for h in result.history],
        "device": str(next(model.parameters()).device),
        "dtype": str(next(model.parameters()).dtype),
        "resumed_from_step": resumed.resumed_from_step,
        "resume_is_identical": all(torch.equal(v, again_weights[k]) for k, v in weights.items()),
    }
    return weights, summary


def main(model_dir: str, csv: str, out: str) -> None:
    from safetensors.torch import save_file

    from slimbert import distributed

    out_dir = Path(out)
    weights, summary = run(Path(model_dir), Path(csv), out_dir / "work")
    rank = distributed.rank()
    summary["world_size"] = distributed.world_size()
    save_file({k: v.contiguous() for k, v in weights.items()}, out_dir / f"rank{rank}.safetensors")
    (out_dir / f"rank{rank}.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main(*sys.argv[1:])
