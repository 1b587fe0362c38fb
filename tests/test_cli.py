"""The command line: help that teaches, errors without tracebacks, exit codes."""

import json

import pytest
import yaml
from click.testing import CliRunner

from slimbert.cli import main
from tests.conftest import tiny_recipe


def invoke(*args):
    return CliRunner().invoke(main, ["-q", *map(str, args)])


@pytest.mark.parametrize("command", [[], ["run"], ["compress"], ["export"], ["bench"], ["assets"]])
def test_help_for_every_command(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_only_working_commands_exist():
    assert set(main.commands) == {"run", "compress", "optimize", "export", "bench", "assets", "gate",
                                  "deploy"}


def write_recipe(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_clean_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_mistyped_recipe_key(tmp_path, tiny_encoder, sentiment_csv):
    data = tiny_recipe(tiny_encoder, sentiment_csv, [{"type": "finetune", "epocs": 1}])
    path = write_recipe(tmp_path, data)
    assert_clean_error(invoke("run", path, "--out", tmp_path / "o"), "'epocs'", str(path), "epochs")
    assert not (tmp_path / "o").exists()


def test_missing_dataset_file_and_column(tmp_path, tiny_encoder, sentiment_csv):
    stages = [{"type": "finetune", "epochs": 1}]
    data = tiny_recipe(tiny_encoder, tmp_path / "missing.csv", stages)
    assert_clean_error(invoke("run", write_recipe(tmp_path, data), "--out", tmp_path / "o"),
                       "missing.csv", "does not exist")
    assert not (tmp_path / "o").exists()  # input validation fails before the run folder is made
    data = tiny_recipe(tiny_encoder, sentiment_csv, stages, label="stars")
    assert_clean_error(invoke("run", write_recipe(tmp_path, data), "--out", tmp_path / "o"), "'stars'")
    assert not (tmp_path / "o").exists()


def test_bad_model_paths(tmp_path, sentiment_csv):
    stages = [{"type": "finetune", "epochs": 1}]
    data = tiny_recipe(tmp_path / "nothing-here", sentiment_csv, stages)
    assert_clean_error(invoke("run", write_recipe(tmp_path, data), "--out", tmp_path / "o"), "does not exist")
    (tmp_path / "not-a-model").mkdir()
    data = tiny_recipe(tmp_path / "not-a-model", sentiment_csv, stages)
    assert_clean_error(invoke("run", write_recipe(tmp_path, data), "--out", tmp_path / "o"), "config.json")


def test_offline_uncached_hub_id(tmp_path, sentiment_csv):
    data = tiny_recipe("acme/never-downloaded", sentiment_csv, [{"type": "finetune", "epochs": 1}])
    data["model"] = "acme/never-downloaded"
    assert_clean_error(invoke("run", write_recipe(tmp_path, data), "--out", tmp_path / "o"),
                       "not in the Hugging Face cache")


def test_unwritable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SLIMBERT_CACHE", str(blocker / "cache"))
    assert_clean_error(invoke("assets", "fetch", "minilm-l6"), "not writable", "SLIMBERT_CACHE")


def test_compress_export_bench_commands(tmp_path, tiny_encoder, sentiment_csv):
    common = ["--dataset", sentiment_csv, "--max-length", 32]
    result = invoke("compress", "--stage", "finetune", "--model", tiny_encoder, *common,
                    "--set", "epochs=8", "--set", "lr=1e-3", "--set", "batch_size=16",
                    "--out", tmp_path / "c")
    assert result.exit_code == 0, result.output
    teacher = tmp_path / "c" / "finetune"
    assert json.loads((teacher / "manifest.json").read_text())["metrics"]["test"]["accuracy"] > 0.8
    assert "test acc " in result.output  # the stage's headline under its row
    result = invoke("compress", "--stage", "finetune", "--model", teacher, "--out", tmp_path / "c")
    assert_clean_error(result, "would replace its own input")
    result = invoke("compress", "--stage", "distill", "--model", teacher, *common,
                    "--set", "layers=[0,3]", "--set", "epochs=1", "--out", tmp_path / "d")
    assert result.exit_code == 0, result.output
    result = invoke("export", teacher, "--format", "onnx-int8", *common, "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e" / "onnx-int8" / "model.onnx").is_file()
    result = invoke("bench", teacher, tmp_path / "e" / "onnx", tmp_path / "e" / "onnx-int8", *common,
                    "--batch-sizes", "1", "--seq-len", "16", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "| onnx-int8 | ort-cpu |" in result.output
    result = invoke("bench", teacher, *common, "--seq-len", "4096", "--out", tmp_path / "b2")
    assert_clean_error(result, "beyond", "maximum of 64 positions")
    result = invoke("export", teacher, "--format", "onnx-int8-static", "--tolerance", "1", *common,
                    "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "s" / "onnx-int8-static" / "manifest.json").read_text())["metrics"]
    assert metrics["mode"] == "static" and metrics["repair"]["tolerance_points"] == 1.0


def test_a_run_artifact_is_benched_on_the_split_it_was_made_with(tmp_path, tiny_classifier, sentiment_csv,
                                                                 monkeypatch):
    """Without --dataset, bench must not score a run's model on its own training sentences."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "reviews.csv").write_text(sentiment_csv.read_text())
    recipe = {"name": "r", "model": str(tiny_classifier), "seed": 3,
              "dataset": {"source": "reviews.csv", "max_length": 32, "split": {"dev": 0.25, "test": 0.3}},
              "stages": [{"type": "export-onnx", "name": "onnx"}]}
    assert invoke("run", write_recipe(project, recipe), "--out", tmp_path / "run").exit_code == 0
    recorded = json.loads((tmp_path / "run" / "onnx" / "manifest.json").read_text())["extra"]["dataset"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the recipe's relative file name must still be found
    fast = ["--batch-sizes", "1", "--seq-len", "16"]
    result = invoke("bench", tmp_path / "run" / "onnx", *fast, "--budget-s", "0.01", "--out", "b")
    assert result.exit_code == 0, result.output
    dataset = json.loads((elsewhere / "b" / "report.json").read_text())["dataset"]
    assert dataset["fingerprint"] == recorded["fingerprint"]
    assert dataset["examples"] == recorded["sizes"]["test"] == 120
    assert json.loads((elsewhere / "b" / "report.json").read_text())["config"]["budget_s"] == 0.01
    result = invoke("bench", tmp_path / "run" / "onnx", *fast, "--dataset", sentiment_csv,
                    "--max-length", 32, "--out", "b2")  # an explicit dataset is the user's choice
    assert result.exit_code == 0, result.output
    assert json.loads((elsewhere / "b2" / "report.json").read_text())["dataset"]["examples"] == 80


@pytest.mark.parametrize(("args", "fragment"), [
    (["bench", "ARTIFACT", "--batch-sizes", "1,x"], "'1,x' is not a comma-separated list of integers"),
    (["bench", "ARTIFACT", "--sweep-seq-lens", "16,abc"], "not a comma-separated list of integers"),
    (["bench", "ARTIFACT", "--batch-sizes", "0"], "has a number below 1"),
    (["bench", "ARTIFACT", "--threads", "-1"], "--threads"),
    (["bench", "ARTIFACT", "--seq-len", "0"], "--seq-len"),
    (["export", "ARTIFACT", "--opset", "5"], "--opset"),
    (["export", "ARTIFACT", "--format", "onnx", "--tolerance", "0.5"], "does not quantize"),
])
def test_bad_option_values_are_usage_errors_naming_the_option(args, fragment, tiny_classifier, tmp_path):
    result = invoke(*[tiny_classifier if a == "ARTIFACT" else a for a in args], "--out", tmp_path / "o")
    assert_clean_error(result, fragment)
    assert not (tmp_path / "o").exists()


def test_exporting_an_exported_folder_names_the_pytorch_one(tmp_path, tiny_classifier):
    import shutil

    onnx = shutil.copytree(tiny_classifier, tmp_path / "student-onnx")
    (onnx / "model.safetensors").rename(onnx / "model.onnx")  # what an export folder holds instead
    result = invoke("export", onnx, "--max-length", 32, "--out", tmp_path / "o")
    assert_clean_error(result, "holds an exported model (model.onnx)", "needs the PyTorch model")


def test_sigterm_stops_like_ctrl_c_keeping_finished_work(tmp_path, monkeypatch):
    """A CI timeout or `kill` must clean up as Ctrl-C does, not die mid-write."""
    import os
    import signal
    import time

    import slimbert.pipeline

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal interrupts this
        raise AssertionError("SIGTERM did not interrupt the run")

    monkeypatch.setattr(slimbert.pipeline, "run_recipe", killed)
    before = signal.getsignal(signal.SIGTERM)
    result = invoke("run", "--out", tmp_path / "o")
    assert result.exit_code == 130, result.output
    assert "interrupted: finished stages are kept" in result.output
    assert signal.getsignal(signal.SIGTERM) is before  # restored for the caller


def test_bad_set_syntax_and_unknown_setting(tmp_path, tiny_encoder):
    result = invoke("compress", "--stage", "finetune", "--model", tiny_encoder, "--set", "epochs")
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    result = invoke("compress", "--stage", "finetune", "--model", tiny_encoder, "--set", "epoch=2",
                    "--out", tmp_path / "x")
    assert_clean_error(result, "'epoch'", "epochs", "in the --set options")
    result = invoke("compress", "--stage", "finetune", "--model", tiny_encoder, "--set", "epochs=three",
                    "--out", tmp_path / "x")
    assert_clean_error(result, "--set epochs must be int")


def test_list_targets_says_why_gpu_targets_are_missing():
    result = invoke("bench", "--list-targets")
    assert result.exit_code == 0
    assert "ort-cpu" in result.output and "available" in result.output
    assert "ort-tensorrt" in result.output


def test_assets_list():
    result = invoke("assets", "list")
    assert result.exit_code == 0 and "minilm-l6" in result.output and "rt-snippets" in result.output


def test_list_targets_lists_the_mobile_targets():
    result = invoke("bench", "--list-targets")
    assert result.exit_code == 0
    assert "ort-mobile" in result.output and "executorch-xnnpack" in result.output


def test_export_ort_mobile_format(tmp_path, tiny_classifier, sentiment_csv):
    result = invoke("export", tiny_classifier, "--format", "ort-mobile", "--dataset", sentiment_csv,
                    "--max-length", 32, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert {"model.ort", "required_operators.config"} <= {p.name for p in (tmp_path / "ort-mobile").iterdir()}


def test_set_reads_values_as_a_recipe_does():
    from slimbert.cli_options import parse_sets as _parse_sets

    assert _parse_sets(("scope=2:4", "layers=[0,3]", "lr=5e-5", "epochs=2")) == {
        "scope": "2:4", "layers": [0, 3], "lr": "5e-5", "epochs": 2}


def test_a_dry_run_names_a_reused_file_that_no_longer_matches(tmp_path, tiny_classifier, sentiment_csv):
    recipe = write_recipe(tmp_path, tiny_recipe(tiny_classifier, sentiment_csv,
                                                [{"type": "export-onnx", "name": "onnx"}]))
    assert invoke("run", recipe, "--out", tmp_path / "run").exit_code == 0
    with open(tmp_path / "run" / "onnx" / "model.onnx", "r+b") as fh:
        fh.truncate(100)
    result = invoke("run", recipe, "--out", tmp_path / "run", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "run    (onnx/model.onnx does not match its recorded sha256)" in result.output


def test_compress_stages_come_from_the_registry_qat_included(tmp_path, tiny_classifier, sentiment_csv):
    from slimbert.adhoc import compress_stages

    assert set(compress_stages()) == {"finetune", "distill", "prune", "quantize-torch", "qat"}
    help_text = CliRunner().invoke(main, ["compress", "--help"]).output
    assert "qat" in help_text and "export-onnx" not in help_text
    wrong = invoke("compress", "--stage", "export-onnx", "--model", tiny_classifier)
    assert_clean_error(wrong, "'export-onnx'")
    result = invoke("compress", "--stage", "qat", "--model", tiny_classifier, "--dataset", sentiment_csv,
                    "--max-length", 32, "--set", "epochs=1", "--set", "batch_size=16", "--set", "patience=0",
                    "--set", "calibration_batches=2", "--out", tmp_path / "c")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "c" / "qat" / "manifest.json").read_text())
    assert manifest["stage_type"] == "qat" and manifest["kind"] == "onnx"
    assert (tmp_path / "c" / "qat" / "model.onnx").is_file()


def test_settings_errors_name_the_option_typed():
    from slimbert.cli_options import option_name

    assert option_name("stages[0] (prune).recovery.epochs") == "--set recovery.epochs"
    assert option_name("stages[0] (prune)") == "the --set options"
    assert option_name("dataset.max_length") == "--max-length"
    assert option_name("dataset.source") == "--dataset"
    assert option_name("seed") == "--seed"


def test_an_internal_error_exits_3_with_its_traceback(monkeypatch):
    """A bug is not a failed gate (1) nor bad input (2): CI can tell the three apart."""
    import slimbert.api

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(slimbert.api, "list_targets", broken)
    result = CliRunner().invoke(main, ["bench", "--list-targets"])
    assert result.exit_code == 3, result.output
    assert "RuntimeError: boom" in result.output and "internal error" in result.output
