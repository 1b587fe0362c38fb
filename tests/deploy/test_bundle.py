import json
import shutil

import pytest

from slimbert.artifacts import Manifest, finish_artifact, sha256_file
from slimbert.deploy.bundle import BUNDLE_FILE, bundle_id_of, make_bundle
from slimbert.errors import DeployError


def test_bundle_lists_every_file_with_its_hash(onnx_artifact, tmp_path):
    bundle = make_bundle(onnx_artifact, tmp_path)
    info = json.loads((bundle / BUNDLE_FILE).read_text())
    names = {p.name for p in bundle.iterdir()} - {BUNDLE_FILE}
    assert {"model.onnx", "config.json", "tokenizer.json", "runner.py"} <= names
    assert set(info["files"]) == names
    assert all(sha256_file(bundle / n) == digest for n, digest in info["files"].items())
    assert info["bundle_id"] == bundle_id_of(info["files"]) == bundle.name and len(bundle.name) == 16
    assert info["labels"] == ["neg", "pos"] and info["source"] == str(onnx_artifact)
    assert [p.name for p in tmp_path.iterdir()] == [bundle.name]  # no temporary folder left


def test_same_content_same_id_other_content_other_id(onnx_artifact, other_artifact, tmp_path):
    first = make_bundle(onnx_artifact, tmp_path / "a")
    assert make_bundle(onnx_artifact, tmp_path / "b").name == first.name
    assert make_bundle(onnx_artifact, tmp_path / "a") == first  # rebuilt in place
    assert make_bundle(other_artifact, tmp_path / "a").name != first.name


def test_refuses_a_pytorch_folder(tiny_classifier, tmp_path):
    with pytest.raises(DeployError, match="not an ONNX, ORT or ExecuTorch artifact") as exc:
        make_bundle(tiny_classifier, tmp_path / "out")
    assert "slimbert export" in exc.value.hint
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_refuses_a_folder_without_tokenizer_json(onnx_artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(onnx_artifact, art)
    (art / "tokenizer.json").unlink()
    with pytest.raises(DeployError, match="no tokenizer.json"):
        make_bundle(art, tmp_path / "out")


def test_refuses_an_artifact_changed_since_its_manifest(onnx_artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(onnx_artifact, art)
    finish_artifact(art, Manifest(kind="onnx", stage="student-onnx", stage_type="export-onnx",
                                  inputs_hash="abc"))
    info = json.loads((make_bundle(art, tmp_path / "ok") / BUNDLE_FILE).read_text())
    assert info["artifact"] == "student-onnx" and info["source_inputs_hash"] == "abc"
    with open(art / "model.onnx", "ab") as fh:
        fh.write(b"junk")
    with pytest.raises(DeployError, match="model.onnx changed"):
        make_bundle(art, tmp_path / "out")


def test_refuses_a_report_artifact(tmp_path):
    art = tmp_path / "bench"
    art.mkdir()
    (art / "report.json").write_text("{}")
    finish_artifact(art, Manifest(kind="report", stage="bench", stage_type="bench", inputs_hash="x"))
    with pytest.raises(DeployError, match="a report artifact"):
        make_bundle(art, tmp_path / "out")
