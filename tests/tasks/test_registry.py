"""One task registry: names, metrics and stages are checked without importing torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from slimbert.errors import RecipeError
from slimbert.tasks import DEFAULT_TASK, TASKS, get_task
from slimbert.tasks.embedding_metrics import knn_correct, neighbour_recall, spearman


def test_every_task_implementation_loads_and_names_its_outputs():
    for task in TASKS.values():
        impl = task.load()
        assert impl.name == task.name and impl.output_names


def test_unknown_task_and_metric_name_the_fix():
    with pytest.raises(RecipeError, match="known: text-classification, sentence-embedding") as err:
        get_task("sentence-embeddings")
    assert "sentence-embedding" in err.value.hint
    with pytest.raises(RecipeError, match="no metric 'accuracy'"):
        get_task("sentence-embedding").check_metric("accuracy")
    get_task("sentence-embedding").check_metric("recall_at_10")
    assert get_task(DEFAULT_TASK).default_metric == "accuracy"


def test_registry_imports_no_torch():
    code = "import sys, slimbert.tasks; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_classification_scores_are_correctness_per_example():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    scores = get_task(DEFAULT_TASK).load().example_scores(logits, labels=np.array([0, 1, 1]))
    np.testing.assert_array_equal(scores["accuracy"], [1.0, 1.0, 0.0])


def test_neighbour_recall_counts_kept_neighbours_by_hand():
    # points on a line: each one's 2 nearest by angle are known
    angles = np.array([0.0, 0.1, 0.2, 1.0, 1.1])
    teacher = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    moved = teacher.copy()
    moved[4] = [np.cos(0.05), np.sin(0.05)]  # example 4 now sits among 0, 1, 2
    recall = neighbour_recall(moved, teacher, k=2)
    assert recall[4] == 0.0  # its neighbours were 3 and 2; now 0 and 1
    assert recall[3] == 0.5  # its neighbours were 4 and 2; now 2 and one of 0, 1


def test_knn_and_spearman_by_hand():
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    np.testing.assert_array_equal(knn_correct(emb, np.array([0, 0, 1, 1]), k=1), [1, 1, 1, 1])
    np.testing.assert_array_equal(knn_correct(emb, np.array([0, 1, 0, 1]), k=1), [0, 0, 0, 0])
    assert spearman(np.array([0.1, 0.5, 0.9]), np.array([1.0, 2.0, 3.0])) == pytest.approx(1.0)
    assert spearman(np.array([0.1, 0.5, 0.9, 0.2]), np.array([3.0, 2.0, 1.0, 0.0]),
                    index=np.array([0, 1, 2])) == pytest.approx(-1.0)


def test_every_runner_a_task_names_exists_for_a_stage_it_runs():
    from slimbert.stages import STAGES, load_object

    for task in TASKS.values():
        assert set(task.stages) <= set(STAGES)
        for stage_type, runner in task.runners.items():
            assert stage_type in task.stages and callable(load_object(runner))
