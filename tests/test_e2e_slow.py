"""End to end on the real embedded default (MiniLM-L6 + rt-snippets), shortened.

Opt-in (`pytest -m slow`): it uses the assets in the user's real cache and skips when they
are not there (fetch them once with `slimbert assets fetch`), so tests never download.
"""

import json
import os
from pathlib import Path

import pytest

from slimbert.assets import ASSETS, cache_root

pytestmark = pytest.mark.slow


@pytest.fixture
def real_cache(monkeypatch):
    cache = Path(os.environ.get("SLIMBERT_E2E_CACHE", Path.home() / ".cache" / "slimbert"))
    monkeypatch.setenv("SLIMBERT_CACHE", str(cache))
    missing = [a for a in ASSETS.values() if not a.is_cached()]
    if missing:
        pytest.skip(f"assets not cached in {cache_root()}: run `slimbert assets fetch` first")
    return cache


def test_default_recipe_shortened_on_real_assets(real_cache, tmp_path):
    from slimbert.pipeline import run_recipe
    from slimbert.recipe import load_recipe, recipe_from_dict

    data = load_recipe().to_dict()
    data["dataset"]["limit"] = 1500
    for stage in data["stages"]:
        if stage["type"] in ("finetune", "distill"):  # as examples/ci-smoke.yaml
            stage.update(epochs=2, lr=1e-4, patience=0)
        if stage["type"] == "bench":
            stage.update(budget_s=0.2, min_iters=3, batch_sizes=[1, 8])
    result = run_recipe(recipe_from_dict(data), tmp_path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {r["artifact"]: r for r in report["rows"]}
    assert set(rows) == {"teacher", "teacher-onnx", "student", "student-onnx", "student-int8"}
    assert rows["teacher"]["accuracy"]["accuracy"] > 0.75
    assert rows["student-int8"]["size_mb"] < rows["student-onnx"]["size_mb"] / 3
    assert result.artifact("student").manifest.metrics["teacher_layers"] == [0, 2, 4]
