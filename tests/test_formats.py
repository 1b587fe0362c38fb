"""formats: the registry of artifact kinds, detection without a manifest, and model sizes."""

import json

import pytest

from slimbert import formats
from slimbert.bench.run import BenchEntry, _size_mb
from slimbert.errors import ArtifactError
from slimbert.formats import ENGINE_FILE, ONNX_FILE, ORT_FILE, PT2_FILE, PTE_FILE, detect, model_size_bytes


def _folder(tmp_path, *files: str, sizes: dict[str, int] | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (tmp_path / name).write_bytes(b"x" * (sizes or {}).get(name, 1))
    return tmp_path


@pytest.mark.parametrize(("files", "kind"), [
    ((ENGINE_FILE, ONNX_FILE, "config.json"), "tensorrt"),  # an engine beside the graph it came from
    ((ONNX_FILE, "config.json"), "onnx"),
    ((ORT_FILE, "config.json"), "ort-mobile"),
    ((PTE_FILE, "config.json"), "executorch"),
    ((PT2_FILE, "config.json"), "pt2e"),
    (("config.json", "model.safetensors"), "hf-model"),
    (("notes.txt",), None),
])
def test_detect_without_a_manifest_follows_the_marker_files(tmp_path, files, kind):
    assert detect(_folder(tmp_path, *files)) == kind


def test_the_manifest_decides_before_the_files(tmp_path):
    folder = _folder(tmp_path, ONNX_FILE)
    (folder / "manifest.json").write_text(json.dumps({"kind": "report"}))
    assert detect(folder) == "report"


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]"])
def test_a_damaged_manifest_is_an_error_naming_the_file_not_a_traceback(tmp_path, text):
    folder = _folder(tmp_path, ONNX_FILE)
    (folder / "manifest.json").write_text(text)
    with pytest.raises(ArtifactError, match="manifest.json") as caught:
        detect(folder)
    assert "delete" in caught.value.hint


def test_a_tensorrt_folder_reports_the_engines_size_not_the_onnx_graphs(tmp_path):
    folder = _folder(tmp_path, ENGINE_FILE, ONNX_FILE, "config.json",
                     sizes={ENGINE_FILE: 3_000_000, ONNX_FILE: 7_000_000})
    assert model_size_bytes(folder, "tensorrt") == 3_000_000
    assert _size_mb(BenchEntry("trt", folder, "tensorrt")) == 3.0  # what the bench row says
    assert model_size_bytes(folder, "onnx") == 7_000_000


def test_one_suffix_list_covers_every_kind_and_the_exported_ones_are_refused_as_weights():
    assert ".engine" in formats.MODEL_FILE_SUFFIXES and ".safetensors" in formats.MODEL_FILE_SUFFIXES
    assert set(formats.EXPORTED_SUFFIXES) == {".engine", ".onnx", ".ort", ".pte", ".pt2"}
    assert set(formats.MODEL_FORMATS) <= set(formats.KINDS)
    assert formats.size_suffixes(None) == formats.MODEL_FILE_SUFFIXES
    hints = {k.name for k in formats.KINDS.values() if k.install_hint}
    assert hints == {"executorch", "tensorrt"}
