from pathlib import Path

from slimbert.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_mobile_example_extends_the_default_so_its_stages_are_reused():
    default = load_recipe(ROOT / "examples/default.yaml").to_dict()
    mobile = load_recipe(ROOT / "examples/mobile.yaml").to_dict()
    assert mobile["dataset"] == default["dataset"] and mobile["model"] == default["model"]
    assert mobile["stages"][:5] == default["stages"][:5]
    assert [s["type"] for s in mobile["stages"][5:]] == [
        "export-ort-mobile", "export-executorch", "export-executorch", "bench"]
