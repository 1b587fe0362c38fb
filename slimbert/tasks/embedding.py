"""The sentence-embedding task: a sentence-transformers model as one torch module.

The teacher's pooling (mean, CLS, max), dense layers, normalisation and ``max_seq_length``
are read by the sentence-transformers library from the folder's own config files
(``modules.json`` and the module folders), never assumed. A plain encoder folder without
them gets mean pooling, as ``SentenceTransformer`` gives it. ``SentenceEncoder`` runs the
backbone with the hidden states and attention maps distillation needs, then the model's
own modules after it; its export module puts all of that inside the ONNX graph, so the file
returns ``sentence_embedding`` ready to use (the peers' exports stop at token embeddings).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimbert.errors import ModelError
from slimbert.tasks import embedding_metrics as em

log = logging.getLogger(__name__)

ST_CONFIG = "modules.json"
# the graph's outputs: the pooled vector first (what sessions read), then the token vectors;
# `last_hidden_state` is the name optimum's ORTModelForFeatureExtraction (and so
# SentenceTransformer(folder, backend="onnx")) reads, the same tensor as token_embeddings
OUTPUT_NAMES = ("sentence_embedding", "token_embeddings", "last_hidden_state")


def has_sentence_transformers_config(folder: Path) -> bool:
    return (Path(folder) / ST_CONFIG).is_file()


@dataclass
class EncoderOutput:
    """What a SentenceEncoder returns: ``logits`` is the sentence embedding, so that code
    written for a classifier's output (predict, the trainer, the KD losses) reads it."""

    logits: torch.Tensor
    token_embeddings: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class SentenceEncoder(nn.Module):
    """A SentenceTransformer's backbone and its post-backbone modules (pooling, dense, normalize)."""

    def __init__(self, st_model):
        super().__init__()
        self.st = st_model
        self.backbone = st_model[0].auto_model
        self.heads = nn.ModuleList(list(st_model)[1:])
        self.config = self.backbone.config
        self.base_model = self.backbone  # where compress.student.find_layers looks

    @property
    def max_seq_length(self) -> int | None:
        return self.st.max_seq_length

    def forward(self, input_ids, attention_mask, token_type_ids=None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> EncoderOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        out = self.backbone(**inputs, output_hidden_states=output_hidden_states,
                            output_attentions=output_attentions, return_dict=True)
        features: dict[str, Any] = {**inputs, "token_embeddings": out.last_hidden_state}
        for module in self.heads:
            features = module(features)
        return EncoderOutput(features["sentence_embedding"], features["token_embeddings"],
                             out.hidden_states, out.attentions)

    def pooling(self) -> dict[str, Any]:
        """The post-backbone modules as they were read: what the plan and the manifest report."""
        return {"modules": [type(m).__name__ for m in self.heads],
                "pooling_mode": next((m.pooling_mode for m in self.heads if hasattr(m, "pooling_mode")),
                                     None),
                "normalize": any(type(m).__name__ == "Normalize" for m in self.heads),
                "max_seq_length": self.max_seq_length}

    def save_pretrained(self, folder: Path, **_: Any) -> None:
        """A sentence-transformers folder: the backbone at the root, each module in its own."""
        self.st.save(str(folder))


class ExportModule(nn.Module):
    """Positional inputs, the graph's outputs in OUTPUT_NAMES order (for torch.onnx.export)."""

    def __init__(self, encoder: SentenceEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        out = self.encoder(input_ids, attention_mask, token_type_ids)
        return out.logits, out.token_embeddings, out.token_embeddings


def load_sentence_encoder(folder: Path) -> SentenceEncoder:
    """The sentence-transformers model in ``folder`` (mean pooling for a plain encoder), on CPU."""
    from sentence_transformers import SentenceTransformer

    folder = Path(folder)
    if not has_sentence_transformers_config(folder):
        log.warning("%s has no sentence-transformers config (%s): using mean pooling, not normalised",
                    folder, ST_CONFIG)
    try:
        st_model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except Exception as exc:
        raise ModelError(f"could not load {folder} as a sentence-embedding model: "
                         f"{type(exc).__name__}: {exc}",
                         hint="give a sentence-transformers folder (modules.json and its module folders) "
                         "or a transformers encoder folder (config.json + weights + tokenizer).") from exc
    return SentenceEncoder(st_model).eval()


class EmbeddingTask:
    """The sentence-embedding task's implementation (registered as TASKS['sentence-embedding'])."""

    name = "sentence-embedding"
    output_names = OUTPUT_NAMES
    # a row's outputs are vectors, scored against a reference row's (the teacher's)
    outputs_are_labels = False

    def load_model(self, folder: Path) -> SentenceEncoder:
        return load_sentence_encoder(folder)

    def export_module(self, model: SentenceEncoder) -> nn.Module:
        return ExportModule(model)

    def example_scores(self, candidate: np.ndarray, reference: np.ndarray,
                       labels: np.ndarray | None = None, k: int = 10) -> dict[str, np.ndarray]:
        """Per-example scores of ``candidate`` embeddings against the ``reference`` (teacher) ones:
        cosine fidelity, neighbour recall@k, and kNN correctness where labels exist."""
        scores = {"cosine": em.cosine_fidelity(candidate, reference),
                  f"recall_at_{k}": em.neighbour_recall(candidate, reference, k)}
        if labels is not None:
            scores["knn_accuracy"] = em.knn_correct(candidate, labels, k)
        return scores

    def agreement(self, reference: np.ndarray, candidate: np.ndarray) -> float:
        """What agreeing with the teacher means for embeddings: the mean cosine."""
        return float(em.cosine_fidelity(candidate, reference).mean())

    dev_metric = "cosine"  # a quantize stage's tolerance: points of cosine to the fp32 embeddings

    def dev_score(self, embeddings: np.ndarray, fp32_embeddings: np.ndarray, labels: np.ndarray) -> float:
        """A quantized model's dev score: the mean cosine of its embeddings to the fp32 model's
        (labels are not needed: what INT8 must keep is the vectors)."""
        return self.agreement(fp32_embeddings, embeddings)


TASK = EmbeddingTask()
