import os

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


def _finished(dest):
    with artifact_writer(dest) as tmp:
        (tmp / "weights.bin").write_bytes(b"whole")
        finish_artifact(tmp, Manifest(kind="hf-model", stage="s", stage_type="t", inputs_hash="h"))
    return dest


@pytest.mark.parametrize(("content", "fragment"), [(b"", "is empty (0 bytes)"),
                                                   (b'{"kind": "hf-mo', "is not a valid manifest"),
                                                   (b"\xff\xfe\x00", "is not a valid manifest"),
                                                   (b"[1, 2]", "is not a valid manifest"),
                                                   (b'{"kind": "onnx"}', "is not a valid manifest")])
def test_a_damaged_manifest_is_a_clean_error_naming_the_file(tmp_path, content, fragment):
    """A power cut used to leave a 0-byte manifest.json that raised a raw JSONDecodeError."""
    from slimbert.errors import ArtifactError

    dest = _finished(tmp_path / "art")
    (dest / "manifest.json").write_bytes(content)
    with pytest.raises(ArtifactError) as err:
        read_artifact(dest)
    assert str(dest / "manifest.json") in err.value.message and fragment in err.value.message
    assert "delete" in err.value.hint and str(dest) in err.value.hint


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="maps fds to paths through /proc")
def test_files_and_folders_are_fsynced_before_the_renames_that_publish_them(tmp_path, monkeypatch):
    import slimbert.artifacts as artifacts

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(artifacts.os, "fsync", fsync)
    monkeypatch.setattr(artifacts.os, "replace", replace)
    dest = _finished(tmp_path / "art")
    publish = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(dest))
    tmp = events[publish][1]
    synced_before = {e[1] for e in events[:publish] if e[0] == "fsync"}
    assert {f"{tmp}/weights.bin", f"{tmp}/manifest.json", tmp} <= synced_before
    assert ("fsync", str(tmp_path)) in events[publish:]  # the rename itself

    events.clear()
    artifacts.write_json_atomic(tmp_path / "x.json", {"a": 1})
    (_, written), (_, src, dst), (_, folder) = events
    assert written == src and dst == str(tmp_path / "x.json") and folder == str(tmp_path)


def test_version_changes_name_only_the_libraries_asked_about_and_recorded(monkeypatch):
    import slimbert.artifacts as artifacts

    monkeypatch.setattr(artifacts, "library_versions",
                        lambda: {"torch": "2.0", "onnxruntime": "1.18.0", "executorch": None})
    recorded = {"torch": "2.0", "onnxruntime": "1.17.0", "executorch": "1.0"}  # no tensorrt: untracked then
    assert artifacts.version_changes(recorded, ("torch", "onnxruntime", "executorch", "tensorrt")) == [
        "onnxruntime 1.17.0 -> 1.18.0", "executorch 1.0 -> not installed"]
    assert artifacts.version_changes(recorded, ("torch",)) == []
