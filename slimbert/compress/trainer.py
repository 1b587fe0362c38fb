"""One training loop for fine-tuning and distillation.

What the two share is everything but the loss: AdamW with warmup + linear decay,
length-bucketed batches, dev evaluation with early stopping, and checkpoints that let a
killed run resume where it stopped (same batches, same dropout RNG, same result).

The loop runs through Hugging Face Accelerate, so the same recipe trains in one plain
process or under ``accelerate launch`` / ``torchrun`` (DDP, one process per GPU or gloo on
CPU), in fp32 or bf16/fp16 mixed precision. Every process builds the same global batches
(they are a pure function of seed and epoch) and trains on its own rows of each, so
``batch_size`` is the global batch on 1 or N processes and a step means the same thing.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from slimbert import distributed
from slimbert.compress.config import TrainConfig
from slimbert.data import EncodedSplit, classification_metrics, collate
from slimbert.data.tokenize import training_batches
from slimbert.errors import RecipeError
from slimbert.progress import progress_bar

if TYPE_CHECKING:
    from accelerate import Accelerator

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"

# loss_fn(model, batch tensors on the training device, example indices) -> scalar loss
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor], np.ndarray], torch.Tensor]


@dataclass
class TrainResult:
    best_dev: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False
    resumed_from_step: int = 0
    seconds: float = 0.0  # wall time of this process's share of the training
    processes: int = 1  # how many trained together (a multi-process launch)

    def metrics(self) -> dict[str, Any]:
        """What every training stage records in its manifest."""
        return {"dev": self.best_dev, "train_seconds": round(self.seconds, 1), "steps": self.steps,
                "processes": self.processes, "stopped_early": self.stopped_early,
                "resumed_from_step": self.resumed_from_step, "history": self.history}


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


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator for one ``train`` call, on this launch's device, at ``mixed_precision``.

    accelerate keeps its settings in process-wide singletons that refuse a second precision,
    while a pipeline trains several stages in one process, each with its own config. So the
    settings are reset on every call; the process state (device, process group) is reset too
    in a plain process, where there is no group to lose, so the device follows the
    environment of each call (``ACCELERATE_USE_CPU``).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=not distributed.launched())
    if mixed_precision == "fp16" and distributed.state().device.type == "cpu":
        raise RecipeError("mixed_precision: fp16 needs a CUDA GPU and this run trains on CPU, "
                          "where accelerate would quietly train in fp32 instead.",
                          hint="use mixed_precision: bf16 on CPU, or 'no'.")
    return Accelerator(cpu=distributed.use_cpu(), mixed_precision=mixed_precision)


def shard(index: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, float]:
    """This process's rows of a global batch, and the weight of its loss.

    DDP averages the processes' gradients. Weighting each process's mean loss by
    ``world * rows / batch`` makes that average the gradient of the whole batch's mean loss,
    as one process computes it, also when the rows do not split evenly. A process left
    without rows (a last batch smaller than the world) runs one row at weight 0, because
    DDP needs every process in every backward pass.
    """
    if world == 1:
        return index, 1.0
    mine = index[rank::world]
    if len(mine) == 0:
        return index[:1], 0.0
    return mine, world * len(mine) / len(index)


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(saved: list[dict[str, torch.Tensor]] | torch.Tensor, rank: int,
                 device: torch.device) -> None:
    """Put back this process's dropout RNG from a checkpoint (one state per process)."""
    if isinstance(saved, torch.Tensor):  # a checkpoint written before per-process states
        saved = [{"cpu": saved}]
    if rank >= len(saved):
        log.warning("the checkpoint was written by %d processes; process %d resumes with a "
                    "fresh dropout RNG", len(saved), rank)
        return
    torch.set_rng_state(saved[rank]["cpu"])
    if "cuda" in saved[rank] and device.type == "cuda":
        torch.cuda.set_rng_state(saved[rank]["cuda"], device)


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
    select_from_step: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the best-on-dev weights.

    ``work_dir`` holds the checkpoint; if one is there the run resumes from it. Evaluations
    before ``select_from_step`` are recorded but cannot become the best weights (gradual
    pruning: a checkpoint from before the target sparsity is not a valid result).

    Everything that learns must be a submodule of ``model`` (wrap the model, as
    distill.ProjectedStudent does): that is what checkpoints, resumes, keeps the best
    weights and synchronises across processes. ``on_step(global_step)`` runs before each
    optimiser step, including the first after a resume, so schedules that live outside the
    optimiser (gradual pruning masks) follow the trainer's step, not a count of their own.
    Training runs on the accelerator's device (a
    CUDA GPU when there is one and CPU is not forced); ``model`` comes back unwrapped, on the
    device it came on. ``loss_fn`` gets the batch on that device and must put its own tensors there too.
    Under a multi-process launch it gets the DDP-wrapped model and this process's rows of
    each batch; only the main process writes to ``work_dir``, and every process evaluates
    on dev but follows the main one's verdict, so all stop at the same step.
    """
    start = time.perf_counter()
    accelerator = make_accelerator(cfg.mixed_precision)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed + rank)  # a dropout stream per process; process 0's is the plain run's
    home = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
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
    # not accelerator.prepare(d): a prepared scheduler steps once per process per step
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(int(cfg.warmup_ratio * total_steps), total_steps)
    )
    # Under a launch the model is wrapped in DDP. Every parameter of a sequence classifier
    # takes part in each forward, so DDP runs without find_unused_parameters (its cost is a
    # graph walk per step); a model with an unused one fails loudly at the second step.
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    # prepare() also wraps the model's forward in autocast; the loss_fn is autocast below
    # instead, so that dev evaluation (on the bare model) runs in fp32, as the exports do.
    model = accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)
    eval_points = {
        min(steps_per_epoch, round(steps_per_epoch * (k + 1) / cfg.evals_per_epoch))
        for k in range(cfg.evals_per_epoch)
    }

    state: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0,
                             "best": None, "bad_evals": 0, "history": [], "stopped_early": False}
    ckpt_path, best_path = work_dir / CHECKPOINT, work_dir / BEST
    resumed_from = 0
    if ckpt_path.is_file():  # every process resumes from the same file
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _restore_rng(ckpt["rng"], rank, device)
        if accelerator.scaler is not None and "scaler" in ckpt:
            accelerator.scaler.load_state_dict(ckpt["scaler"])
        state = ckpt["state"]
        resumed_from = state["global_step"]
        if main:
            log.info("%s: resuming from step %d (epoch %d)", desc, resumed_from,
                     state["epoch"] + 1)

    def checkpoint() -> None:
        rng = distributed.gather(_rng_state(device))  # every process's, for an exact resume
        if main:
            ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng, "state": state}
            if accelerator.scaler is not None:
                ckpt["scaler"] = accelerator.scaler.state_dict()
            _save_atomic(ckpt, ckpt_path)

    patience_evals = cfg.patience * cfg.evals_per_epoch
    bar = progress_bar(enabled=progress and main, total=total_steps, initial=state["global_step"],
                       desc=desc)
    wrapped.train()
    while state["epoch"] < cfg.epochs:
        batches = training_batches(lengths, cfg.batch_size, seed, state["epoch"], cfg.length_pool)
        for step in range(state["step_in_epoch"], len(batches)):
            index, weight = shard(batches[step], rank, world)
            batch = {k: v.to(device) for k, v in to_tensors(collate(train_enc, index)).items()}
            if on_step is not None:
                on_step(state["global_step"])
            with accelerator.autocast():
                loss = loss_fn(wrapped, batch, index)
            if weight != 1.0:
                loss = loss * weight
            accelerator.backward(loss)
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            # the whole batch's mean loss (the weights above make the processes' mean equal it)
            loss_value = accelerator.reduce(loss.detach(), "mean").item() if world > 1 else loss.item()
            state["step_in_epoch"] = step + 1
            state["global_step"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)

            if step + 1 in eval_points:
                metrics = distributed.broadcast(evaluate(model, dev_enc, num_labels))
                record = {"epoch": state["epoch"] + 1, "step": state["global_step"],
                          "loss": float(loss_value), **{f"dev_{k}": v for k, v in metrics.items()}}
                state["history"].append(record)
                score = metrics[cfg.metric]
                if state["global_step"] < select_from_step:
                    pass  # not a candidate yet (e.g. pruning still under way): no best, no patience
                elif state["best"] is None or score > state["best"][cfg.metric]:
                    state["best"] = metrics
                    state["bad_evals"] = 0
                    if main:
                        _save_atomic(model.state_dict(), best_path)
                else:
                    state["bad_evals"] += 1
                best = state["best"][cfg.metric] if state["best"] else float("nan")
                bar.set_postfix(loss=f"{loss_value:.4f}", dev=f"{score:.4f}", best=f"{best:.4f}")
                if main:
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

    accelerator.wait_for_everyone()  # the main process has written best.pt
    model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
    accelerator.wait_for_everyone()  # and no process leaves while another still reads work_dir
    del wrapped
    accelerator.free_memory()  # drops the DDP wrapper and its gradient hooks
    model.to(home)
    model.eval()
    return TrainResult(best_dev=state["best"], history=state["history"],
                       steps=state["global_step"], stopped_early=state["stopped_early"],
                       resumed_from_step=resumed_from, seconds=time.perf_counter() - start,
                       processes=world)
