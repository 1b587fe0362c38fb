"""Find and load BERT-family models: built-in asset names, local folders, hub ids.

Loading goes through transformers' Auto classes so any encoder with a sequence
classification head works; every failure is turned into a ModelError that names the
folder or file and says what to do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from slimbert.artifacts import read_artifact, sha256_file, sha256_json
from slimbert.errors import ModelError
from slimbert.formats import EXPORTED_SUFFIXES, MODEL_FILE_SUFFIXES, ONNX_FILE, onnx_file_problem

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "model.safetensors", "model-*.safetensors"]


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or os.sep in source.strip("/").split("/", 1)[-1]


def resolve_model(source: str, base: Path | None = None) -> Path:
    """Local folder holding the model named by ``source``.

    Order: a built-in asset name, an existing folder, then a Hugging Face hub id (taken
    from the hub cache when offline).
    """
    from slimbert.assets import ASSETS, fetch_asset

    if source in ASSETS:
        if ASSETS[source].kind != "model":
            raise ModelError(f"built-in asset {source!r} is a dataset, not a model.")
        return fetch_asset(source)
    base = base or Path.cwd()
    candidate = Path(source).expanduser()
    candidate = candidate if candidate.is_absolute() else base / candidate
    if candidate.exists():
        check_model_folder(candidate)
        return candidate
    if _looks_like_path(source) or source.count("/") > 1:
        raise ModelError(
            f"model folder {candidate} does not exist.",
            hint="give an existing folder with config.json and weights, a hub id such "
            "as 'bert-base-uncased', or a built-in name (`slimbert assets list`).",
        )
    return _download_from_hub(source)


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=offline))
        if not any((path / f).exists() for f in WEIGHT_FILES) and not list(path.glob("*.safetensors")):
            path = Path(
                snapshot_download(
                    repo_id,
                    allow_patterns=_HUB_PATTERNS + ["pytorch_model.bin"],
                    local_files_only=offline,
                )
            )
    except LocalEntryNotFoundError as exc:
        raise ModelError(
            f"model {repo_id!r} is not a local folder or built-in asset, and it is not in "
            "the Hugging Face cache; the hub cannot be reached (offline).",
            hint="run once with network access to cache it, pass a local folder, or use "
            "the built-in 'minilm-l6'.",
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelError(
            f"could not get model {repo_id!r} from the Hugging Face hub: {exc}",
            hint="check the id (and HF_TOKEN for private models), or pass a local folder.",
        ) from exc
    check_model_folder(path)
    return path


def check_model_folder(folder: Path) -> None:
    """Raise a ModelError unless ``folder`` looks like a transformers model."""
    if not folder.is_dir():
        raise ModelError(f"{folder} is a file, not a model folder.",
                         hint="pass the folder that holds config.json and the weights.")
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder} is not a transformers model: it has no config.json.",
            hint="pass a folder saved with `save_pretrained` (config.json + weights + "
            "tokenizer files), or a hub id.",
        )


def max_positions(config: dict) -> int | None:
    """Longest sequence a model takes (its position embeddings), from its config.json dict."""
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool):
        return None
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # RoBERTa offsets positions by the padding index
    return positions


def folder_positions(folder: Path) -> int | None:
    """``max_positions`` of the model in ``folder``; None without a readable config.json."""
    import json

    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return max_positions(config) if isinstance(config, dict) else None


def check_length(folder: Path, length: int, setting: str, where: str = "") -> None:
    """Refuse ``length`` tokens (``setting``, set ``where``) beyond the positions of the model in ``folder``.

    Caught here, the mistake costs nothing; caught by the embedding lookup, it is an index
    error deep in the first batch of a stage, after the stages before it have run.
    """
    limit = folder_positions(folder)
    if limit and length > limit:
        raise ModelError(
            f"{setting} {length}{where} is beyond the maximum of {limit} positions of the model in {folder} "
            "(max_position_embeddings in its config.json).",
            hint=f"set {setting} to {limit} or less.",
        )


def check_model_files(folder: Path) -> None:
    """Refuse a model folder missing the config.json every reader needs, or with an empty model file."""
    folder = Path(folder)
    empty = [f.name for f in sorted(folder.iterdir()) if f.is_file() and f.name.endswith(MODEL_FILE_SUFFIXES)
             and f.stat().st_size == 0]
    if empty:
        raise ModelError(f"{folder / empty[0]} is empty (0 bytes): not a model.",
                         hint="export it again, or copy the whole file (an interrupted copy is the usual "
                         "cause).")
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder} has no config.json: slimbert reads the labels and the maximum length of a model "
            "from it, beside any model file.",
            hint="copy config.json (and the tokenizer files) of the model it was exported from into the "
            "folder; slimbert's own exports carry them.",
        )
    problem = onnx_file_problem(folder / ONNX_FILE) if (folder / ONNX_FILE).is_file() else None
    if problem:
        raise ModelError(f"{problem}.", hint="export it again (slimbert export MODEL --format onnx), or "
                         "point at the folder of a model.onnx that an ONNX exporter wrote.")


def model_fingerprint(folder: Path) -> str:
    """Hash of the files that define a model (PyTorch or ONNX), for stage caching."""
    files = sorted(
        f for f in folder.iterdir()
        if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".txt", ".model", ".onnx", ".data"}
        and f.name != "manifest.json"
    )
    return sha256_json({f.name: sha256_file(f) for f in files})


def content_fingerprint(folder: Path) -> str:
    """The content hash of a model folder: of every file its manifest lists when slimbert made
    it (what a stage records for an earlier stage), else ``model_fingerprint``."""
    artifact = read_artifact(Path(folder))
    return sha256_json(artifact.manifest.files) if artifact is not None else model_fingerprint(Path(folder))


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as exc:
        names = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "sentencepiece.bpe.model",
                 "spm.model")
        missing = Path(folder).is_dir() and not any((Path(folder) / n).is_file() for n in names)
        raise ModelError(
            f"could not load a tokenizer from {folder}: "
            + ("it has no tokenizer files" if missing else str(exc).splitlines()[0] if str(exc) else ""),
            hint="the folder needs tokenizer files (tokenizer.json or vocab.txt) beside "
            "config.json; save them with tokenizer.save_pretrained(folder).",
        ) from exc


def has_classification_head(folder: Path) -> bool:
    import json

    config = json.loads((folder / "config.json").read_text())
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def check_weights(folder: Path) -> Path | None:
    """The PyTorch weights file in ``folder`` (None: sharded); a ModelError naming what is there instead."""
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).exists()), None)
    if weights is None and not list(folder.glob("*.safetensors")):
        exported = next((f.name for f in sorted(folder.iterdir()) if f.suffix in EXPORTED_SUFFIXES), None)
        if exported:
            raise ModelError(
                f"{folder} holds an exported model ({exported}), not PyTorch weights; this step "
                "needs the PyTorch model it was exported from.",
                hint="give the PyTorch folder (e.g. runs/default/student, not student-onnx); to "
                "quantize an ONNX graph, use `slimbert export <pytorch folder> --format onnx-int8` "
                "or a recipe's quantize-onnx stage with input: the ONNX stage.",
            )
        raise ModelError(
            f"{folder} has no weights file ({' or '.join(WEIGHT_FILES)}).",
            hint="save the model with save_pretrained into that folder.",
        )
    return weights


def load_classifier(folder: Path, label_names: list[str] | None = None,
                    attn_implementation: str | None = None):
    """An AutoModelForSequenceClassification from ``folder``.

    With ``label_names`` the head is sized (and, if it does not match, re-initialised)
    for those labels; the label names are stored in the config so that every exported
    artifact carries them. ``attn_implementation="eager"`` is for training that reads the
    attention maps (SDPA does not return them).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    check_model_folder(folder)
    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as exc:
        raise ModelError(
            f"{folder}/config.json is not a valid transformers config: {exc}",
            hint="use a folder written by save_pretrained, or re-download the model.",
        ) from exc
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if label_names is not None:
        config.num_labels = len(label_names)
        config.id2label = dict(enumerate(label_names))
        config.label2id = {n: i for i, n in enumerate(label_names)}
        kwargs["ignore_mismatched_sizes"] = True
    weights = check_weights(folder)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized head" warnings are expected here
    try:
        return AutoModelForSequenceClassification.from_pretrained(folder, config=config, **kwargs)
    except Exception as exc:
        where = weights or folder
        raise ModelError(
            f"could not load the weights in {where}: {type(exc).__name__}: {exc}",
            hint="the file may be truncated or corrupt: re-download or re-export it "
            "(slimbert never writes half files, so an interrupted copy is the usual cause).",
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
