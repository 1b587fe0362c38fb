"""The prune stage through the recipe engine: methods, recovery from a named teacher, caching."""

import pytest

from slimbert.compress.prune import PruneConfig, RecoveryConfig
from slimbert.errors import RecipeError
from slimbert.pipeline import run_recipe
from slimbert.recipe import recipe_from_dict
from tests.conftest import tiny_recipe

FAST_TRAIN = {"lr": 1e-3, "batch_size": 16, "patience": 0}


def stages():
    return [
        {"type": "finetune", "name": "teacher", "epochs": 8, **FAST_TRAIN},
        {"type": "distill", "name": "student", "epochs": 3, **FAST_TRAIN},
        {"type": "prune", "name": "pruned", "input": "student", "method": "structured",
         "heads_fraction": 0.5, "ffn_fraction": 0.5,
         "recovery": {"teacher": "teacher", "epochs": 3, **FAST_TRAIN}},
        {"type": "prune", "name": "pruned-vocab", "method": "vocab"},
        {"type": "export-onnx", "name": "pruned-onnx"},
        {"type": "prune", "name": "sparse", "input": "teacher", "method": "magnitude",
         "sparsity": 0.5, "schedule": "gradual", "recovery": {"epochs": 2, **FAST_TRAIN}},
        {"type": "prune", "name": "moved", "input": "teacher", "method": "movement", "scope": "per-layer",
         "sparsity": 0.5, "schedule": "gradual", "recovery": {"epochs": 3, **FAST_TRAIN}},
        {"type": "export-onnx", "name": "moved-onnx"},
    ]


@pytest.fixture(scope="module")
def run(tiny_encoder, sentiment_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages()))
    return out, recipe, run_recipe(recipe, out, progress=False)


def test_structured_pruning_recovers_from_the_named_teacher(run):
    out, _, result = run
    manifest = result.artifact("pruned").manifest
    assert set(manifest.parents) == {"student", "teacher"}  # the teacher is a cached input too
    m = manifest.metrics
    assert m["recovery"]["teacher"] == str(out / "teacher")
    report = m["sparsity_report"]
    assert report["before"]["heads"] == 8 and report["after"]["heads"] == 4
    assert report["after"]["ffn_neurons"] == 64 and report["after"]["params"] < report["before"]["params"]
    assert m["test"]["accuracy"] >= 0.9 and m["retention"] >= 0.95
    assert result.artifact("pruned-onnx").manifest.metrics["validation"]["max_abs_diff"] < 1e-3


def test_vocab_pruning_composes_and_records_rows(run):
    _, _, result = run
    m = result.artifact("pruned-vocab").manifest.metrics
    assert m["embedding_rows_after"] <= m["embedding_rows_before"]
    assert m["test"] == m["test_before"]  # lossless on the task's own texts
    assert m["sparsity_report"]["after"]["heads"] == 4  # kept the structured pruning


def test_gradual_magnitude_pruning_reaches_its_sparsity(run):
    _, _, result = run
    m = result.artifact("sparse").manifest.metrics
    assert m["prunable_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert m["sparsity_at_best_checkpoint"] == pytest.approx(0.5, abs=0.01)  # picked after the ramp
    assert m["sparsity_report"]["after"]["zeros"] > 0.3 * m["sparsity_report"]["after"]["params"]
    assert m["recovery"]["teacher"].endswith("teacher")  # the unpruned input by default


def test_movement_pruning_learns_its_masks_during_recovery(run):
    _, _, result = run
    m = result.artifact("moved").manifest.metrics
    assert m["criterion"] == "movement" and m["prunable_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert m["test"]["accuracy"] >= 0.9  # the tiny task survives half its encoder weights
    assert result.artifact("moved-onnx").manifest.metrics["validation"]["max_abs_diff"] < 1e-3


def test_rerun_reuses_every_prune_stage(run):
    out, recipe, _ = run
    again = run_recipe(recipe, out, progress=False)
    assert {s.status for s in again.stages} == {"reused"}


def test_unknown_teacher_and_bad_settings_are_clear_errors(tiny_encoder, sentiment_csv, tmp_path):
    bad = [{"type": "prune", "name": "p", "method": "structured", "recovery": {"teacher": "later"}},
           {"type": "finetune", "name": "later"}]
    with pytest.raises(RecipeError) as err:  # at parse time, before any training
        recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, bad))
    assert "'later'" in err.value.message and "earlier stages: none" in err.value.message
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, [
            {"type": "prune", "method": "structured", "heads_fraction": 1.0}]))
    assert "heads_fraction must be in [0, 1)" in err.value.message
    with pytest.raises(ValueError, match=r"vocab does not use sparsity \(sparsity: magnitude/movement"):
        PruneConfig(method="vocab", sparsity=0.9)  # was silently ignored
    with pytest.raises(ValueError, match="sparsity 0 prunes nothing"):
        PruneConfig(method="magnitude", sparsity=0.0)
    with pytest.raises(ValueError, match="both 0"):
        PruneConfig(method="structured", heads_fraction=0.0, ffn_fraction=0.0)
    with pytest.raises(ValueError, match="gradual"):
        PruneConfig(method="magnitude", schedule="gradual")
    assert PruneConfig(recovery=RecoveryConfig()).recovery.epochs == 2


def test_compress_command_prunes_and_reports_bad_settings_cleanly(tiny_classifier, sentiment_csv, tmp_path):
    import json

    from click.testing import CliRunner

    from slimbert.cli import main

    common = ["-q", "compress", "--stage", "prune", "--model", str(tiny_classifier),
              "--dataset", str(sentiment_csv), "--max-length", "32"]
    result = CliRunner().invoke(main, [*common, "--set", "method=structured", "--set", "heads_fraction=0.5",
                                       "--set", "importance=magnitude", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "p" / "prune" / "manifest.json").read_text())["metrics"]
    assert metrics["sparsity_report"]["after"]["heads"] == 8  # 4 layers x 2 of 4 heads
    result = CliRunner().invoke(main, [*common, "--set", "method=structured", "--set", "heads_fraction=1.0",
                                       "--out", str(tmp_path / "q")])
    assert result.exit_code == 2 and "heads_fraction must be in [0, 1)" in result.output
    assert "Traceback" not in result.output


def test_recovery_of_a_vocab_pruned_student_feeds_the_teacher_its_own_token_ids(tiny_classifier, tmp_path):
    import numpy as np

    from slimbert.compress.prune import prune
    from slimbert.data import Split, TextClassificationData, encode_split
    from slimbert.models import load_classifier, load_tokenizer
    from slimbert.runtimes.torch_runtime import predict_logits
    from tests.conftest import make_sentences

    rows = [(t, lab) for t, lab in make_sentences(200, seed=3) if "superb" not in t and "cast" not in t]
    split = Split([t for t, _ in rows], np.array([int(lab == "pos") for _, lab in rows]))
    data = TextClassificationData({"train": split, "dev": split, "test": split}, ["neg", "pos"])
    small = tmp_path / "small"
    m = prune(tiny_classifier, data, PruneConfig(method="vocab", keep_ascii_chars=False), small,
              tmp_path / "w1", max_length=32, progress=False)
    assert m["embedding_rows_after"] == m["embedding_rows_before"] - 2  # superb, cast
    cfg = PruneConfig(method="structured", heads_fraction=0.25, ffn_fraction=0.25,
                      recovery=RecoveryConfig(epochs=1, batch_size=16))
    prune(small, data, cfg, tmp_path / "out", tmp_path / "w2", max_length=32, progress=False,
          teacher_dir=tiny_classifier)
    cached = np.load(tmp_path / "w2" / "teacher_logits.npy")
    teacher_ids = encode_split(load_tokenizer(tiny_classifier), split, 32)
    expected = predict_logits(load_classifier(tiny_classifier), teacher_ids)
    np.testing.assert_allclose(cached, expected, atol=1e-5)
