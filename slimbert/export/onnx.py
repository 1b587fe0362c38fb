"""Export a classifier to ONNX, fuse it for ONNX Runtime, and prove it matches PyTorch.

The exported folder is Hugging Face compatible: ``model.onnx`` beside ``config.json``
and the tokenizer, which is what optimum's ORTModelForSequenceClassification loads.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimbert.errors import ExportError
from slimbert.export.config import OnnxExportConfig
from slimbert.formats import ONNX_FILE
from slimbert.tasks import DEFAULT_TASK, get_task
from slimbert.validation import compare_logits

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spm.model")
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json",
                               "config_sentence_transformers.json")
# the op types of a quantized graph (``quantized_ops``: ort-mobile's check, the quantizer's refusal)
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearMatMul",
             "MatMulInteger", "QAttention", "DynamicQuantizeMatMul", "QGemm", "QLinearAdd"}
# ORT's transformer optimizer knows these encoder graph shapes; others export unfused.
_ORT_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert",
                    "camembert": "bert", "distilbert": "bert", "mpnet": "bert"}


def copy_model_metadata(src: Path, dest: Path) -> None:
    """config.json and tokenizer files: what runtimes and HF loaders need beside a graph.

    A sentence-transformers model's config files and module folders (pooling, dense,
    normalize) come along too, so that ``SentenceTransformer(dest, backend="onnx")`` opens it.
    """
    for name in ("config.json", *TOKENIZER_FILES, *SENTENCE_TRANSFORMERS_FILES):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    if (src / "modules.json").is_file():
        for module in json.loads((src / "modules.json").read_text(encoding="utf-8")):
            path = module.get("path") or ""
            if path and (src / path).is_dir():
                shutil.copytree(src / path, dest / path, dirs_exist_ok=True)


def _example_inputs(names: tuple[str, ...], vocab_size: int) -> dict[str, torch.Tensor]:
    import torch  # here, not at the top: quantize-onnx's config is parsed without torch

    ids = torch.randint(vocab_size // 4, vocab_size, (2, 16), dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "token_type_ids" in names:
        inputs["token_type_ids"] = torch.zeros_like(ids)
    return inputs


def torch_export(model, names: tuple[str, ...], path: Path, cfg: OnnxExportConfig,
                 output_names: tuple[str, ...] = ("logits",), vocab_size: int | None = None) -> None:
    """``model`` to ONNX at ``path``: batch and sequence dynamic; outputs named ``output_names``
    (a task's; outputs after the first keep a dynamic sequence axis: token-level tensors)."""
    import torch

    inputs = _example_inputs(names, vocab_size or model.config.vocab_size)
    args = tuple(inputs[n] for n in names)
    kwargs = dict(input_names=list(names), output_names=list(output_names), opset_version=cfg.opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cfg.exporter == "dynamo":
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
            shapes = {n: {0: batch, 1: seq} for n in names}
            torch.onnx.export(model, args, str(path), dynamo=True, dynamic_shapes=shapes,
                              external_data=False, **kwargs)
        else:
            axes = {n: {0: "batch", 1: "sequence"} for n in names} | {output_names[0]: {0: "batch"}}
            axes |= {n: {0: "batch", 1: "sequence"} for n in output_names[1:]}
            torch.onnx.export(model, args, str(path), dynamo=False, dynamic_axes=axes,
                              do_constant_folding=True, **kwargs)


def fuse_for_ort(path: Path, config) -> dict[str, int]:
    """Apply ORT's transformer fusions in place; returns the fused-operator counts."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = _ORT_MODEL_TYPES.get(config.model_type)
    if model_type is None:
        log.warning("no ORT fusion rules for model type %r; keeping the graph unfused",
                    config.model_type)
        return {}
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
    options = FusionOptions(model_type)
    # ORT's CPU SkipLayerNormalization kernel is slower than Add + LayerNormalization (see
    # runtimes/onnxruntime_runtime.py); GPU providers fuse it again when they load the graph
    options.enable_skip_layer_norm = False
    optimized = optimize_model(str(path), model_type=model_type, num_heads=heads, hidden_size=hidden,
                               optimization_options=options)
    counts = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(path))
    return counts


def quantized_ops(path: Path) -> list[str]:
    """The quantization op types in the ONNX graph at ``path`` (empty for a float graph)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sorted({n.op_type for n in graph.node if n.op_type in QUANT_OPS})


def export_onnx(model_dir: Path, out_dir: Path, cfg: OnnxExportConfig, validation,
                task: str = DEFAULT_TASK) -> dict[str, Any]:
    """Export the ``task`` model in ``model_dir`` to ``out_dir/model.onnx``.

    The graph returns the task's outputs (a classifier's logits; an embedding model's pooled,
    normalised ``sentence_embedding`` first). ``validation`` is an EncodedSplit of real
    examples; the export fails with an ExportError if ONNX Runtime's first output on them
    differs from PyTorch's by more than atol.
    """
    from slimbert.runtimes import get_runtime
    from slimbert.runtimes.torch_runtime import predict_logits

    impl = get_task(task).load()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # the Python API may name a new folder
    model = impl.load_model(model_dir).eval()
    path = out_dir / ONNX_FILE
    try:
        torch_export(impl.export_module(model), validation.input_names, path, cfg, impl.output_names,
                     model.config.vocab_size)
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export ({cfg.exporter}) failed for {model_dir}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint="try the other exporter (exporter: dynamo / torchscript) or another opset.",
        ) from exc
    fusions = fuse_for_ort(path, model.config) if cfg.optimize else {}
    copy_model_metadata(model_dir, out_dir)

    subset = validation.head(cfg.validate_examples)
    reference = predict_logits(model, subset)
    session = get_runtime("ort-cpu").load(out_dir)
    candidate = session.predict(subset)
    check = compare_logits(reference, candidate)
    if check["max_abs_diff"] > cfg.atol:
        raise ExportError(
            f"the ONNX export of {model_dir} disagrees with PyTorch: max |{impl.output_names[0]} diff| "
            f"{check['max_abs_diff']:.2e} > atol {cfg.atol:g} "
            f"(prediction agreement {check['agreement']:.2%}).",
            hint="export without fusion (optimize: false) to see whether a fusion caused "
            "it, or try the other exporter.",
        )
    log.info("ONNX export validated on %d examples: %s", len(subset), check)
    return {"validation": {**check, "examples": len(subset)}, "fusions": fusions,
            "opset": cfg.opset, "exporter": cfg.exporter}

