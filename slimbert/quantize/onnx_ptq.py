"""Quantize an exported ONNX graph: dynamic INT8, static INT8 (QDQ or QOperator), FP8 QDQ.

Methods form a registry (``QUANTIZERS``): each takes the shape-annotated fp32 graph and
writes the quantized one. Around them this module does what every method shares:
calibration (streamed, cached, reused), the CPU-dependent choice of INT8 types, the
accuracy check against the fp32 source on dev examples, and, when a tolerance is set, the
sensitivity search that keeps the most damaging nodes in fp32 (``onnx_repair``).

Peers quantize the plain export because quantizing a fused graph stops on ORT's "Unable to
find data type for weight_name" (the contrib ops carry no shape inference). slimbert
annotates the fused graph with ORT's symbolic shape inference (and passes ORT's
DefaultTensorType), so it keeps both wins: fused attention/layernorm and INT8 matmuls.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimbert.data import EncodedSplit
from slimbert.errors import ExportError
from slimbert.export.onnx import copy_model_metadata, quantized_ops
from slimbert.formats import ONNX_FILE
from slimbert.hw import Int8Formats
from slimbert.progress import quiet_logger
from slimbert.quantize.calibration import calibrate, ort_method, with_inferred_shapes
from slimbert.quantize.config import OnnxQuantizeConfig
from slimbert.quantize.fallback import DevScorer, task_scorer
from slimbert.tasks import DEFAULT_TASK
from slimbert.validation import compare_logits

log = logging.getLogger(__name__)

@dataclass
class QuantJob:
    """One quantization of one graph: what a method needs besides the config."""

    source: Path  # fp32 graph with inferred shapes
    output: Path
    cfg: OnnxQuantizeConfig
    formats: Int8Formats
    calibration_cache: Path | None
    # kept in fp32: the recipe's nodes and op types (resolved once, see recipe_exclusions)
    # plus, after a repair, the nodes it chose
    exclude_nodes: list[str] = field(default_factory=list)
    # static mode: nodes quantized dynamically instead (a repair's choice, see onnx_repair.py)
    dynamic_nodes: list[str] = field(default_factory=list)
    only_nodes: list[str] | None = None  # sensitivity analysis: quantize just these

    def __post_init__(self) -> None:
        self.cfg = self.cfg.resolved()  # the methods read one format and one granularity

    def excluded(self) -> list[str]:
        return sorted(set(self.exclude_nodes))


def recipe_exclusions(source: Path, cfg: OnnxQuantizeConfig) -> list[str]:
    """Node names the recipe keeps in fp32: ``exclude_nodes`` and nodes of ``exclude_op_types``."""
    import onnx

    names = set(cfg.exclude_nodes or [])
    if cfg.exclude_op_types:
        graph = onnx.load(str(source), load_external_data=False).graph
        names |= {n.name for n in graph.node if n.op_type in cfg.exclude_op_types}
    return sorted(names)


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


def _extra_options(cfg: OnnxQuantizeConfig) -> dict[str, Any]:
    import onnx

    return {"DefaultTensorType": onnx.TensorProto.FLOAT, "ActivationSymmetric": cfg.activation_symmetric}


def _dynamic_pass(job: QuantJob, source: Path, op_types: list[str] | None,
                  nodes: list[str] | None = None) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(source), str(job.output), weight_type=_quant_type(job.formats.weight_type),
                     per_channel=job.cfg.per_channel, reduce_range=job.formats.reduce_range,
                     op_types_to_quantize=op_types, nodes_to_quantize=nodes or job.only_nodes,
                     nodes_to_exclude=job.excluded(), extra_options=_extra_options(job.cfg))


def _dynamic(job: QuantJob) -> dict[str, Any]:
    _dynamic_pass(job, job.source, job.cfg.op_types)
    return {"weight_type": job.formats.weight_type}


# In a Q/DQ graph an INT8 embedding table is dequantized whole on every run (ORT does not
# fold DequantizeLinear of a weight into a Gather): 3.6 ms per call for a 30522 x 384 table,
# more than the whole fp32 student. QOperator has QEmbedLayerNormalization and keeps them.
QDQ_SLOW_OPS = {"Gather", "EmbedLayerNormalization"}
# Bias and residual sums stay fp32, as inside the SkipLayerNormalization kernel the export no
# longer fuses (see export/onnx.py): the residual stream carries the outliers transformers
# have, and INT8 sums there cost the default student 0.4 more dev points and 3 more
# fp32-fallback matmuls under a 0.5-point tolerance, at no speed gain.
STATIC_FP32_OPS = {"Add"}


def static_op_types(cfg: OnnxQuantizeConfig) -> list[str] | None:
    """The op types static quantization covers: the recipe's, else ORT's less the fp32 ones."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if cfg.op_types is not None:
        return cfg.op_types
    if cfg.format == "qdq":
        return sorted(set(QDQRegistry) - QDQ_SLOW_OPS - STATIC_FP32_OPS)
    return sorted(set(QLinearOpsRegistry) - STATIC_FP32_OPS)


def _static(job: QuantJob) -> dict[str, Any]:
    from onnxruntime.quantization import QuantFormat, quantize_static

    quantize_static(str(job.source), str(job.output), None, calibration_cache_path=job.calibration_cache,
                    quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[job.cfg.format],
                    op_types_to_quantize=static_op_types(job.cfg), per_channel=job.cfg.per_channel,
                    reduce_range=job.formats.reduce_range,
                    activation_type=_quant_type(job.formats.activation_type),
                    weight_type=_quant_type(job.formats.weight_type), nodes_to_quantize=job.only_nodes,
                    nodes_to_exclude=job.excluded() + job.dynamic_nodes,
                    calibrate_method=ort_method(job.cfg.calibration), extra_options=_extra_options(job.cfg))
    dynamic_attention = _quantizes_attention_dynamically(job.cfg)
    if dynamic_attention or job.dynamic_nodes:
        # the second pass: ORT's static quantizer has no rule for the fused Attention op, and
        # the repair's dynamic nodes were left for it
        static_output = job.output.with_name(job.output.stem + ".static.onnx")
        job.output.rename(static_output)
        op_types, nodes = ["Attention"], None
        if job.dynamic_nodes:
            attention = _attention_nodes(static_output) if dynamic_attention else []
            op_types, nodes = ["Attention", "MatMul", "Gemm"], sorted({*job.dynamic_nodes, *attention})
        _dynamic_pass(job, static_output, op_types, nodes)
        static_output.unlink()
    return {"format": job.cfg.format, "activation_type": job.formats.activation_type,
            "weight_type": job.formats.weight_type, "attention": "dynamic" if dynamic_attention else "fp32"}


def dynamic_capable(job: QuantJob, nodes: list[str]) -> set[str]:
    """Those of ``nodes`` ORT can quantize dynamically (MatMul, Attention; not Gemm)."""
    import onnx
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    graph = onnx.load(str(job.source), load_external_data=False).graph
    return {n.name for n in graph.node if n.name in set(nodes) and n.op_type in IntegerOpsRegistry}


def _attention_nodes(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "Attention"]


def _quantizes_attention_dynamically(cfg: OnnxQuantizeConfig) -> bool:
    return (cfg.mode == "static" and cfg.attention == "dynamic"
            and (cfg.op_types is None or "Attention" in cfg.op_types))


def quantizable_nodes(job: QuantJob) -> list[str]:
    """Nodes with weights that ``job``'s method would quantize: the sensitivity analysis's units."""
    import onnx
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    cfg = job.cfg
    if cfg.mode == "fp8":
        types = {"MatMul", "Gemm", "Attention"}
    elif cfg.mode == "dynamic":
        types = set(IntegerOpsRegistry)
    else:
        types = set(static_op_types(cfg) or ())
        if _quantizes_attention_dynamically(cfg):
            types.add("Attention")
    if cfg.op_types:
        types &= set(cfg.op_types)
    graph = onnx.load(str(job.source), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    excluded = set(job.excluded())
    return [n.name for n in graph.node if n.op_type in types and n.name and n.name not in excluded
            and any(i in weights for i in n.input)]


def _fp8(job: QuantJob) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import load_tensors_data

    from slimbert.quantize.fp8_qdq import ensure_opset, insert_fp8_qdq

    ranges = {name: data.range_value for name, data in load_tensors_data(job.calibration_cache).items()}
    model = onnx.load(str(job.source))
    try:
        model = ensure_opset(model)
    except Exception as exc:
        raise ExportError(
            f"FP8 Q/DQ needs ONNX opset >= 19 and {job.source.name} could not be converted: {exc}",
            hint="export at opset 19 or later (export-onnx stage: opset: 19).",
        ) from exc
    allowed = set(job.cfg.op_types) if job.cfg.op_types else None
    excluded = set(job.excluded())
    if allowed is not None:
        excluded |= {n.name for n in model.graph.node if n.op_type not in allowed}
    if job.only_nodes is not None:
        excluded |= {n.name for n in model.graph.node if n.name not in job.only_nodes}
    report = insert_fp8_qdq(model, ranges, fmt=job.cfg.fp8_format, per_channel=job.cfg.fp8_per_channel,
                            exclude_nodes=excluded)
    onnx.save(model, str(job.output))
    return {"fp8_format": job.cfg.fp8_format, "fp8_per_channel": job.cfg.fp8_per_channel,
            **report.to_dict(), "runs_fast_on": FP8_TARGETS}


FP8_TARGETS = ("NVIDIA Ada or Hopper GPUs (compute capability 8.9+) through TensorRT 8.6+; ONNX Runtime "
               "on CPU runs the graph emulated, for the accuracy check only (slower than fp32)")

# mode -> (method, whether it needs calibrated activation ranges)
QUANTIZERS: dict[str, tuple[Callable[[QuantJob], dict[str, Any]], bool]] = {
    "dynamic": (_dynamic, False),
    "static": (_static, True),
    "fp8": (_fp8, True),
}


def run_job(job: QuantJob) -> dict[str, Any]:
    method, _ = QUANTIZERS[job.cfg.mode]
    with quiet_logger():  # ORT logs "consider pre-processing" on the root logger
        try:
            details = method(job)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(
                f"ONNX Runtime could not quantize {job.source.name} ({job.cfg.mode}): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                hint="exclude the named node or op type (exclude_nodes / exclude_op_types), "
                "or try the other format.",
            ) from exc
    cfg = job.cfg
    if cfg.mode != "fp8" and cfg.format == "qoperator" and not cfg.skip_layernorm_fusion:
        keep_add_layernorm_apart(job.output)  # every trial of a repair too: it ranks what ships
    return details


def keep_add_layernorm_apart(path: Path) -> None:
    """Rewrite ``path`` so that no ONNX Runtime fuses its Add + LayerNormalization pairs.

    ORT's SkipLayerNormFusion (on by default, at load) fuses an Add only where both inputs
    carry equal dim values or equal dim names. With the graph's dynamic dims unnamed (and
    the stored intermediate shapes dropped; ORT infers them again at load), that one fusion
    does not match and every other one fires as before: the loaded graph is the one ORT
    builds with SkipLayerNormFusion disabled. A file, not a session option, so a plain
    InferenceSession, Optimum and the deploy runner all run what the bench measured.
    """
    import onnx

    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.ClearField("dim_param")
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def quantize_onnx(src_dir: Path, out_dir: Path, cfg: OnnxQuantizeConfig, dev: EncodedSplit,
                  calibration: EncodedSplit | None = None, *, progress: bool = False,
                  task: str = DEFAULT_TASK) -> dict[str, Any]:
    """Quantize ``src_dir/model.onnx`` into ``out_dir``; report the accuracy cost on ``dev``.

    ``calibration`` (training examples) is needed by static and fp8. INT8 schemes are chosen
    by measurement on dev (quantize/schemes.py); if the chosen one loses more than the
    tolerance, the most sensitive nodes fall back until it holds (onnx_repair.py). Dev
    accuracy is scored as the graph is served: one example at a time when its activation
    scales are dynamic, since they depend on the rest of a batch. The dev score is the task's
    (``task_scorer``): accuracy for classification, cosine to the fp32 embeddings for sentence
    embeddings; the tolerance is in its points.
    """
    from slimbert.hw import cpu_name
    from slimbert.quantize.onnx_repair import repair
    from slimbert.runtimes import get_runtime

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # the Python API may name a new folder
    already = quantized_ops(src_dir / ONNX_FILE)
    if already:
        raise ExportError(
            f"{src_dir / ONNX_FILE} is already quantized (it contains {', '.join(already)}).",
            hint="quantize the fp32 export instead (point the stage's input at the export-onnx stage).",
        )
    _, needs_ranges = QUANTIZERS[cfg.mode]
    runtime = get_runtime("ort-cpu")
    schemes = None
    with tempfile.TemporaryDirectory(prefix="slimbert-quant-") as tmp:
        work = Path(tmp)
        shaped = with_inferred_shapes(src_dir / ONNX_FILE, work / "shaped.onnx")
        cache = None
        if needs_ranges:
            if calibration is None or len(calibration) == 0:
                raise ExportError(f"{cfg.mode} quantization needs calibration examples; none were given.",
                                  hint="the recipe's training split calibrates; check that it is not empty.")
            cache = calibrate(shaped, calibration.head(cfg.calibration_examples), cfg.calibration,
                              work / "calibration.json", batch_size=cfg.calibration_batch_size,
                              percentile=cfg.percentile, progress=progress)
        fp32_logits = runtime.load(src_dir).served_logits(dev)
        scorer = task_scorer(task, fp32_logits, dev.labels)
        job = QuantJob(shaped, out_dir / ONNX_FILE, cfg, cfg.int8_formats(), cache,
                       recipe_exclusions(shaped, cfg))
        if cfg.mode == "fp8":
            details = run_job(job)
        else:
            job, details, schemes = search_schemes(job, cfg, dev, fp32_logits, work, scorer,
                                                   progress=progress)
        copy_model_metadata(src_dir, out_dir)
        logits = runtime.load(out_dir).served_logits(dev)
        fallback = repair(job, dev, fp32_logits, logits, work, progress=progress, scorer=scorer)
        if fallback.get("sensitivity") is not None:
            logits = runtime.load(out_dir).served_logits(dev)
        excluded, dynamic_nodes = job.excluded(), sorted(job.dynamic_nodes)
    check = compare_logits(fp32_logits, logits)
    fp32_acc = scorer.score(fp32_logits)
    acc, drop, _ = scorer.drop_and_agreement(fp32_logits, logits)
    log.info("%s quantization: dev %s %.2f%% (fp32 %.2f%%), agreement %.2f%%", cfg.mode, scorer.metric,
             100 * acc, 100 * fp32_acc, 100 * check["agreement"])
    metrics: dict[str, Any] = {
        "mode": cfg.mode, **details, "agreement_with_source": check,
        # dev_accuracy is the task's dev score (dev_metric): accuracy, or cosine to fp32's embeddings
        "dev_metric": scorer.metric, "dev_accuracy": acc, "dev_accuracy_fp32": fp32_acc,
        "dev_drop_points": drop,
        "tolerance_points": cfg.tolerance, "tolerance_met": drop <= cfg.tolerance,
        "calibration": None,
        "excluded_nodes": excluded,
        "dynamic_nodes": dynamic_nodes,
    }
    if needs_ranges:
        metrics["calibration"] = {"method": cfg.calibration, "batch_size": cfg.calibration_batch_size,
                                  "examples": min(cfg.calibration_examples, len(calibration))}
    if cfg.mode != "fp8":
        # the CPU the scheme was measured on: bench, gate and deploy warn on another one
        metrics["int8_formats"] = job.formats.to_dict()
        metrics["per_channel"] = job.cfg.per_channel
        metrics["tuned_isa"] = job.formats.isa
        metrics["tuned_cpu"] = cpu_name()
        metrics["schemes"] = schemes
    metrics["repair"] = fallback
    return metrics


def search_schemes(job: QuantJob, cfg: OnnxQuantizeConfig, dev: EncodedSplit, fp32_logits, work: Path,
                   scorer: DevScorer, *,
                   progress: bool = False) -> tuple[QuantJob, dict[str, Any], dict[str, Any]]:
    """Quantize ``job`` with every scheme ``cfg`` leaves open, keep the fastest within the tolerance.

    Each candidate is written and scored on dev as served; those within the tolerance (all
    of them when none is) are timed at batch 1 on the longest dev example, interleaved. The
    chosen graph is copied to ``job.output``; returns its job, the method's details and
    the record of every try.
    """
    import shutil

    from slimbert.data import collate
    from slimbert.progress import progress_bar
    from slimbert.quantize.schemes import (
        SchemeTrial,
        candidate_schemes,
        choose_scheme,
        interleaved_batch_1,
    )
    from slimbert.runtimes import get_runtime

    runtime = get_runtime("ort-cpu")
    table = job.formats
    trials, jobs, sessions, details = [], {}, {}, {}
    for scheme in progress_bar(candidate_schemes(cfg), enabled=progress, desc="INT8 schemes", leave=False):
        folder = work / "schemes" / scheme.name
        folder.mkdir(parents=True)
        trial_job = dataclasses.replace(job, output=folder / ONNX_FILE, cfg=scheme.config(cfg),
                                        formats=scheme.formats(table))
        details[scheme.name] = run_job(trial_job)
        session = runtime.load(folder)
        served = session.served_logits(dev)
        trials.append(SchemeTrial(scheme, *scorer.drop_and_agreement(fp32_logits, served)))
        jobs[scheme.name], sessions[scheme.name] = trial_job, session
    holding = [t for t in trials if t.dev_drop_points <= cfg.tolerance] or trials
    longest = collate(dev, [int(dev.lengths.argmax())])
    if len(trials) > 1:
        p50 = interleaved_batch_1({t.scheme.name: sessions[t.scheme.name] for t in holding}, longest,
                                  rounds=cfg.scheme_timing_rounds)
        for trial in holding:
            trial.p50_ms = p50[trial.scheme.name]
    best, why = choose_scheme(trials, cfg.tolerance)
    for trial in trials:
        log.debug("INT8 scheme %s: dev drop %.2f, agreement %.2f%%, p50 %s ms", trial.scheme.name,
                  trial.dev_drop_points, 100 * trial.agreement, trial.p50_ms)
    if len(trials) > 1:
        log.info("INT8 scheme %s: %s; dev drop %.2f points (%d tried)", best.scheme.name, why,
                 best.dev_drop_points, len(trials))
    chosen = dataclasses.replace(jobs[best.scheme.name], output=job.output)
    shutil.copyfile(jobs[best.scheme.name].output, job.output)
    record = {"chosen": best.scheme.name, "why": why, "tolerance_points": cfg.tolerance,
              "timed_tokens": int(longest["input_ids"].shape[1]), "timing_rounds": cfg.scheme_timing_rounds,
              "tried": [t.to_dict() for t in trials]}
    return chosen, details[best.scheme.name], record
