"""The search space as recipe stages: every candidate is a chain of ordinary stages.

A candidate's stages are named from their settings (``s3-kd-e6``, ``s3-kd-e6-p25h40f``,
``s3-kd-e6-p25h40f-int8``), and all candidates of all searches live in one candidates
folder. So two searches that share a student share its stage, its hash and its artifact:
the engine reuses it, and a killed search resumes where it stopped.

Which artifacts a target can run, and how they are made from a model, is one registry
(``TARGETS``), not a chain of ifs: adding a target is adding an entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slimbert.search.config import OptimizeConfig, PruneFractions

TEACHER = "model"  # in the candidates recipe the teacher is the base model
TRAIN = {"evals_per_epoch": 2, "patience": 2}
VARIANTS = {
    "kd": {"alpha_kd": 0.7, "alpha_ce": 0.3, "temperature": 2.0},
    # soft targets on 4 teacher-labelled augmented copies per sentence: the best 3-layer
    # recipe of the distillation ablation (docs/distill.md)
    "kd-aug": {"alpha_kd": 0.7, "alpha_ce": 0.3, "temperature": 2.0, "augment": {"copies": 4}},
}


def student_layers(teacher_layers: int, depth: float) -> list[int]:
    """Teacher layers a student of ``depth`` copies, spread uniformly (6 -> 3: 0, 2, 4)."""
    count = round(teacher_layers * depth) if depth < 1 else int(depth)
    count = max(1, min(teacher_layers - 1, count))
    return [round(i * teacher_layers / count) for i in range(count)]


def _train(cfg: OptimizeConfig, epochs: int) -> dict:
    return {"epochs": epochs, "lr": cfg.lr, "batch_size": cfg.batch_size, **TRAIN}


def distill_stage(layers: list[int], variant: str, epochs: int, cfg: OptimizeConfig) -> dict:
    # an augmented epoch holds 5x the examples: half the epochs (the ablation's kd-aug4: 3 of 6)
    epochs = max(1, epochs // 2) if "augment" in VARIANTS[variant] else epochs
    return {"name": f"s{len(layers)}-{variant}-e{epochs}", "type": "distill", "input": TEACHER,
            "layers": layers, **_train(cfg, epochs), **VARIANTS[variant]}


def prune_stage(model: str, fractions: PruneFractions, cfg: OptimizeConfig) -> dict:
    """Heads and FFN neurons removed by Taylor importance, recovered by distilling from the teacher."""
    tag = f"p{round(fractions.heads * 100)}h{round(fractions.ffn * 100)}f"
    return {"name": f"{_prefix(model)}-{tag}", "type": "prune", "input": model, "method": "structured",
            "heads_fraction": fractions.heads, "ffn_fraction": fractions.ffn, "ffn_multiple": 32,
            "importance": "taylor", "recovery": {"teacher": TEACHER, **_train(cfg, cfg.epochs)}}


def vocab_stage(model: str) -> dict:
    # only the training texts choose the vocabulary: dev stays unseen, a fair selection signal
    return {"name": f"{_prefix(model)}-v", "type": "prune", "input": model, "method": "vocab",
            "vocab_splits": ["train"]}


@dataclass(frozen=True)
class Artifact:
    """One benchable artifact of a candidate: its stage name and the stages that make it."""

    name: str
    stages: tuple[dict, ...]  # stages after the model stage (empty: the model itself)


@dataclass(frozen=True)
class TargetPlan:
    """How a target's artifacts are made from a model stage, and which runtimes bench them."""

    runtimes: tuple[str, ...]
    artifacts: Callable[[str, OptimizeConfig], list[Artifact]]
    proxy: str | None = None  # set when latency is measured on a stand-in for the device


def _prefix(model: str) -> str:
    """Names of artifacts made from ``model``: the teacher's start with "teacher"."""
    return "teacher" if model == TEACHER else model


def _repair_tolerance(cfg: OptimizeConfig) -> float:
    """Half the budget for quantization with repair; artifacts carry it in their names, so
    searches with other budgets keep their own."""
    return round(cfg.max_drop / 2, 3)


def _onnx_artifacts(model: str, cfg: OptimizeConfig) -> list[Artifact]:
    onnx = {"name": f"{_prefix(model)}-onnx", "type": "export-onnx", "input": model}
    dynamic = {"name": f"{_prefix(model)}-int8", "type": "quantize-onnx", "input": onnx["name"],
               "mode": "dynamic", "schemes": cfg.int8_schemes}
    # static INT8 with repair: the most sensitive nodes fall back until half the budget holds
    tolerance = _repair_tolerance(cfg)
    static = {"name": f"{_prefix(model)}-static-tol{tolerance:g}", "type": "quantize-onnx",
              "input": onnx["name"], "mode": "static", "per_channel": True, "calibration": "percentile",
              "tolerance": tolerance, "schemes": cfg.int8_schemes}
    return [Artifact(onnx["name"], (onnx,)), Artifact(dynamic["name"], (onnx, dynamic)),
            Artifact(static["name"], (onnx, static))]


def _ort_mobile_artifacts(model: str, cfg: OptimizeConfig) -> list[Artifact]:
    """The ORT-format file an app ships, from the fp32 and the dynamic-INT8 graph."""
    artifacts = []
    for source in _onnx_artifacts(model, cfg)[:2]:
        ort = {"name": f"{source.name}-ort", "type": "export-ort-mobile", "input": source.name}
        artifacts.append(Artifact(ort["name"], (*source.stages, ort)))
    return artifacts


def _torch_artifacts(model: str, cfg: OptimizeConfig) -> list[Artifact]:
    tolerance = _repair_tolerance(cfg)
    pt2e = {"name": f"{_prefix(model)}-pt2e-tol{tolerance:g}", "type": "quantize-torch", "input": model,
            "tolerance": tolerance}
    return [Artifact(model, ()), Artifact(pt2e["name"], (pt2e,))]


def _executorch_artifacts(model: str, cfg: OptimizeConfig) -> list[Artifact]:
    stages = [{"name": f"{_prefix(model)}-pte-{p}", "type": "export-executorch", "input": model,
               "precision": p, "max_seq_len": cfg.seq_len} for p in ("fp32", "int8")]
    return [Artifact(s["name"], (s,)) for s in stages]


def _model_only(model: str, cfg: OptimizeConfig) -> list[Artifact]:
    return [Artifact(model, ())]


_PHONE = "measured on this CPU with a phone's thread count: a proxy for the device, not the device"
TARGETS: dict[str, TargetPlan] = {
    "ort-cpu": TargetPlan(("ort-cpu",), _onnx_artifacts),
    "torch-cpu": TargetPlan(("torch-cpu", "torch-pt2e-cpu"), _torch_artifacts),
    "executorch-xnnpack": TargetPlan(("executorch-xnnpack",), _executorch_artifacts, proxy=_PHONE),
    "ort-mobile": TargetPlan(("ort-mobile",), _ort_mobile_artifacts, proxy=_PHONE),
    "torch-cuda-fp16": TargetPlan(("torch-cuda-fp16",), _model_only),
    "torch-cuda-bf16": TargetPlan(("torch-cuda-bf16",), _model_only),
    "torch-cuda-fp8": TargetPlan(("torch-cuda-fp8",), _model_only),
    "torch-cuda-graph-fp16": TargetPlan(("torch-cuda-graph-fp16",), _model_only),
}


def model_variants(model: str, cfg: OptimizeConfig, *,
                   structured: bool = True) -> list[tuple[str, list[dict]]]:
    """A model and what pruning makes of it: (model stage name, stages after the model)."""
    variants: list[tuple[str, list[dict]]] = [(model, [])]
    for fractions in cfg.prune if structured else []:
        pruned = prune_stage(model, fractions, cfg)
        variants.append((pruned["name"], [pruned]))
    if cfg.vocab:
        variants += [(vocab_stage(name)["name"], stages + [vocab_stage(name)]) for name, stages in variants]
    return variants
