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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from slimbert import distributed
from slimbert.compress.config import MIXED_PRECISION, TrainConfig  # noqa: F401  (their old home)
from slimbert.data import EncodedSplit, classification_metrics, collate
from slimbert.data.tokenize import training_batches
from slimbert.errors import RecipeError
from slimbert.progress import progress_bar
from slimbert.runtimes.torch_runtime import predict_logits

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


Evaluator = Callable[[torch.nn.Module, EncodedSplit], dict[str, Any]]


def label_tensor(labels: np.ndarray, index: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(labels[index])


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


@torch.no_grad()
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


@dataclass
class TrainProgress:
    """Where training stands: the checkpoint's ``state`` entry (saved as this dict, plain types)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: dict[str, Any] | None = None  # dev metrics of the best weights so far
    bad_evals: int = 0  # evaluations since the best one
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class TrainState:
    """Everything one ``train`` call carries from one part to the next."""

    accelerator: Accelerator
    model: torch.nn.Module  # the bare model: evaluated, checkpointed, returned
    wrapped: torch.nn.Module | None  # what trains: the model, DDP-wrapped under a launch
    params: list[torch.nn.Parameter]  # the trainable ones (gradient clipping)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    progress: TrainProgress = field(default_factory=TrainProgress)
    resumed_from: int = 0

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def _start(model: torch.nn.Module, train_enc: EncodedSplit, cfg: TrainConfig, seed: int) -> TrainState:
    """The accelerator, the seeded dropout stream, AdamW and its warmup + linear decay schedule."""
    accelerator = make_accelerator(cfg.mixed_precision)
    # a dropout stream per process; process 0's is the plain run's
    torch.manual_seed(seed + accelerator.process_index)
    params = [p for p in model.parameters() if p.requires_grad]
    no_decay = {id(p) for n, p in model.named_parameters() if p.ndim < 2 or "LayerNorm" in n}
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if id(p) not in no_decay], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    total_steps = math.ceil(len(train_enc) / cfg.batch_size) * cfg.epochs
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
    return TrainState(accelerator, model, wrapped, params, optimizer, scheduler)


def _resume(ts: TrainState, ckpt_path: Path, desc: str) -> None:
    """Continue from the checkpoint, if there is one (every process reads the same file)."""
    if not ckpt_path.is_file():
        return
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    ts.model.load_state_dict(ckpt["model"])
    ts.optimizer.load_state_dict(ckpt["optimizer"])
    ts.scheduler.load_state_dict(ckpt["scheduler"])
    _restore_rng(ckpt["rng"], ts.accelerator.process_index, ts.accelerator.device)
    if ts.accelerator.scaler is not None and "scaler" in ckpt:
        ts.accelerator.scaler.load_state_dict(ckpt["scaler"])
    ts.progress = TrainProgress(**ckpt["state"])
    ts.resumed_from = ts.progress.global_step
    if ts.main:
        log.info("%s: resuming from step %d (epoch %d)", desc, ts.resumed_from, ts.progress.epoch + 1)


def _checkpoint(ts: TrainState, ckpt_path: Path) -> None:
    rng = distributed.gather(_rng_state(ts.accelerator.device))  # every process's, for an exact resume
    if ts.main:
        ckpt = {"model": ts.model.state_dict(), "optimizer": ts.optimizer.state_dict(),
                "scheduler": ts.scheduler.state_dict(), "rng": rng, "state": asdict(ts.progress)}
        if ts.accelerator.scaler is not None:
            ckpt["scaler"] = ts.accelerator.scaler.state_dict()
        _save_atomic(ckpt, ckpt_path)


def _step(ts: TrainState, train_enc: EncodedSplit, batch_index: np.ndarray, cfg: TrainConfig,
          loss_fn: LossFn, on_step: Callable[[int], None] | None) -> float:
    """One optimiser step on this process's rows of a global batch; the whole batch's mean loss."""
    accelerator, world = ts.accelerator, ts.accelerator.num_processes
    index, weight = shard(batch_index, accelerator.process_index, world)
    batch = {k: v.to(accelerator.device) for k, v in to_tensors(collate(train_enc, index)).items()}
    if on_step is not None:
        on_step(ts.progress.global_step)
    with accelerator.autocast():
        loss = loss_fn(ts.wrapped, batch, index)
    if weight != 1.0:
        loss = loss * weight
    accelerator.backward(loss)
    if cfg.max_grad_norm > 0:
        accelerator.clip_grad_norm_(ts.params, cfg.max_grad_norm)
    ts.optimizer.step()
    ts.scheduler.step()
    ts.optimizer.zero_grad(set_to_none=True)
    # the whole batch's mean loss (the weights in shard() make the processes' mean equal it)
    return accelerator.reduce(loss.detach(), "mean").item() if world > 1 else loss.item()


def _evaluate(ts: TrainState, dev_enc: EncodedSplit, num_labels: int, cfg: TrainConfig, loss_value: float,
              best_path: Path, select_from_step: int, bar: Any, desc: str,
              evaluator: Evaluator | None = None) -> bool:
    """Score dev, keep the best weights; whether patience has run out (stop early)."""
    state = ts.progress
    scores = evaluator(ts.model, dev_enc) if evaluator else evaluate(ts.model, dev_enc, num_labels)
    metrics = distributed.broadcast(scores)  # the main one's verdict
    state.history.append({"epoch": state.epoch + 1, "step": state.global_step, "loss": float(loss_value),
                          **{f"dev_{k}": v for k, v in metrics.items()}})
    score = metrics[cfg.metric]
    if state.global_step < select_from_step:
        pass  # not a candidate yet (e.g. pruning still under way): no best, no patience
    elif state.best is None or score > state.best[cfg.metric]:
        state.best = metrics
        state.bad_evals = 0
        if ts.main:
            _save_atomic(ts.model.state_dict(), best_path)
    else:
        state.bad_evals += 1
    best = state.best[cfg.metric] if state.best else float("nan")
    bar.set_postfix(loss=f"{loss_value:.4f}", dev=f"{score:.4f}", best=f"{best:.4f}")
    if ts.main:
        log.info("%s step %d: dev %s %.4f (best %.4f)", desc, state.global_step, cfg.metric, score, best)
    patience_evals = cfg.patience * cfg.evals_per_epoch
    return bool(patience_evals) and state.bad_evals >= patience_evals


def _finish(ts: TrainState, best_path: Path, home: torch.device) -> None:
    """Leave the best weights in the bare model, back on ``home``, unwrapped, in eval mode."""
    ts.accelerator.wait_for_everyone()  # the main process has written best.pt
    ts.model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
    ts.accelerator.wait_for_everyone()  # and no process leaves while another still reads work_dir
    ts.wrapped = None  # drop our reference: free_memory then drops the DDP wrapper and its hooks
    ts.accelerator.free_memory()
    ts.model.to(home)
    ts.model.eval()


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
    evaluator: Evaluator | None = None,
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
    ``evaluator(model, dev_enc) -> metrics`` scores dev for tasks whose outputs are not class
    logits (by default: classification metrics); ``cfg.metric`` names the key it selects on.
    """
    start = time.perf_counter()
    work_dir.mkdir(parents=True, exist_ok=True)
    home = next(model.parameters()).device
    ts = _start(model, train_enc, cfg, seed)
    ckpt_path, best_path = work_dir / CHECKPOINT, work_dir / BEST
    _resume(ts, ckpt_path, desc)
    state = ts.progress
    steps_per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
    eval_points = {
        min(steps_per_epoch, round(steps_per_epoch * (k + 1) / cfg.evals_per_epoch))
        for k in range(cfg.evals_per_epoch)
    }
    bar = progress_bar(enabled=progress and ts.main, total=steps_per_epoch * cfg.epochs,
                       initial=state.global_step, desc=desc)
    ts.wrapped.train()
    while state.epoch < cfg.epochs:
        batches = training_batches(train_enc.lengths, cfg.batch_size, seed, state.epoch, cfg.length_pool)
        for step in range(state.step_in_epoch, len(batches)):
            loss_value = _step(ts, train_enc, batches[step], cfg, loss_fn, on_step)
            state.step_in_epoch = step + 1
            state.global_step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            if step + 1 in eval_points and _evaluate(ts, dev_enc, num_labels, cfg, loss_value, best_path,
                                                     select_from_step, bar, desc, evaluator):
                state.stopped_early = True
                state.epoch = cfg.epochs  # the checkpoint must say "finished"
                _checkpoint(ts, ckpt_path)
                break
            if state.global_step % cfg.checkpoint_every == 0:
                _checkpoint(ts, ckpt_path)
        else:
            state.epoch += 1
            state.step_in_epoch = 0
            _checkpoint(ts, ckpt_path)
    bar.close()
    _finish(ts, best_path, home)
    return TrainResult(best_dev=state.best, history=state.history, steps=state.global_step,
                       stopped_early=state.stopped_early, resumed_from_step=ts.resumed_from,
                       seconds=time.perf_counter() - start, processes=ts.accelerator.num_processes)
