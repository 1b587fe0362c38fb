"""Recipes made from a command's options: what `compress`, `export` and `bench` run.

The CLI and the Python API (slimbert.api) both build their one-stage recipes here, so both
keep a model made by slimbert off its own training sentences: unless the caller names a
dataset, such a model is evaluated on the dataset and split recorded in its manifest.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimbert.errors import RecipeError
from slimbert.schema import SchemaError

if TYPE_CHECKING:
    from slimbert.recipe import Recipe

log = logging.getLogger(__name__)

# a recipe's `dataset:` when the caller names none (and the model recorded none)
DATASET_DEFAULTS: dict[str, Any] = {"source": "rt-snippets", "text": "text", "text_pair": None,
                                    "label": "label", "max_length": 128}

_ONNX = {"type": "export-onnx", "name": "onnx"}
_ONNX_INT8 = {"type": "quantize-onnx", "name": "onnx-int8"}
# export format -> the stages it runs; the artifact is the last one (OUT/<its name>)
EXPORT_FORMATS: dict[str, list[dict]] = {
    "onnx": [_ONNX],
    "onnx-int8": [_ONNX, _ONNX_INT8],
    "onnx-int8-static": [_ONNX, {"type": "quantize-onnx", "name": "onnx-int8-static", "mode": "static"}],
    "onnx-fp8": [_ONNX, {"type": "quantize-onnx", "name": "onnx-fp8", "mode": "fp8"}],
    "ort-mobile": [_ONNX, _ONNX_INT8, {"type": "export-ort-mobile", "name": "ort-mobile"}],
    "executorch": [{"type": "export-executorch", "name": "executorch"}],
    "executorch-int8": [{"type": "export-executorch", "name": "executorch-int8", "precision": "int8"}],
    "pt2e-int8": [{"type": "quantize-torch", "name": "pt2e-int8"}],
}
_QUANTIZING = ("quantize-onnx", "quantize-torch")


def compress_stages() -> dict[str, str]:
    """Stage types `compress` runs, with their help: those that turn a transformers model into
    another model (exports are `export`'s)."""
    from slimbert.formats import MODEL_FORMATS
    from slimbert.stages import STAGES

    return {name: s.help for name, s in STAGES.items()
            if s.input_format == "hf-model" and s.output_format in MODEL_FORMATS
            and not name.startswith("export-")}


def recorded_dataset(model: str | Path) -> tuple[dict[str, Any], int] | None:
    """The dataset config and seed a run's artifact was made with, from its manifest.

    Artifacts written before slimbert recorded the whole config still name a built-in or
    hub source, its split fractions and its seed, which is enough to draw the same split.
    """
    from slimbert.artifacts import read_artifact

    folder = Path(model).expanduser()
    artifact = read_artifact(folder) if folder.is_dir() else None
    if artifact is None:
        return None
    extra = artifact.manifest.extra
    if "dataset_config" in extra:
        return dict(extra["dataset_config"]), extra.get("seed", 0)
    info = extra.get("dataset") or {}
    if info.get("kind") not in ("builtin", "hub"):
        return None
    dataset = {"source": info["source"], "split": info.get("split_fractions") or {}}
    seed = info.get("split_seed", 0)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # the run's recipe: max_length
        recipe = json.loads((folder.parent / "recipe.json").read_text())
        same = (recipe["dataset"]["source"] == dataset["source"] and recipe["seed"] == seed
                and all(recipe["dataset"]["split"][k] == v for k, v in dataset["split"].items()))
        if same:
            dataset["max_length"] = recipe["dataset"]["max_length"]
    return dataset, seed


def dataset_and_seed(model: str | Path, dataset: dict[str, Any] | None = None,
                     seed: int | None = None) -> tuple[dict[str, Any], int]:
    """The recipe `dataset:` and seed to evaluate ``model`` with.

    ``dataset`` holds the keys the caller chose (source, text, text_pair, label,
    max_length); without a ``source``, a model made by slimbert gets the dataset and split
    recorded in its manifest, with the chosen keys and seed on top. Without this,
    benchmarking a run's student on the default split would score it partly on sentences
    it was trained on.
    """
    dataset = dict(dataset or {})
    recorded = None if "source" in dataset else recorded_dataset(model)
    if recorded is None:
        return {**DATASET_DEFAULTS, **dataset}, 0 if seed is None else seed
    recalled, recorded_seed = recorded
    seed = recorded_seed if seed is None else seed
    recalled.update(dataset)
    log.info("dataset: %s with the split recorded in %s/manifest.json (seed %s); --dataset picks "
             "another", recalled.get("source") or recalled.get("train"), model, seed)
    return recalled, seed


def one_stage_recipe(model: str | Path, stages: list[dict[str, Any]], dataset: dict[str, Any] | None = None,
                     seed: int | None = None, *, source: str = "options",
                     name_key: Callable[[str], str] | None = None) -> Recipe:
    """A recipe running ``stages`` on ``model``, named after the last stage (its artifact).

    A settings error names its key with ``name_key(key path)`` (the CLI: ``--set epochs``).
    """
    from slimbert.recipe import recipe_from_dict  # the stage registry: not for the CLI's --help

    dataset, seed = dataset_and_seed(model, dataset, seed)
    try:
        return recipe_from_dict({"name": stages[-1]["name"], "model": str(model), "seed": seed,
                                 "dataset": dataset, "stages": stages}, source)
    except SchemaError as exc:
        raise (exc.renamed(name_key) if name_key else exc) from None


def settings_name(path: str) -> str:
    """A stage's key path as a Python caller wrote it: ``settings['epochs']``."""
    if path.startswith("stages["):
        key = path.partition(").")[2]
        return f"settings[{key!r}]" if key else "the settings"
    return path


def compress_recipe(model: str | Path, stage: str, settings: dict[str, Any] | None, out: Path,
                    name: str | None = None, dataset: dict[str, Any] | None = None, seed: int | None = None,
                    *, source: str = "options", name_key: Callable[[str], str] = settings_name) -> Recipe:
    """The one-stage recipe of `compress`: ``stage`` on ``model``, its artifact in ``out/name``."""
    name = name or stage
    if (Path(out) / name).resolve() == Path(model).expanduser().resolve():
        raise RecipeError(f"the result would replace its own input {model}; give another --name or --out.",
                          hint="the artifact lands in OUT/NAME; name another folder for it.")
    return one_stage_recipe(model, [{"type": stage, "name": name, **(settings or {})}], dataset, seed,
                            source=source, name_key=name_key)


def export_stages(fmt: str, *, opset: int = 17, tolerance: float | None = None) -> list[dict[str, Any]]:
    """The stages of export format ``fmt`` with the opset and the quantizers' tolerance set."""
    if fmt not in EXPORT_FORMATS:
        raise RecipeError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}.")
    if tolerance is not None and not any(s["type"] in _QUANTIZING for s in EXPORT_FORMATS[fmt]):
        raise RecipeError(f"--tolerance bounds a quantized model's accuracy drop; --format {fmt} does not "
                          "quantize (onnx-int8, onnx-int8-static, onnx-fp8, ort-mobile and pt2e-int8 do).")
    stages = []
    for stage in EXPORT_FORMATS[fmt]:
        stage = dict(stage)
        if stage["type"] == "export-onnx":
            stage["opset"] = opset
        if stage["type"] in _QUANTIZING and tolerance is not None:
            stage["tolerance"] = tolerance
        stages.append(stage)
    return stages


def bench_recipe(artifacts: list[str | Path], dataset: dict[str, Any] | None = None, seed: int | None = None,
                 **settings: Any) -> Recipe:
    """A bench of model folders ``artifacts`` (BenchConfig ``settings``), on the first one's data."""
    if not artifacts:
        raise RecipeError("give at least one artifact folder to bench.")
    folders = [str(Path(a).expanduser().resolve()) for a in artifacts]
    stage = {"type": "bench", "name": "bench", "artifacts": folders, **settings}
    return one_stage_recipe(folders[0], [stage], dataset, seed)
