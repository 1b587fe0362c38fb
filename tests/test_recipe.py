from pathlib import Path

import pytest
import yaml

from slimbert.errors import RecipeError
from slimbert.recipe import load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def base(**extra):
    return {"model": "minilm-l6", "stages": [{"type": "finetune", "name": "teacher"}], **extra}


def test_default_recipe_parses_and_matches_the_example():
    recipe = load_recipe()
    assert [s.type for s in recipe.stages] == [
        "finetune", "distill", "export-onnx", "export-onnx", "quantize-onnx", "bench"]
    packaged = (ROOT / "slimbert/recipes/default.yaml").read_text()
    assert (ROOT / "examples/default.yaml").read_text() == packaged


def test_every_example_recipe_parses():
    examples = sorted(p for p in (ROOT / "examples").glob("*.yaml") if p.name != "devices.yaml")
    assert examples
    for path in examples:
        load_recipe(path)


def test_unknown_top_level_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, base(stagess=[]))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "'stagess'" in err.value.message and str(path) in err.value.message
    assert "stages" in err.value.hint


def test_mistyped_stage_key_is_named_with_its_stage(tmp_path):
    data = base()
    data["stages"] = [{"type": "distill", "name": "student", "epoch": 3}]
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, data))
    assert "'epoch'" in err.value.message and "student" in err.value.message
    assert "epochs" in err.value.hint


def test_wrong_types_and_values_are_rejected(tmp_path):
    data = base()
    data["stages"] = [{"type": "finetune", "epochs": "three"}]
    with pytest.raises(RecipeError, match="epochs must be int"):
        load_recipe(write(tmp_path, data))
    data["stages"] = [{"type": "distill", "temperature": 0}]
    with pytest.raises(RecipeError, match="temperature must be > 0"):
        load_recipe(write(tmp_path, data))
    data["stages"] = [{"type": "distill", "alpha_kd": 0, "alpha_ce": 0}]
    with pytest.raises(RecipeError, match="must be >= 0 and not all 0"):
        load_recipe(write(tmp_path, data))
    data["stages"] = [{"type": "distill", "layers": "every-third"}]
    with pytest.raises(RecipeError, match="layers"):
        load_recipe(write(tmp_path, data))


def test_scientific_notation_strings_are_floats():
    recipe = recipe_from_dict(base(stages=[{"type": "finetune", "lr": "5e-5"}]))
    assert recipe.stages[0].config.lr == pytest.approx(5e-5)


def test_unknown_stage_type_suggests_the_closest():
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(base(stages=[{"type": "distil"}]))
    assert "distill" in err.value.hint


def test_duplicate_names_and_forward_references_are_rejected():
    with pytest.raises(RecipeError, match="reuses the name"):
        recipe_from_dict(base(stages=[{"type": "finetune"}, {"type": "finetune"}]))
    with pytest.raises(RecipeError, match="not an earlier stage"):
        recipe_from_dict(base(stages=[{"type": "export-onnx", "input": "student"},
                                      {"type": "distill", "name": "student"}]))


def test_missing_recipe_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write(tmp_path, "stages: [unclosed"))


def test_dataset_section_is_checked(tmp_path):
    data = base(dataset={"source": "x.csv", "labels": "y"})
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, data))
    assert "'labels'" in err.value.message and "label" in err.value.hint
    with pytest.raises(RecipeError, match="split fractions"):
        recipe_from_dict(base(dataset={"split": {"dev": 0.6, "test": 0.5}}))


def test_a_typo_in_a_nested_optional_section_names_the_key():
    stage = {"type": "prune", "method": "magnitude", "recovery": {"epoch": 1}}
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(base(stages=[{"type": "finetune", "name": "teacher"}, stage]))
    assert "unknown key 'epoch' in stages[1] (prune).recovery" in err.value.message
    assert "epochs" in err.value.hint


def test_a_typo_in_bench_artifacts_fails_before_any_stage_runs():
    stages = [{"type": "finetune", "name": "teacher"}, {"type": "export-onnx", "name": "static"},
              {"type": "bench", "artifacts": ["teacher", "statc"]}]
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(base(stages=stages))
    assert "refers to 'statc'" in err.value.message and "'static'" in err.value.hint


def test_two_four_sparsity_is_text_not_a_base_60_number(tmp_path):
    stage = {"type": "prune", "method": "magnitude", "scope": "2:4"}
    path = write(tmp_path, yaml.safe_dump(base(stages=[stage])).replace("'2:4'", "2:4"))
    assert "scope: 2:4\n" in path.read_text()  # unquoted, as the README writes it
    assert load_recipe(path).stages[0].config.scope == "2:4"


def test_a_devices_file_given_as_a_recipe_is_named_as_such():
    with pytest.raises(RecipeError, match="is a devices file, not a recipe") as err:
        load_recipe(ROOT / "examples/devices.yaml")
    assert "slimbert deploy" in err.value.hint


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\xff", "name: caf\xe9\n".encode("latin-1")])
def test_a_binary_or_non_utf8_recipe_is_a_recipe_error_naming_the_file(tmp_path, content):
    """It used to be a UnicodeDecodeError traceback and exit 1."""
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(path) in err.value.message and "not a UTF-8 text file" in err.value.message
    assert "UTF-8" in err.value.hint


def test_the_ci_example_keys_its_run_cache_on_the_library_versions_too():
    """A cache keyed on the recipe and data only restored artifacts made with other libraries."""
    workflow = yaml.safe_load((ROOT / "examples/ci/github-actions-gate.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    assert "runs/" in cache["with"]["path"]
    assert "pyproject.toml" in cache["with"]["key"] and "recipes/model.yaml" in cache["with"]["key"]
