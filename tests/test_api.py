"""The Python API: every step is importable from `slimbert`, and step functions make their folders."""

from pathlib import Path

import slimbert


def test_every_api_name_resolves_and_is_listed():
    for name in slimbert.__all__:
        assert getattr(slimbert, name) is not None
    assert {"run_recipe", "plan_recipe", "prune", "quantize_torch", "export_ort_mobile"} <= set(dir(slimbert))


def test_export_then_quantize_into_new_folders(tiny_classifier, sentiment_csv, tmp_path):
    """The README's step-by-step snippet, on a tiny model."""
    data = slimbert.load_dataset(slimbert.DatasetConfig(source=str(sentiment_csv), max_length=32,
                                                        split={"dev": 0.25, "test": 0.2}))
    assert len(data.splits["dev"]) == 100
    dev = slimbert.encode_split(slimbert.load_tokenizer(tiny_classifier), data.splits["dev"], 32)
    onnx, int8 = tmp_path / "new" / "onnx", tmp_path / "new" / "int8"
    slimbert.export_onnx(Path(tiny_classifier), onnx, slimbert.OnnxExportConfig(), dev)
    metrics = slimbert.quantize_onnx(onnx, int8, slimbert.OnnxQuantizeConfig(), dev)
    assert (int8 / "model.onnx").is_file() and metrics["mode"] == "dynamic"
