"""benchmarks/gpu_serving.py on CPU: the trimmed bench a short device call runs, a student-only run."""

import json

import gpu_serving
import pytest

from slimbert.recipe import recipe_from_dict
from tests.conftest import build_tiny_bert


def test_defaults_are_the_full_bench():
    args = gpu_serving.parse_args([])
    assert args.batch_sizes == [1, 8, 32]
    assert args.targets == gpu_serving.TORCH_TARGETS + gpu_serving.ONNX_TARGETS
    assert gpu_serving.timing_overrides(args) == {"batch_sizes": [1, 8, 32], "budget_s": 3.0}


def test_the_trimming_options_reach_the_bench_stage(tmp_path, sentiment_csv):
    run = tmp_path / "run"
    build_tiny_bert(run / "student", num_labels=2)  # packed: no teacher
    (run / "recipe.json").write_text(json.dumps({"seed": 0, "dataset": {"source": str(sentiment_csv)}}))
    args = gpu_serving.parse_args(["--batch-sizes", "1", "32", "--no-sweep", "--no-recheck",
                                   "--budget-s", "1", "--targets", "torch-cuda", "torch-cuda-graph-fp16"])
    timing = gpu_serving.timing_overrides(args)
    recipe = gpu_serving.trained_recipe(run, args.targets, False, timing)
    bench = recipe["stages"][-1]
    assert bench["artifacts"] == [str((run / "student").resolve())]
    assert bench["reference"] == str((run / "student").resolve())
    assert bench["batch_sizes"] == [1, 32] and bench["sweep_seq_lens"] is None and bench["recheck"] is False
    config = recipe_from_dict(recipe, str(run / "recipe.json")).stages[-1].config  # a valid recipe
    assert config.budget_s == 1 and config.targets == ["torch-cuda", "torch-cuda-graph-fp16"]


def test_a_folder_with_neither_model_is_refused(tmp_path):
    (tmp_path / "recipe.json").write_text(json.dumps({"seed": 0, "dataset": {"source": "x.csv"}}))
    with pytest.raises(SystemExit, match="not a finished run"):
        gpu_serving.trained_recipe(tmp_path, ["torch-cuda"], False)


@pytest.mark.parametrize("argv, message", [(["--targets", "torch-cuda-grahp"], "unknown target"),
                                           (["--batch-sizes", "0"], "must be positive")])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        gpu_serving.parse_args(argv)
    assert message in capsys.readouterr().err
