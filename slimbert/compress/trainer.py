"""One training loop for fine-tuning and distillation.

What the two share is everything but the loss: AdamW with warmup + linear decay,
length-bucketed batches, dev evaluation with early stopping, and checkpoints that let a
killed run resume where it stopped (same batches, same dropout RNG, same result).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimbert.data import EncodedSplit, classification_metrics, collate
from slimbert.data.tokenize import training_batches
from slimbert.progress import progress_bar

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"

# loss_fn(model, batch tensors, example indices) -> scalar loss
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor], np.ndarray], torch.Tensor]


@dataclass
class TrainConfig:
    """Optimisation settings shared by every training stage."""

    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    patience: int = 2  # epochs without dev improvement before stopping; 0 = never stop
    metric: str = "accuracy"  # dev metric for early stopping / best checkpoint
    evals_per_epoch: int = 1
    checkpoint_every: int = 100  # optimiser steps between resumable checkpoints
    length_pool: int = 50  # batches per length-sorted pool (less padding); 1 = random batches

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.metric not in ("accuracy", "macro_f1", "mcc"):
            raise ValueError(f"metric must be accuracy, macro_f1 or mcc, got {self.metric!r}")
        if self.evals_per_epoch < 1 or self.checkpoint_every < 1 or self.length_pool < 1:
            raise ValueError("evals_per_epoch, checkpoint_every and length_pool must be >= 1")


@dataclass
class TrainResult:
    best_dev: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False
    resumed_from_step: int = 0
    seconds: float = 0.0  # wall time of this process's share of the training

    def metrics(self) -> dict[str, Any]:
        """What every training stage records in its manifest."""
        return {"dev": self.best_dev, "train_seconds": round(self.seconds, 1), "steps": self.steps,
                "stopped_early": self.stopped_early, "resumed_from_step": self.resumed_from_step,
                "history": self.history}


def label_tensor(labels: np.ndarray, index: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(labels[index])


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


@torch.no_grad()
def predict_logits(model: torch.nn.Module, enc: EncodedSplit, batch_size: int = 64,
                   desc: str | None = None, progress: bool = False) -> np.ndarray:
    """Logits for every example, in the split's order (the model is left in its mode)."""
    from slimbert.runtimes.torch_runtime import TorchSession

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device.type
        session = TorchSession(model, device, torch.float32, enc.input_names)
        return session.predict(enc, batch_size, desc=desc, progress=progress)
    finally:
        model.train(was_training)


def evaluate(model: torch.nn.Module, enc: EncodedSplit, num_labels: int) -> dict[str, Any]:
    logits = predict_logits(model, enc)
    return classification_metrics(enc.labels, logits.argmax(-1), num_labels)


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def train(
    model: torch.nn.Module,
    train_enc: EncodedSplit,
    dev_enc: EncodedSplit,
    num_labels: int,
    cfg: TrainConfig,
    loss_fn: LossFn,
    work_dir: Path,
    seed: int,
    desc: str = "train",
    progress: bool = True,
    extra_params: list[torch.nn.Parameter] | None = None,
    select_from_step: int = 0,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the best-on-dev weights.

    ``work_dir`` holds the checkpoint; if one is there the run resumes from it. Evaluations
    before ``select_from_step`` are recorded but cannot become the best weights (gradual
    pruning: a checkpoint from before the target sparsity is not a valid result).
    """
    start = time.perf_counter()
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params or [])
    no_decay = {id(p) for n, p in model.named_parameters() if p.ndim < 2 or "LayerNorm" in n}
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if id(p) not in no_decay], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    lengths = train_enc.lengths
    steps_per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(int(cfg.warmup_ratio * total_steps), total_steps)
    )
    eval_points = {
        min(steps_per_epoch, round(steps_per_epoch * (k + 1) / cfg.evals_per_epoch))
        for k in range(cfg.evals_per_epoch)
    }

    state: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0,
                             "best": None, "bad_evals": 0, "history": [], "stopped_early": False}
    ckpt_path, best_path = work_dir / CHECKPOINT, work_dir / BEST
    resumed_from = 0
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        state = ckpt["state"]
        resumed_from = state["global_step"]
        log.info("%s: resuming from step %d (epoch %d)", desc, resumed_from, state["epoch"] + 1)

    def checkpoint() -> None:
        _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                      "state": state}, ckpt_path)

    patience_evals = cfg.patience * cfg.evals_per_epoch
    bar = progress_bar(enabled=progress, total=total_steps, initial=state["global_step"], desc=desc)
    model.train()
    while state["epoch"] < cfg.epochs:
        batches = training_batches(lengths, cfg.batch_size, seed, state["epoch"], cfg.length_pool)
        for step in range(state["step_in_epoch"], len(batches)):
            index = batches[step]
            batch = to_tensors(collate(train_enc, index))
            loss = loss_fn(model, batch, index)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step_in_epoch"] = step + 1
            state["global_step"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)

            if step + 1 in eval_points:
                metrics = evaluate(model, dev_enc, num_labels)
                record = {"epoch": state["epoch"] + 1, "step": state["global_step"],
                          "loss": float(loss.item()), **{f"dev_{k}": v for k, v in metrics.items()}}
                state["history"].append(record)
                score = metrics[cfg.metric]
                if state["global_step"] < select_from_step:
                    pass  # not a candidate yet (e.g. pruning still under way): no best, no patience
                elif state["best"] is None or score > state["best"][cfg.metric]:
                    state["best"] = metrics
                    state["bad_evals"] = 0
                    _save_atomic(model.state_dict(), best_path)
                else:
                    state["bad_evals"] += 1
                best = state["best"][cfg.metric] if state["best"] else float("nan")
                bar.set_postfix(loss=f"{loss.item():.4f}", dev=f"{score:.4f}", best=f"{best:.4f}")
                log.info("%s step %d: dev %s %.4f (best %.4f)", desc, state["global_step"],
                         cfg.metric, score, best)
                if patience_evals and state["bad_evals"] >= patience_evals:
                    state["stopped_early"] = True
                    state["epoch"] = cfg.epochs  # the checkpoint must say "finished"
                    checkpoint()
                    break
            if state["global_step"] % cfg.checkpoint_every == 0:
                checkpoint()
        else:
            state["epoch"] += 1
            state["step_in_epoch"] = 0
            checkpoint()
    bar.close()

    model.load_state_dict(torch.load(best_path, weights_only=True))
    model.eval()
    return TrainResult(best_dev=state["best"], history=state["history"],
                       steps=state["global_step"], stopped_early=state["stopped_early"],
                       resumed_from_step=resumed_from, seconds=time.perf_counter() - start)
