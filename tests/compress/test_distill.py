"""Distillation end to end on a tiny teacher: every loss, augmentation, both kinds of student."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

from slimbert.compress.augment import AugmentConfig
from slimbert.compress.distill import DistillConfig, distill
from slimbert.compress.finetune import FinetuneConfig, finetune
from slimbert.data import DatasetConfig, load_dataset
from slimbert.errors import ModelError
from tests.conftest import build_tiny_bert


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, sentiment_csv, tiny_encoder):
    out = tmp_path_factory.mktemp("teacher")
    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    metrics = finetune(tiny_encoder, data, FinetuneConfig(epochs=8, lr=1e-3, batch_size=16, patience=0),
                       out, out / "work", max_length=32, progress=False)
    assert metrics["test"]["accuracy"] >= 0.9
    return out, data


def run(teacher, tmp_path, **settings):
    teacher_dir, data = teacher
    cfg = DistillConfig(**{"epochs": 4, "lr": 1e-3, "batch_size": 16, "patience": 0, **settings})
    return distill(teacher_dir, data, cfg, tmp_path / "s", tmp_path / "work", max_length=32,
                   progress=False)


@pytest.mark.parametrize("losses", [
    {},
    {"alpha_hidden": 1.0},
    {"alpha_hidden": 1.0, "hidden_loss": "mse", "alpha_attention": 1.0},
    {"alpha_attention": 1.0, "augment": AugmentConfig(copies=1)},
], ids=["kd", "hidden-cosine", "hidden-mse+attention", "attention+augment"])
def test_distilled_student_keeps_teacher_accuracy(teacher, tmp_path, losses):
    metrics = run(teacher, tmp_path, **losses)
    assert metrics["teacher_layers"] == [0, 2]
    assert metrics["layer_map"] == [1, 3]  # uniform: the last layer imitates the teacher's last
    assert metrics["params"] < metrics["teacher_params"]
    assert metrics["retention"] >= 0.95
    assert (tmp_path / "work" / "teacher_logits.npy").is_file()  # cached for a resumed run
    augmented = metrics["train_examples"]["augmented"]
    assert (augmented > 0.5 * metrics["train_examples"]["original"]) == ("augment" in losses)


def test_first_k_layers_and_explicit_layer_map(teacher, tmp_path):
    metrics = run(teacher, tmp_path, layers="first-1", layer_map=[2], alpha_hidden=1.0, epochs=1)
    assert metrics["teacher_layers"] == [0] and metrics["layer_map"] == [2]


def test_student_from_a_narrower_pretrained_model_learns_a_projection(teacher, tmp_path):
    small = build_tiny_bert(tmp_path / "small", layers=2, hidden=16, seed=3)
    metrics = run(teacher, tmp_path, student_model=str(small), alpha_hidden=1.0, hidden_loss="mse",
                  alpha_attention=1.0, epochs=12, lr=3e-3)
    assert metrics["teacher_layers"] is None and metrics["layer_map"] == [1, 3]
    assert metrics["test"]["accuracy"] >= 0.85
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert reloaded.config.hidden_size == 16 and reloaded.config.num_hidden_layers == 2
    with safe_open(tmp_path / "s" / "model.safetensors", "pt") as fh:
        assert not [k for k in fh.keys() if "projection" in k]  # noqa: SIM118 (no __iter__)


def test_width_mismatch_with_cosine_loss_is_refused(teacher, tmp_path):
    small = build_tiny_bert(tmp_path / "small", layers=2, hidden=16)
    with pytest.raises(ModelError) as err:
        run(teacher, tmp_path, student_model=str(small), alpha_hidden=1.0)
    assert "16 wide" in err.value.message and "hidden_loss: mse" in err.value.hint


def test_student_with_another_vocabulary_is_refused(teacher, tmp_path):
    other = build_tiny_bert(tmp_path / "other", layers=2, extra_words=("popcorn",))
    with pytest.raises(ModelError) as err:
        run(teacher, tmp_path, student_model=str(other))
    assert "incompatible tokenizers" in err.value.message and str(other) in err.value.message


@pytest.mark.parametrize("settings, message", [
    ({"layers": [0, 9]}, "out of range"),
    ({"layers": []}, "empty"),
    ({"layer_map": [1, 2, 3]}, "3 entries for a student with 2 layers"),
    ({"layer_map": [1, 7], "alpha_hidden": 1.0}, "out of range"),
])
def test_bad_layer_choices_are_refused(teacher, tmp_path, settings, message):
    with pytest.raises(ModelError) as err:
        run(teacher, tmp_path, **settings)
    assert message in err.value.message


@pytest.mark.parametrize("config, settings, message", [
    (DistillConfig, {"temperature": 0}, "temperature must be > 0"),
    (DistillConfig, {"alpha_kd": 0, "alpha_ce": 0}, "not all 0"),
    (DistillConfig, {"layers": "last-2"}, "first-<k>"),
    (AugmentConfig, {"method": "masked-lm"}, "mlm_model"),
    (AugmentConfig, {"copies": 0}, "copies must be >= 1"),
])
def test_bad_settings_are_refused(config, settings, message):
    with pytest.raises(ValueError, match=message):
        config(**settings)


def test_teacher_without_head_is_refused(tiny_encoder, sentiment_csv, tmp_path):
    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    with pytest.raises(ModelError) as err:
        distill(tiny_encoder, data, DistillConfig(), tmp_path / "s", tmp_path / "w", max_length=32)
    assert "no sequence-classification head" in err.value.message and "finetune" in err.value.hint


RESUME_SETTINGS = {"epochs": 2, "lr": 1e-3, "batch_size": 16, "patience": 0, "checkpoint_every": 5,
                   "alpha_hidden": 1.0, "hidden_loss": "mse", "alpha_attention": 1.0}
CHILD = """
import sys
from pathlib import Path
from slimbert.compress.augment import AugmentConfig
from slimbert.compress.distill import DistillConfig, distill
from slimbert.data import DatasetConfig, load_dataset
teacher, student, csv, out = map(Path, sys.argv[1:5])
cfg = DistillConfig(student_model=str(student), augment=AugmentConfig(copies=1), **{settings!r})
data = load_dataset(DatasetConfig(source=str(csv)))
metrics = distill(teacher, data, cfg, out / "s", out / "work", max_length=32, progress=False)
print(metrics["resumed_from_step"])
"""


def test_killed_distillation_resumes_to_the_same_student(teacher, sentiment_csv, tmp_path):
    """SIGKILL mid-training (projection and augmented data included), rerun: same weights."""
    teacher_dir, _ = teacher
    small = build_tiny_bert(tmp_path / "small", layers=2, hidden=16, seed=3)
    script = CHILD.format(settings=RESUME_SETTINGS)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}

    def child(out):
        return subprocess.Popen([sys.executable, "-c", script, str(teacher_dir), str(small),
                                 str(sentiment_csv), str(out)], env=env, stdout=subprocess.PIPE, text=True)

    killed = child(tmp_path / "a")
    checkpoint = tmp_path / "a" / "work" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "training finished before it could be killed"
    assert not (tmp_path / "a" / "s").exists()

    resumed, straight = child(tmp_path / "a"), child(tmp_path / "b")
    resumed_out, _ = resumed.communicate(timeout=300)
    straight_out, _ = straight.communicate(timeout=300)
    assert resumed.returncode == straight.returncode == 0
    assert int(resumed_out.split()[-1]) > 0 and int(straight_out.split()[-1]) == 0

    def weights(folder):
        with safe_open(folder / "s" / "model.safetensors", "pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118

    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
