"""A bundle: the smallest self-checking folder a device needs to run a model artifact.

The device gets the model (``model.onnx``, ``model.ort`` or ``model.pte``), config.json
(labels, vocabulary size, positions), the tokenizer and the standalone runner, plus
``bundle.json`` with every file's sha256. The hashes let the device itself reject a
corrupted transfer, and the bundle id (derived from them) names the release, so deploying
the same bundle twice is recognisably the same release.

``health.json`` holds a few examples, their token ids and the predictions this machine's
runtime gives for them, with the agreement the device must reach (RAUC/Mender-style health
check): a device whose runtime cannot execute the graph, or computes something else, is
caught before its release goes live and again right after the switch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from slimbert.artifacts import MANIFEST, read_artifact, sha256_file, write_json_atomic
from slimbert.errors import DeployError

BUNDLE_FILE = "bundle.json"
RUNNER_FILE = "runner.py"
RUNNER_SOURCE = Path(__file__).with_name(RUNNER_FILE)
HEALTH_FILE = "health.json"
BUNDLE_FORMAT = 2  # 2: model_file, kind and health (1: model.onnx only, no health check)
# what each deployable artifact kind ships: its model file and the files beside it
MODEL_FILES = {"onnx": "model.onnx", "ort-mobile": "model.ort", "executorch": "model.pte"}
EXTRA_FILES = {"executorch": ("executorch.json",)}  # input names and shape bounds of the program
DEFAULT_MIN_AGREEMENT = 0.875  # 7 of the 8 default examples: one borderline flip between CPUs is allowed
# Health-check examples: varied lengths and vocabulary; what matters is that the device and
# this machine see the same inputs, not what the texts say.
HEALTH_TEXTS = (
    "a good fun film with a great cast",
    "dull and boring, i left early",
    "the plot was fine but the ending fell flat and the music was far too loud for the quiet scenes",
    "excellent!",
    "not bad at all",
    "worst purchase ever, it broke after two days and support never answered",
    "an honest, moving story that stays with you",
    "meh",
)


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


def artifact_kind(artifact_dir: Path) -> tuple[str, Any]:
    """The deployable kind of ``artifact_dir`` (onnx, ort-mobile, executorch) and its manifest."""
    if not artifact_dir.is_dir():
        raise DeployError(f"artifact {artifact_dir} does not exist or is not a folder.",
                          hint="give the folder of an export-onnx, quantize-onnx, export-ort-mobile or "
                               "export-executorch stage, e.g. runs/default/student-int8.")
    artifact = read_artifact(artifact_dir)
    kind = artifact.kind if artifact is not None else None
    if kind is None:  # a folder made outside a run: go by the model file in it
        kind = next((k for k, name in MODEL_FILES.items() if (artifact_dir / name).is_file()), None)
    if kind not in MODEL_FILES or not (artifact_dir / MODEL_FILES[kind]).is_file():
        files = " / ".join(MODEL_FILES.values())
        what = f"a {kind} artifact" if kind not in (None, *MODEL_FILES) else f"no {files} in it"
        raise DeployError(f"{artifact_dir} is not an ONNX, ORT or ExecuTorch artifact ({what}); only "
                          f"{files} models are deployed.",
                          hint=f"export it first: slimbert export {artifact_dir} (or deploy the "
                               "export-onnx / quantize-onnx / export-ort-mobile / export-executorch stage "
                               "of a run).")
    return kind, artifact


def _check_artifact(artifact_dir: Path) -> tuple[str, dict[str, Any]]:
    """Refuse anything but an intact deployable artifact; returns its kind and config.json."""
    kind, artifact = artifact_kind(artifact_dir)
    if artifact is not None and (bad := artifact.verify()):
        raise DeployError(f"{artifact_dir} no longer matches its {MANIFEST}: {', '.join(bad)} changed "
                          "since the stage wrote it.",
                          hint="re-run the stage that made it (slimbert run --rerun STAGE).")
    for name in EXTRA_FILES.get(kind, ()):
        if not (artifact_dir / name).is_file():
            raise DeployError(f"{artifact_dir} has no {name}, which the runner needs beside "
                              f"{MODEL_FILES[kind]}.", hint="re-run the export stage that made it.")
    if not (artifact_dir / "tokenizer.json").is_file():
        raise DeployError(f"{artifact_dir} has no tokenizer.json; the on-device runner tokenizes with "
                          "the `tokenizers` library, which needs it.",
                          hint="export from a model with a fast tokenizer (tokenizer.save_pretrained "
                               "of a *TokenizerFast writes tokenizer.json), then re-run the export.")
    try:
        return kind, json.loads((artifact_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise DeployError(f"{artifact_dir}/config.json is missing or unreadable ({exc}).",
                          hint="re-run the export stage; it copies config.json beside the model.") from exc


def record_health(bundle_dir: Path, texts: tuple[str, ...], min_agreement: float,
                  max_length: int = 128) -> dict[str, Any]:
    """Run the bundle's own runner here on ``texts``; its answers are what the device must match.

    The runner, not slimbert's runtimes, so that both sides load the model the same way.
    """
    cmd = [sys.executable, str(bundle_dir / RUNNER_FILE), "record", "--max-length", str(max_length), *texts]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DeployError(f"cannot record the health-check predictions on this machine: "
                          f"{(proc.stderr or proc.stdout).strip()[-500:]}",
                          hint="the model must run here before it is shipped: install its runtime "
                               "(pip install onnxruntime / executorch) or re-export it.")
    return {**json.loads(proc.stdout), "min_agreement": min_agreement}


def _label_names(config: dict[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def make_bundle(artifact_dir: Path, out_dir: Path, min_agreement: float = DEFAULT_MIN_AGREEMENT,
                health_texts: tuple[str, ...] = HEALTH_TEXTS) -> Path:
    """Build the bundle of artifact ``artifact_dir`` as ``out_dir/<bundle_id>``.

    Written into a temporary folder and renamed into place, so a folder named after a
    bundle id is always complete; an existing one with that id is the same content and
    is replaced.
    """
    from slimbert.export.onnx import TOKENIZER_FILES

    if not 0 < min_agreement <= 1:
        raise DeployError(f"min_agreement must be in (0, 1], got {min_agreement}.",
                          hint="e.g. 0.875: 7 of 8 recorded examples must agree.")
    artifact_dir, out_dir = Path(artifact_dir).resolve(), Path(out_dir)
    kind, config = _check_artifact(artifact_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".tmp-bundle-"))
    try:
        names = [MODEL_FILES[kind], *EXTRA_FILES.get(kind, ()), "config.json", *TOKENIZER_FILES]
        if kind == "onnx":
            names += sorted(p.name for p in artifact_dir.glob("*.onnx.data"))  # external weights, if any
        for name in dict.fromkeys(names):
            if (artifact_dir / name).is_file():
                shutil.copy2(artifact_dir / name, tmp / name)
        shutil.copy2(RUNNER_SOURCE, tmp / RUNNER_FILE)
        # the runner reads model_file from bundle.json: a provisional one for recording
        (tmp / BUNDLE_FILE).write_text(json.dumps({"model_file": MODEL_FILES[kind]}))
        max_length = 128
        if kind == "executorch":
            meta = json.loads((tmp / "executorch.json").read_text())
            max_length = min(max_length, int(meta["max_seq_len"]))
        health = record_health(tmp, health_texts, min_agreement, max_length)
        write_json_atomic(tmp / HEALTH_FILE, health)
        (tmp / BUNDLE_FILE).unlink()
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        bundle_id = bundle_id_of(files)
        artifact = read_artifact(artifact_dir)
        write_json_atomic(tmp / BUNDLE_FILE, {
            "format": BUNDLE_FORMAT,
            "bundle_id": bundle_id,
            "artifact": artifact.name if artifact is not None else artifact_dir.name,
            "kind": kind,
            "model_file": MODEL_FILES[kind],
            "source": str(artifact_dir),
            "source_inputs_hash": artifact.manifest.inputs_hash if artifact is not None else None,
            "labels": _label_names(config),
            "health": {"file": HEALTH_FILE, "examples": len(health["predictions"]),
                       "min_agreement": min_agreement},
            "files": files,
        })
        dest = out_dir / bundle_id
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
