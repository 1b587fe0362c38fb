import numpy as np
import pytest

from slimbert.errors import ExportError
from slimbert.export.onnx import OnnxExportConfig, export_onnx
from slimbert.formats import ONNX_FILE
from slimbert.models import load_classifier
from slimbert.quantize.config import OnnxQuantizeConfig
from slimbert.quantize.onnx_ptq import quantize_onnx
from slimbert.runtimes import get_runtime


def test_export_is_fused_validated_and_dynamic(exported, tiny_classifier):
    out, metrics = exported
    assert metrics["validation"]["max_abs_diff"] < 1e-4 and metrics["validation"]["agreement"] == 1.0
    # attention fused; residual + LayerNormalization not (ORT's CPU SkipLayerNormalization is slower)
    assert metrics["fusions"].get("Attention") == 4 and metrics["fusions"].get("LayerNormalization")
    assert not metrics["fusions"].get("SkipLayerNormalization")
    assert {"config.json", "vocab.txt", ONNX_FILE} <= {p.name for p in out.iterdir()}
    session = get_runtime("ort-cpu").load(out)
    ids = np.full((3, 11), 7, dtype=np.int64)  # shapes unseen at export time
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    assert session.run(batch).shape == (3, 2)


def test_dynamo_exporter_unfused_also_validates(tiny_classifier, dev_enc, tmp_path):
    metrics = export_onnx(tiny_classifier, tmp_path, OnnxExportConfig(exporter="dynamo", optimize=False,
                                                                      opset=18), dev_enc)
    assert metrics["validation"]["agreement"] == 1.0 and metrics["fusions"] == {}


def test_disagreement_with_pytorch_fails_the_export(tiny_classifier, dev_enc, tmp_path):
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_onnx(tiny_classifier, tmp_path, OnnxExportConfig(atol=1e-12), dev_enc)


def test_optimum_loads_the_onnx_folder(exported):
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification

    out, _ = exported
    model = ORTModelForSequenceClassification.from_pretrained(out)
    ids = torch.tensor([[2, 10, 11, 3]])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                   token_type_ids=torch.zeros_like(ids)).logits
    assert logits.shape == (1, 2)


def test_dynamic_int8_of_the_fused_graph(exported, dev_enc, tmp_path):
    src, _ = exported
    metrics = quantize_onnx(src, tmp_path, OnnxQuantizeConfig(), dev_enc)
    assert metrics["agreement_with_source"]["agreement"] >= 0.95
    assert (tmp_path / ONNX_FILE).stat().st_size < 0.6 * (src / ONNX_FILE).stat().st_size
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / ONNX_FILE)).graph.node}
    assert ops & {"QAttention", "DynamicQuantizeMatMul", "MatMulInteger"}


def test_corrupt_onnx_file_is_a_clear_error(exported, tmp_path):
    src, _ = exported
    (tmp_path / ONNX_FILE).write_bytes((src / ONNX_FILE).read_bytes()[:1000])
    with pytest.raises(ExportError, match="cannot load"):
        get_runtime("ort-cpu").load(tmp_path)


def test_pytorch_logits_match_runtime(exported, tiny_classifier, dev_enc):
    from slimbert.runtimes.torch_runtime import predict_logits

    out, _ = exported
    torch_logits = predict_logits(load_classifier(tiny_classifier), dev_enc)
    ort_logits = get_runtime("ort-cpu").load(out).predict(dev_enc)
    np.testing.assert_allclose(torch_logits, ort_logits, atol=1e-4)


def _tiny_other_architecture(arch: str, folder, bert_folder):
    """A RoBERTa or DistilBERT classifier sharing the tiny BERT's WordPiece vocabulary."""
    import torch
    from transformers import (
        BertTokenizerFast,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        DistilBertTokenizerFast,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    tokenizer = BertTokenizerFast.from_pretrained(bert_folder)
    torch.manual_seed(0)
    if arch == "roberta":
        config = RobertaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, max_position_embeddings=66,
                               pad_token_id=tokenizer.pad_token_id, num_labels=2)
        model = RobertaForSequenceClassification(config)
    else:
        config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=4,
                                  hidden_dim=64, max_position_embeddings=64,
                                  pad_token_id=tokenizer.pad_token_id, num_labels=2)
        model = DistilBertForSequenceClassification(config)
        # DistilBERT's own tokenizer class: same WordPiece, no token types
        tokenizer = DistilBertTokenizerFast(vocab_file=str(bert_folder / "vocab.txt"), do_lower_case=True)
    with torch.no_grad():  # perturb: random-init biases are all zero
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("arch", ["roberta", "distilbert"])
def test_other_architectures_export_fused_and_validated(arch, tiny_classifier, tiny_data, tmp_path):
    from slimbert.data import encode_split
    from slimbert.models import load_tokenizer

    folder = _tiny_other_architecture(arch, tmp_path / arch, tiny_classifier)
    enc = encode_split(load_tokenizer(folder), tiny_data.splits["dev"], 32)
    (tmp_path / "onnx").mkdir()
    metrics = export_onnx(folder, tmp_path / "onnx", OnnxExportConfig(), enc)
    assert metrics["validation"]["agreement"] == 1.0 and metrics["validation"]["max_abs_diff"] < 1e-3
    assert metrics["fusions"].get("Attention") == 2, metrics["fusions"]
    names = {i.name for i in get_runtime("ort-cpu").load(tmp_path / "onnx").session.get_inputs()}
    assert ("token_type_ids" in names) == (arch == "roberta")


def test_transformers_pipeline_loads_the_pytorch_artifact(tiny_classifier):
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(tiny_classifier), device="cpu")
    out = classify(["the movie was great", "a dull plot"])
    assert [o["label"] for o in out] and {o["label"] for o in out} <= {"neg", "pos"}
