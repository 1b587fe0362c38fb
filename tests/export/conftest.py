import pytest

from slimbert.data import DatasetConfig, encode_split, load_dataset
from slimbert.export.onnx import OnnxExportConfig, export_onnx
from slimbert.models import load_tokenizer


@pytest.fixture(scope="module")
def tiny_data(sentiment_csv):
    return load_dataset(DatasetConfig(source=str(sentiment_csv)))


@pytest.fixture(scope="module")
def dev_enc(tiny_data, tiny_classifier):
    return encode_split(load_tokenizer(tiny_classifier), tiny_data.splits["dev"], 32)


@pytest.fixture(scope="module")
def train_enc(tiny_data, tiny_classifier):
    return encode_split(load_tokenizer(tiny_classifier), tiny_data.splits["train"], 32)


@pytest.fixture(scope="module")
def exported(tiny_classifier, dev_enc, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    metrics = export_onnx(tiny_classifier, out, OnnxExportConfig(), dev_enc)
    return out, metrics
