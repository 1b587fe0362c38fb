"""A bundle: the smallest self-checking folder a device needs to run an ONNX artifact.

The device gets the graph, config.json (labels, vocabulary size, positions), the tokenizer
and the standalone runner, plus ``bundle.json`` with every file's sha256. The hashes let
the device itself reject a corrupted transfer, and the bundle id (derived from them) names
the release, so deploying the same bundle twice is recognisably the same release.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from slimbert.artifacts import MANIFEST, read_artifact, sha256_file, write_json_atomic
from slimbert.errors import DeployError

BUNDLE_FILE = "bundle.json"
RUNNER_FILE = "runner.py"
RUNNER_SOURCE = Path(__file__).with_name(RUNNER_FILE)
BUNDLE_FORMAT = 1


def bundle_id_of(files: dict[str, str]) -> str:
    """Content address of a bundle: names and hashes, so a rename is a different bundle too."""
    text = "".join(f"{name}:{digest}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_bundle(bundle_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(bundle_dir) / BUNDLE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise DeployError(f"{bundle_dir} is not a bundle: cannot read {BUNDLE_FILE} ({exc}).",
                          hint="build it with slimbert.deploy.make_bundle.") from exc


def _check_artifact(artifact_dir: Path) -> dict[str, Any]:
    """Refuse anything but an intact ONNX artifact; returns its config.json."""
    from slimbert.export.onnx import ONNX_FILE

    if not artifact_dir.is_dir():
        raise DeployError(f"artifact {artifact_dir} does not exist or is not a folder.",
                          hint="give the folder of an export-onnx or quantize-onnx stage, e.g. "
                               "runs/default/student-int8.")
    artifact = read_artifact(artifact_dir)
    kind = artifact.kind if artifact is not None else None
    if kind not in (None, "onnx") or not (artifact_dir / ONNX_FILE).is_file():
        what = f"a {kind} artifact" if kind not in (None, "onnx") else f"no {ONNX_FILE} in it"
        raise DeployError(f"{artifact_dir} is not an ONNX artifact ({what}); only ONNX graphs are deployed.",
                          hint=f"export it first: slimbert export {artifact_dir} (or deploy the "
                               "export-onnx / quantize-onnx stage of a run).")
    if artifact is not None and (bad := artifact.verify()):
        raise DeployError(f"{artifact_dir} no longer matches its {MANIFEST}: {', '.join(bad)} changed "
                          "since the stage wrote it.",
                          hint="re-run the stage that made it (slimbert run --rerun STAGE).")
    if not (artifact_dir / "tokenizer.json").is_file():
        raise DeployError(f"{artifact_dir} has no tokenizer.json; the on-device runner tokenizes with "
                          "the `tokenizers` library, which needs it.",
                          hint="export from a model with a fast tokenizer (tokenizer.save_pretrained "
                               "of a *TokenizerFast writes tokenizer.json), then re-run the export.")
    try:
        return json.loads((artifact_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise DeployError(f"{artifact_dir}/config.json is missing or unreadable ({exc}).",
                          hint="re-run the export stage; it copies config.json beside model.onnx.") from exc


def _label_names(config: dict[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def make_bundle(artifact_dir: Path, out_dir: Path) -> Path:
    """Build the bundle of ONNX artifact ``artifact_dir`` as ``out_dir/<bundle_id>``.

    Written into a temporary folder and renamed into place, so a folder named after a
    bundle id is always complete; an existing one with that id is the same content and
    is replaced.
    """
    from slimbert.export.onnx import ONNX_FILE, TOKENIZER_FILES  # imports torch: only when bundling

    artifact_dir, out_dir = Path(artifact_dir).resolve(), Path(out_dir)
    config = _check_artifact(artifact_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".tmp-bundle-"))
    try:
        names = [ONNX_FILE, "config.json", *TOKENIZER_FILES]
        names += sorted(p.name for p in artifact_dir.glob("*.onnx.data"))  # external weights, if any
        for name in dict.fromkeys(names):
            if (artifact_dir / name).is_file():
                shutil.copy2(artifact_dir / name, tmp / name)
        shutil.copy2(RUNNER_SOURCE, tmp / RUNNER_FILE)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        bundle_id = bundle_id_of(files)
        artifact = read_artifact(artifact_dir)
        write_json_atomic(tmp / BUNDLE_FILE, {
            "format": BUNDLE_FORMAT,
            "bundle_id": bundle_id,
            "artifact": artifact.name if artifact is not None else artifact_dir.name,
            "source": str(artifact_dir),
            "source_inputs_hash": artifact.manifest.inputs_hash if artifact is not None else None,
            "labels": _label_names(config),
            "files": files,
        })
        dest = out_dir / bundle_id
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
