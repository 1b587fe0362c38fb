"""Artifact folders: model files plus a ``manifest.json`` saying what produced them.

An artifact only ever appears whole: a stage writes into a hidden temporary folder beside
the destination and renames it into place once the manifest (written last) is in it. A
crash leaves at most a ``.tmp-*`` folder that no reader mistakes for a finished artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_TRACKED_PACKAGES = (
    "slimbert",
    "torch",
    "transformers",
    "tokenizers",
    "onnx",
    "onnxruntime",
    "optimum",
    "numpy",
    "torchao",  # PT2E programs (model.pt2) load with the torch/torchao that wrote them
    "neural-compressor",
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object, stable across key order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temp file + rename, so no reader (or crash) sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


@dataclass
class Manifest:
    """What an artifact is and where it came from."""

    kind: str  # "hf-model", "onnx", "report"
    stage: str  # name of the recipe stage that made it
    stage_type: str
    inputs_hash: str  # hash of everything the stage read: config, parents, data, seed
    config: dict[str, Any] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)  # role -> parent inputs_hash
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    versions: dict[str, str] = field(default_factory=library_versions)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    format_version: int = FORMAT_VERSION

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        data = json.loads((folder / MANIFEST).read_text())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Artifact:
    """A finished artifact folder on disk."""

    path: Path
    manifest: Manifest

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def name(self) -> str:
        return self.manifest.stage

    def size_bytes(self, suffixes: tuple[str, ...] | None = None) -> int:
        """Bytes of the model files (not the manifest); optionally only some suffixes."""
        total = 0
        for rel in self.manifest.files:
            if suffixes is None or rel.endswith(suffixes):
                total += (self.path / rel).stat().st_size
        return total

    def verify(self) -> list[str]:
        """Names of files whose content no longer matches the manifest."""
        bad = []
        for rel, digest in self.manifest.files.items():
            file = self.path / rel
            if not file.is_file() or sha256_file(file) != digest:
                bad.append(rel)
        return bad


def read_artifact(folder: Path) -> Artifact | None:
    """The artifact at ``folder``, or None when there is no finished one."""
    if not (folder / MANIFEST).is_file():
        return None
    return Artifact(Path(folder), Manifest.load(folder))


def _hash_files(folder: Path) -> dict[str, str]:
    files = {}
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.name != MANIFEST:
            files[file.relative_to(folder).as_posix()] = sha256_file(file)
    return files


@contextlib.contextmanager
def artifact_writer(dest: Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``dest`` atomically.

    The caller writes the model files; ``finish_artifact`` writes the manifest. If the
    body raises, the temporary folder is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*dest.parent.glob(f".tmp-{dest.name}-*"), *dest.parent.glob(f".old-{dest.name}-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by a process killed outright (SIGKILL)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".tmp-{dest.name}-"))
    try:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError(f"artifact {dest} was written without a manifest")
        old = None
        if dest.exists():
            old = dest.parent / f".old-{dest.name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def finish_artifact(folder: Path, manifest: Manifest) -> Manifest:
    """Hash every file in ``folder`` into the manifest and write it (last)."""
    manifest.files = _hash_files(folder)
    write_json_atomic(folder / MANIFEST, manifest.to_dict())
    return manifest
