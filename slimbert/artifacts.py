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

from slimbert.errors import ArtifactError

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
    "executorch",
    "tensorrt",
)
# The libraries whose versions decide what an artifact of each kind holds: a stage is rerun
# when one of those of its input and output kinds (and slimbert's own) changed since it ran.
# A report measures every runtime, so it depends on all of them.
KIND_LIBRARIES: dict[str, tuple[str, ...]] = {
    "hf-model": ("torch", "transformers", "tokenizers"),
    "onnx": ("onnx", "onnxruntime"),
    "ort-mobile": ("onnx", "onnxruntime"),
    "executorch": ("torch", "executorch"),
    "tensorrt": ("onnx", "tensorrt"),
    "pt2e": ("torch", "torchao", "neural-compressor"),
}
KIND_LIBRARIES["report"] = tuple(dict.fromkeys(lib for libs in KIND_LIBRARIES.values() for lib in libs))


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


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that shape artifacts; None for one that is not installed.

    Recording the absent ones too lets a later run tell "installed since" from "never
    tracked" (a manifest written before a library was tracked lacks its key).
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def version_changes(recorded: dict[str, str | None], libraries: tuple[str, ...]) -> list[str]:
    """``libraries`` whose version today differs from ``recorded``, e.g. "onnxruntime 1.17.0 -> 1.18.0".

    A library the manifest does not mention is not compared: it predates its tracking.
    """
    now = library_versions()
    return [f"{lib} {recorded[lib] or 'not installed'} -> {now.get(lib) or 'not installed'}"
            for lib in libraries if lib in recorded and recorded[lib] != now.get(lib)]


def _fsync(path: Path, *, folder: bool = False) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    except OSError:  # Windows cannot open a folder; its renames are journaled anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (and itself): before it is renamed into place."""
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync(Path(root) / name)
        _fsync(Path(root), folder=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temp file + rename, so no reader (or crash) sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync(path.parent, folder=True)  # the rename itself
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
        """The manifest in ``folder``; an ArtifactError naming the file if it is damaged."""
        data = manifest_fields(folder)
        known = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:  # a field it must have is missing
            raise _damaged_manifest(Path(folder), exc) from None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def manifest_fields(folder: Path) -> dict[str, Any]:
    """The fields of ``folder``'s manifest as stored, for readers that need one of them (its
    kind) without the whole record; an ArtifactError naming the file if it is damaged."""
    folder = Path(folder)
    try:
        data = json.loads((folder / MANIFEST).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged_manifest(folder, exc) from None
    if not isinstance(data, dict):
        raise _damaged_manifest(folder, ValueError(f"a JSON {type(data).__name__}, not an object"))
    return data


def _damaged_manifest(folder: Path, exc: Exception) -> ArtifactError:
    path = folder / MANIFEST
    empty = path.is_file() and path.stat().st_size == 0
    what = "is empty (0 bytes)" if empty else f"is not a valid manifest ({type(exc).__name__}: {exc})"
    return ArtifactError(
        f"{path} {what}: the artifact folder {folder} is damaged (a power cut or an "
        "interrupted copy; slimbert writes manifests atomically).",
        hint=f"delete {folder} and rerun its stage (`slimbert run` rebuilds a stage whose "
        "manifest is damaged).",
    )


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
        fsync_tree(tmp)  # the files must be on disk before the rename that makes them visible
        old = None
        if dest.exists():
            old = dest.parent / f".old-{dest.name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
        _fsync(dest.parent, folder=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def finish_artifact(folder: Path, manifest: Manifest) -> Manifest:
    """Hash every file in ``folder`` into the manifest and write it (last)."""
    manifest.files = _hash_files(folder)
    write_json_atomic(folder / MANIFEST, manifest.to_dict())
    return manifest
