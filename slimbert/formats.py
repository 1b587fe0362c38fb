"""Artifact kinds: which files make each kind, which count as its size, how to get its runtime.

One registry instead of file-name constants scattered over the exporters (that the runtimes
then imported back) and two suffix lists that drifted apart. A leaf: it imports only
``artifacts`` (the manifest's name), so export/, runtimes/, bench/ and the engine can all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slimbert.artifacts import MANIFEST, manifest_fields

HF_CONFIG_FILE = "config.json"
ONNX_FILE = "model.onnx"
ORT_FILE = "model.ort"
PTE_FILE = "model.pte"
EXECUTORCH_META_FILE = "executorch.json"
PT2_FILE = "model.pt2"
PT2_META_FILE = "pt2e.json"
ENGINE_FILE = "model.engine"
TENSORRT_BUILD_SCRIPT = "build_engine.sh"

EXECUTORCH_HINT = "install the mobile extra: pip install -e '.[mobile]' (executorch==1.5.1)."
TENSORRT_HINT = ("the PyPI 'tensorrt' package downloads from NVIDIA's index; install it on the GPU "
                 "machine, or run build_engine.sh there")


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of artifact folder.

    ``marker``: the file whose presence says a folder (without a manifest) is of this kind.
    ``size_suffixes``: the files that are the model itself, the size a report gives (not the
    config, the tokenizer or a source graph kept beside an engine). ``install_hint``: how to
    get what runs it, where that is an optional extra.
    """

    name: str
    marker: str | None
    size_suffixes: tuple[str, ...]
    exported: bool = True  # made from a PyTorch model, not one
    install_hint: str | None = None


# in detection order: a TensorRT folder also holds the ONNX graph it was built from
KINDS: dict[str, ArtifactKind] = {k.name: k for k in (
    ArtifactKind("tensorrt", ENGINE_FILE, (".engine",), install_hint=TENSORRT_HINT),
    ArtifactKind("onnx", ONNX_FILE, (".onnx", ".onnx.data")),
    ArtifactKind("ort-mobile", ORT_FILE, (".ort",)),
    ArtifactKind("executorch", PTE_FILE, (".pte",), install_hint=EXECUTORCH_HINT),
    ArtifactKind("pt2e", PT2_FILE, (".pt2",)),
    ArtifactKind("hf-model", HF_CONFIG_FILE, (".safetensors", ".bin"), exported=False),
    ArtifactKind("report", None, (), exported=False),
)}

MODEL_FORMATS: tuple[str, ...] = ("hf-model", "onnx", "ort-mobile", "executorch", "tensorrt", "pt2e")
# every model file of every kind: the size of a folder whose kind is unknown
MODEL_FILE_SUFFIXES: tuple[str, ...] = tuple(dict.fromkeys(s for k in KINDS.values()
                                                           for s in k.size_suffixes))
# files made from a model, not a PyTorch model: a step that needs weights refuses them by name
EXPORTED_SUFFIXES: tuple[str, ...] = tuple(Path(k.marker).suffix for k in KINDS.values()
                                           if k.exported and k.marker)


def detect(folder: Path) -> str | None:
    """Kind of an artifact folder: its manifest's, else the first kind whose marker file it has
    (a user's own export has no manifest); None when nothing matches. A damaged manifest is
    an ArtifactError naming the file, as everywhere a manifest is read."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return manifest_fields(folder).get("kind")
    for kind in KINDS.values():
        if kind.marker and (folder / kind.marker).is_file():
            return kind.name
    return None


def size_suffixes(kind: str | None) -> tuple[str, ...]:
    """The suffixes of ``kind``'s model files; every model suffix for an unknown kind."""
    known = KINDS.get(kind) if kind else None
    return known.size_suffixes if known else MODEL_FILE_SUFFIXES


def model_size_bytes(folder: Path, kind: str | None) -> int:
    """Bytes of the files that are the model itself (what bench and the stage headlines report)."""
    suffixes = size_suffixes(kind)
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file() and f.name.endswith(suffixes))


def onnx_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable ONNX model (None when it is): a model.onnx that holds
    something else must be named as such, not surface later as a tokenizer or runtime error."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        return f"{path} does not exist"
    if path.stat().st_size == 0:
        return f"{path} is empty (0 bytes)"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"{path} is not an ONNX file ({type(exc).__name__}: {first})"
    if not model.graph.node:
        return f"{path} is not an ONNX model: it parses, but holds no graph"
    return None
