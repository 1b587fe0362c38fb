"""The one-line stage summaries printed after a command, and their warning."""

from slimbert.artifacts import Manifest, artifact_writer, finish_artifact, read_artifact
from slimbert.summary import stage_headline


def artifact(tmp_path, kind="hf-model", **metrics):
    with artifact_writer(tmp_path / "a") as tmp:
        (tmp / "model.safetensors").write_bytes(b"x" * 2_000_000)
        finish_artifact(tmp, Manifest(kind=kind, stage="prune", stage_type="prune", inputs_hash="h",
                                      metrics=metrics))
    return read_artifact(tmp_path / "a")


def test_a_destructive_prune_is_summarised_and_warned_about(tmp_path):
    headline, warning = stage_headline(artifact(
        tmp_path, test={"accuracy": 0.5875}, test_before={"accuracy": 0.9875},
        params=6_700_000, params_before=17_400_000))
    assert headline == "test acc 98.75% -> 58.75%, params 17.4M -> 6.7M, 2.0 MB"
    assert warning.startswith("prune lost 40.0 points of accuracy")


def test_a_student_names_its_teacher_and_sparsity_is_shown_without_a_warning(tmp_path):
    headline, warning = stage_headline(artifact(
        tmp_path, test={"accuracy": 0.8415}, teacher_test={"accuracy": 0.859},
        prunable_sparsity=0.5, params=17, params_before=17))
    assert headline == "test acc 85.90% (teacher) -> 84.15%, sparsity 50% of prunable weights, 2.0 MB"
    assert warning is None


def test_quantized_and_exported_models_show_dev_accuracy_or_agreement(tmp_path):
    quantized = artifact(tmp_path, dev_accuracy=0.8542, dev_accuracy_fp32=0.8731)
    assert stage_headline(quantized)[0] == "dev acc 87.31% -> 85.42%, 2.0 MB"
    exported = artifact(tmp_path, validation={"max_abs_diff": 5e-6, "agreement": 1.0})
    assert stage_headline(exported)[0] == "max |logit diff| 5.0e-06, 100.00% agree, 2.0 MB"
