import pytest

from slimbert.artifacts import Manifest, artifact_writer, finish_artifact, read_artifact


def test_artifact_appears_only_when_complete(tmp_path):
    dest = tmp_path / "art"
    with pytest.raises(RuntimeError, match="boom"), artifact_writer(dest) as tmp:
        (tmp / "weights.bin").write_bytes(b"half")
        raise RuntimeError("boom")
    assert not dest.exists()
    assert not list(tmp_path.iterdir())  # no temporary folder left behind

    with artifact_writer(dest) as tmp:
        (tmp / "weights.bin").write_bytes(b"whole")
        finish_artifact(tmp, Manifest(kind="hf-model", stage="s", stage_type="t", inputs_hash="h"))
    art = read_artifact(dest)
    assert art.manifest.files.keys() == {"weights.bin"} and art.verify() == []
    (dest / "weights.bin").write_bytes(b"tampered")
    assert art.verify() == ["weights.bin"]


def test_replacing_an_artifact_keeps_the_old_one_until_the_new_is_whole(tmp_path):
    dest = tmp_path / "art"
    for content in (b"v1", b"v2"):
        with artifact_writer(dest) as tmp:
            (tmp / "f").write_bytes(content)
            finish_artifact(tmp, Manifest(kind="k", stage="s", stage_type="t", inputs_hash="h"))
    with pytest.raises(ValueError), artifact_writer(dest) as tmp:
        raise ValueError
    assert (dest / "f").read_bytes() == b"v2"


def test_writer_refuses_an_artifact_without_manifest(tmp_path):
    with pytest.raises(RuntimeError, match="without a manifest"), artifact_writer(tmp_path / "a") as tmp:
        (tmp / "f").write_text("x")


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_one(tmp_path):
    for stale in (".tmp-art-x1y2", ".old-art-123", ".tmp-other-z"):
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "weights.bin").write_bytes(b"half")
    with artifact_writer(tmp_path / "art") as tmp:
        finish_artifact(tmp, Manifest(kind="k", stage="s", stage_type="t", inputs_hash="h"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-other-z", "art"]  # not another stage's
