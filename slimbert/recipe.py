"""Recipes: the model, the dataset and the list of stages, read from YAML and checked.

Every key is checked against the config dataclasses, so a typo fails before hours of
training with the file, the stage and the closest valid key in the message.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slimbert.data import DatasetConfig
from slimbert.errors import RecipeError
from slimbert.schema import from_dict, load_yaml, to_dict
from slimbert.stages import STAGES
from slimbert.tasks import DEFAULT_TASK, get_task


@dataclass
class StageSpec:
    type: str
    name: str
    config: Any
    input: str | None = None  # an earlier stage's name, or "model" for the base model

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "input": self.input, **to_dict(self.config)}


@dataclass
class Recipe:
    model: str = "minilm-l6"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    stages: list[StageSpec] = field(default_factory=list)
    name: str = "recipe"
    seed: int = 0
    base_dir: Path = field(default_factory=Path.cwd)  # relative paths resolve against it
    task: str = DEFAULT_TASK  # a name in slimbert.tasks.TASKS

    def to_dict(self) -> dict[str, Any]:
        extra = {"task": self.task} if self.task != DEFAULT_TASK else {}  # recipes before tasks read the same
        return {"name": self.name, "model": self.model, "seed": self.seed, **extra,
                "dataset": to_dict(self.dataset), "stages": [s.to_dict() for s in self.stages]}


@dataclass
class _TopLevel:  # the schema of the YAML file's top level
    model: str = "minilm-l6"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    stages: list[dict[str, Any]] = field(default_factory=list)
    name: str = "recipe"
    seed: int = 0
    task: str = DEFAULT_TASK


def parse_stage(entry: Any, index: int, source: str) -> StageSpec:
    where = f"stages[{index}]"
    if not isinstance(entry, dict):
        raise RecipeError(f"{source}: {where} must be a mapping with a `type`, got {entry!r}.")
    entry = dict(entry)
    stage_type = entry.pop("type", None)
    if stage_type is None:
        raise RecipeError(f"{source}: {where} has no `type`; one of: {', '.join(STAGES)}.")
    if stage_type not in STAGES:
        close = difflib.get_close_matches(str(stage_type), list(STAGES), n=1)
        raise RecipeError(
            f"{source}: {where} has unknown stage type {stage_type!r}; known: {', '.join(STAGES)}.",
            hint=f"did you mean {close[0]!r}?" if close else None,
        )
    name = entry.pop("name", stage_type)
    stage_input = entry.pop("input", None)
    for key, value in (("name", name), ("input", stage_input)):
        if value is not None and not isinstance(value, str):
            raise RecipeError(f"{source}: {where}.{key} must be a string, got {value!r}.")
    config = from_dict(STAGES[stage_type].config_cls, entry, source=source, path=f"{where} ({name})")
    return StageSpec(type=stage_type, name=name, config=config, input=stage_input)


def _named_artifacts(spec: StageSpec, seen: set[str]) -> list[str]:
    """Stages or folders a config names (e.g. a recovery teacher, benched artifacts)."""
    refs = STAGES[spec.type].references
    return list(refs(spec.config, seen)) if refs else []


def _check_references(spec: StageSpec, index: int, seen: set[str], source: str, base_dir: Path) -> None:
    """Everything a stage names must exist before hours of the stages ahead of it run."""
    for ref in _named_artifacts(spec, seen):
        path = Path(ref).expanduser()
        if ref in seen or ref == "model" or (path if path.is_absolute() else base_dir / path).is_dir():
            continue
        close = difflib.get_close_matches(ref, sorted(seen), n=1)
        raise RecipeError(
            f"{source}: stages[{index}] ({spec.name}) refers to {ref!r}, which is neither an "
            f"earlier stage nor a model folder; earlier stages: {', '.join(sorted(seen)) or 'none'}.",
            hint=f"did you mean {close[0]!r}?" if close else "name an earlier stage, or a folder "
            "with a saved model.",
        )


def recipe_from_dict(data: Any, source: str = "recipe", base_dir: Path | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source} must be a YAML mapping with model, dataset and stages.")
    if "stages" not in data and any(isinstance(v, dict) and "transport" in v for v in data.values()):
        raise RecipeError(f"{source} is a devices file, not a recipe.",
                          hint=f"use it with `slimbert deploy ARTIFACT --device NAME --devices {source}`.")
    top = from_dict(_TopLevel, data, source=source)
    if not top.stages:
        raise RecipeError(f"{source}: `stages` is empty; list at least one stage.")
    task = get_task(top.task)
    stages = [parse_stage(entry, i, source) for i, entry in enumerate(top.stages)]
    seen: set[str] = set()
    for i, spec in enumerate(stages):
        task.check_stage(spec.type, f"{source}: stages[{i}] ({spec.name})")
        if spec.name in seen or spec.name == "model":
            raise RecipeError(
                f"{source}: stages[{i}] reuses the name {spec.name!r}.",
                hint="give each stage a unique `name` (\"model\" is reserved for the base model).",
            )
        if spec.input is not None and spec.input != "model" and spec.input not in seen:
            raise RecipeError(
                f"{source}: stages[{i}] ({spec.name}) reads {spec.input!r}, which is not an "
                f"earlier stage; earlier stages: {', '.join(sorted(seen)) or 'none'}.",
            )
        _check_references(spec, i, seen, source, base_dir or Path.cwd())
        seen.add(spec.name)
    return Recipe(model=top.model, dataset=top.dataset, stages=stages, name=top.name,
                  seed=top.seed, base_dir=base_dir or Path.cwd(), task=task.name)


def default_recipe_dict() -> dict[str, Any]:
    """The built-in default recipe as its YAML mapping (model, dataset, seed, stages)."""
    return load_yaml(resources.files("slimbert.recipes").joinpath("default.yaml").read_text())


def load_recipe(path: Path | str | None = None) -> Recipe:
    """Read a recipe file; with no path, the built-in default recipe."""
    if path is None:
        return recipe_from_dict(default_recipe_dict(), "default recipe")
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist.",
                          hint="pass the path of a YAML recipe; examples/ has some.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:  # a binary file, or another encoding
        raise RecipeError(f"{path} is not a UTF-8 text file (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); a recipe is YAML text.",
                          hint="pass the recipe's .yaml file; if an editor saved it in another encoding, "
                          "save it as UTF-8.") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file {path}: {exc.strerror or exc}.") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path} is not valid YAML: {exc}") from exc
    return recipe_from_dict(data, str(path), base_dir=path.parent.resolve())
