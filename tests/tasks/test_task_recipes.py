"""`task:` in a recipe: checked before anything runs, hashed only when it is not the default,
and a sentence-embedding recipe's export stage puts the pooling inside its graph."""

from __future__ import annotations

import numpy as np
import pytest

from slimbert.errors import RecipeError
from slimbert.pipeline import _inputs_hash, _Run, run_recipe
from slimbert.recipe import recipe_from_dict
from tests.conftest import tiny_recipe
from tests.tasks.test_embedding import build_st_folder

EXPORT = [{"name": "st-onnx", "type": "export-onnx", "input": "model"}]


def test_the_default_task_leaves_recipes_and_hashes_as_they_were(tiny_encoder, sentiment_csv, tmp_path):
    base = tiny_recipe(tiny_encoder, sentiment_csv, EXPORT)
    plain = recipe_from_dict(base)
    named = recipe_from_dict({**base, "task": "text-classification"})
    other = recipe_from_dict({**base, "task": "sentence-embedding"})
    assert "task" not in plain.to_dict() and other.to_dict()["task"] == "sentence-embedding"

    def stage_hash(recipe):
        return _inputs_hash(_Run(recipe, tmp_path, progress=False), "export-onnx", {}, {"model": "x"})

    assert stage_hash(plain) == stage_hash(named)
    assert stage_hash(other) != stage_hash(plain)  # an embedding export never reuses a classifier's


def test_unknown_task_and_unsupported_stage_fail_when_the_recipe_is_read(tiny_encoder, sentiment_csv):
    with pytest.raises(RecipeError, match="unknown task 'ner'"):
        recipe_from_dict({**tiny_recipe(tiny_encoder, sentiment_csv, EXPORT), "task": "ner"})
    prune = [{"name": "s", "type": "prune"}]
    with pytest.raises(RecipeError, match="'prune' does not run on the sentence-embedding task yet"):
        recipe_from_dict({**tiny_recipe(tiny_encoder, sentiment_csv, prune), "task": "sentence-embedding"})


def test_embedding_recipe_exports_a_graph_that_returns_sentence_embeddings(sentiment_csv, tmp_path):
    from sentence_transformers import SentenceTransformer

    from slimbert.runtimes import get_runtime

    model = build_st_folder(tmp_path / "st", "mean", True)
    recipe = recipe_from_dict({**tiny_recipe(model, sentiment_csv, EXPORT), "task": "sentence-embedding"})
    result = run_recipe(recipe, tmp_path / "run", progress=False)
    folder = result.artifact("st-onnx").path
    assert result.artifact("st-onnx").manifest.metrics["validation"]["max_abs_diff"] < 1e-4
    texts = ["a good film", "dull and bad"]
    reference = SentenceTransformer(str(model), device="cpu").encode(texts)
    enc = SentenceTransformer(str(model), device="cpu").tokenize(texts)
    session = get_runtime("ort-cpu").load(folder)
    batch = {k: v.numpy() for k, v in enc.items() if k in session.input_names}
    np.testing.assert_allclose(session.run(batch), reference, atol=1e-4)
    np.testing.assert_allclose(SentenceTransformer(str(folder), device="cpu", backend="onnx").encode(texts),
                               reference, atol=1e-4)


def test_embedding_recipe_distils_a_student_that_follows_the_teacher(sentiment_csv, tmp_path):
    """distill -> export on the embedding task: the student is a sentence-transformers folder of
    half the depth, selected on dev fidelity, and its ONNX graph returns its embeddings."""
    from sentence_transformers import SentenceTransformer

    model = build_st_folder(tmp_path / "st", "mean", True)
    stages = [{"name": "student", "type": "distill", "epochs": 3, "lr": 1e-3, "batch_size": 16,
               "patience": 0},
              {"name": "student-onnx", "type": "export-onnx", "input": "student"}]
    recipe = recipe_from_dict({**tiny_recipe(model, sentiment_csv, stages), "task": "sentence-embedding"})
    result = run_recipe(recipe, tmp_path / "run", progress=False)
    metrics = result.artifact("student").manifest.metrics
    assert metrics["teacher_layers"] == [0, 2] and metrics["pooling"]["normalize"] is True
    history = [h["dev_cosine"] for h in metrics["history"]]
    assert max(history) > history[0] or history[0] > 0.99  # training moved it towards the teacher
    assert 0 < metrics["test"]["cosine"] <= 1 and 0 <= metrics["test"]["recall_at_10"] <= 1
    student = result.artifact("student").path
    texts = ["a good film", "dull and bad"]
    ours = SentenceTransformer(str(student), device="cpu").encode(texts)
    assert ours.shape == (2, 32)
    onnx = SentenceTransformer(str(result.artifact("student-onnx").path), device="cpu", backend="onnx")
    np.testing.assert_allclose(onnx.encode(texts), ours, atol=1e-4)


def test_embedding_distill_refuses_classification_settings(sentiment_csv, tmp_path):
    from slimbert.errors import SlimbertError

    model = build_st_folder(tmp_path / "st", "mean", True)
    stages = [{"name": "student", "type": "distill", "metric": "macro_f1"}]
    recipe = recipe_from_dict({**tiny_recipe(model, sentiment_csv, stages), "task": "sentence-embedding"})
    with pytest.raises(SlimbertError, match="classification metric"):
        run_recipe(recipe, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "student").exists()


def test_embedding_bench_scores_rows_against_the_teacher_and_the_gate_pairs_them(sentiment_csv, tmp_path):
    """bench on the embedding task: every row's cosine, recall@10 and kNN accuracy against the
    reference row's embeddings, per example; the gate bootstraps them (McNemar for kNN's 0/1)."""
    from click.testing import CliRunner

    from slimbert.bench.report import load_report
    from slimbert.cli import main

    model = build_st_folder(tmp_path / "st", "mean", True)
    stages = [{"name": "teacher-onnx", "type": "export-onnx", "input": "model"},
              {"name": "student", "type": "distill", "epochs": 1, "lr": 1e-3, "batch_size": 16,
               "patience": 0},
              {"name": "student-onnx", "type": "export-onnx", "input": "student"},
              {"name": "student-int8", "type": "quantize-onnx", "input": "student-onnx", "mode": "dynamic",
               "scheme_timing_rounds": 1},
              {"name": "bench", "type": "bench",
               "artifacts": ["teacher-onnx", "student", "student-onnx", "student-int8"],
               "reference": "teacher-onnx", "batch_sizes": [1], "seq_len": 16, "budget_s": 0.05,
               "recheck": False}]
    recipe = recipe_from_dict({**tiny_recipe(model, sentiment_csv, stages), "task": "sentence-embedding"})
    result = run_recipe(recipe, tmp_path / "run", progress=False)
    report_path = result.artifact("bench").path / "report.json"
    report = load_report(report_path)
    rows = {r.artifact: r for r in report.rows}
    assert report.task == "sentence-embedding"
    assert set(rows) == {"teacher-onnx", "student", "student-onnx", "student-int8"}
    n = report.dataset["examples"]
    teacher = rows["teacher-onnx"]
    assert teacher.accuracy["cosine"] == pytest.approx(1.0) and teacher.accuracy["recall_at_10"] == 1.0
    for row in rows.values():
        assert set(row.example_scores) == {"cosine", "recall_at_10", "knn_accuracy"}
        assert row.predictions is None
        assert all(len(v) == n for v in row.example_scores.values())
        assert row.accuracy["cosine"] == pytest.approx(np.mean(row.example_scores["cosine"]))
    # the PyTorch student and its ONNX graph give the same embeddings
    torch_cosine, onnx_cosine = rows["student"].accuracy["cosine"], rows["student-onnx"].accuracy["cosine"]
    assert torch_cosine == pytest.approx(onnx_cosine, abs=1e-4)
    # INT8 of an embedding graph: its schemes and tolerance judged on cosine to the fp32 embeddings
    quant = result.artifact("student-int8").manifest.metrics
    assert quant["dev_metric"] == "cosine" and quant["dev_accuracy_fp32"] == pytest.approx(1.0)
    assert quant["tolerance_met"] and len(quant["schemes"]["tried"]) == 8
    assert rows["student-int8"].served_batch == 1 and 0 < rows["student-int8"].batched_agreement <= 1 + 1e-6
    assert abs(rows["student-int8"].accuracy["cosine"] - onnx_cosine) < 0.05
    markdown = (result.artifact("bench").path / "report.md").read_text()
    assert "cosine fidelity" in markdown and "neighbour recall@10" in markdown and "macro-F1" not in markdown

    def gate(*args):
        return CliRunner().invoke(main, ["-q", "gate", "--baseline", str(report_path), "--baseline-artifact",
                                         "teacher-onnx", "--candidate-artifact", "student-onnx", *args])

    graded = gate("--max-drop", "100", "--point-estimate")
    assert graded.exit_code == 0, graded.output
    assert "cosine fidelity" in graded.output and "paired bootstrap test of no drop" in graded.output
    strict = gate("--metric", "cosine", "--max-drop", "0")
    drop = 100 * (1 - rows["student-onnx"].accuracy["cosine"])
    assert strict.exit_code == (1 if drop > 1e-6 else 0), strict.output
    knn = gate("--metric", "knn_accuracy", "--max-drop", "100", "--point-estimate")
    assert knn.exit_code == 0 and "McNemar test" in knn.output, knn.output
    wrong = gate("--metric", "accuracy")
    assert wrong.exit_code == 2 and "knn_accuracy" in wrong.output and "Traceback" not in wrong.output
