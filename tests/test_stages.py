"""The stage registry names its code lazily, and planning a run loads none of the heavy libraries."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from slimbert.stages import STAGES, load_object

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "onnx", "onnxruntime")


def test_every_registered_name_imports():
    """A typo in a "module:attribute" string fails here, not when someone first runs that stage."""
    for stage in STAGES.values():
        assert dataclasses.is_dataclass(stage.config_cls), stage.name
        assert callable(load_object(stage.runner)), stage.name
        if stage.referrer:
            assert callable(load_object(stage.referrer)), stage.name


# Run in a fresh interpreter: the test process has torch loaded already. It parses the
# default recipe (with the test's tiny model and CSV, so nothing is fetched), plans it as
# `slimbert run --dry-run` does, and says which heavy libraries got imported.
PLAN_SCRIPT = """
import json, sys
import slimbert
names = dir(slimbert)
from slimbert.cli import main
from slimbert.recipe import recipe_from_dict
main(["run", "--dry-run", sys.argv[1], "--out", sys.argv[2]], standalone_mode=False)
prune = {"model": sys.argv[3], "stages": [
    {"type": "finetune", "name": "teacher"},
    {"type": "prune", "method": "structured", "recovery": {"teacher": "teacher"}}]}
recipe_from_dict(prune, "prune recipe")
print(json.dumps({"heavy": [m for m in sys.argv[4].split(",") if m in sys.modules],
                  "exports": "distill" in names}))
"""


def test_parsing_and_planning_the_default_recipe_imports_no_torch(tiny_encoder, sentiment_csv, tmp_path):
    recipe = yaml.safe_load((ROOT / "examples/default.yaml").read_text())
    recipe["model"] = str(tiny_encoder)
    recipe["dataset"]["source"] = str(sentiment_csv)
    path = tmp_path / "default.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", PLAN_SCRIPT, str(path), str(tmp_path / "run"), str(tiny_encoder),
         ",".join(HEAVY)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    *plan, last = done.stdout.strip().splitlines()
    assert json.loads(last) == {"heavy": [], "exports": True}
    assert [line.split()[0] for line in plan[1:]] == [s["name"] for s in recipe["stages"]]
    assert all("no artifact yet" in line for line in plan[1:])
    assert not (tmp_path / "run").exists()
