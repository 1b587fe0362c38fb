import pytest

from slimbert.errors import ModelError
from slimbert.models import (
    has_classification_head,
    load_classifier,
    model_fingerprint,
    resolve_model,
)
from tests.conftest import build_tiny_bert


def test_local_folder_resolves_and_loads_with_new_labels(tiny_encoder):
    assert resolve_model(str(tiny_encoder)) == tiny_encoder
    assert not has_classification_head(tiny_encoder)
    model = load_classifier(tiny_encoder, ["a", "b", "c"])
    assert model.config.num_labels == 3 and model.config.id2label[2] == "c"


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "no-such-model"))


def test_folder_that_is_not_a_transformers_model(tmp_path):
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "random"))


def test_truncated_weights_name_the_file(tmp_path):
    folder = build_tiny_bert(tmp_path / "broken", num_labels=2)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError) as err:
        load_classifier(folder)
    assert "model.safetensors" in err.value.message and "truncated" in err.value.hint


def test_corrupt_config(tmp_path):
    folder = build_tiny_bert(tmp_path / "badcfg", num_labels=2)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json"):
        load_classifier(folder)


def test_offline_hub_id_not_in_cache():
    with pytest.raises(ModelError) as err:
        resolve_model("some-org/uncached-model")
    assert "offline" in err.value.message and "not in the Hugging Face cache" in err.value.message


def test_fingerprint_follows_content(tmp_path):
    a = build_tiny_bert(tmp_path / "a", num_labels=2, seed=0)
    b = build_tiny_bert(tmp_path / "b", num_labels=2, seed=0)
    c = build_tiny_bert(tmp_path / "c", num_labels=2, seed=1)
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(c)
