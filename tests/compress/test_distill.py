import pytest
import torch

from slimbert.compress.distill import DistillConfig, distill, kd_loss
from slimbert.compress.finetune import FinetuneConfig, finetune
from slimbert.data import DatasetConfig, load_dataset
from slimbert.errors import ModelError


def test_kd_loss_is_zero_for_identical_logits_and_scaled_by_t_squared():
    logits = torch.randn(8, 3)
    assert kd_loss(logits, logits, 2.0).item() == pytest.approx(0, abs=1e-6)
    other = torch.randn(8, 3)
    # at large T the T^2 factor keeps gradients comparable: loss tends to a finite value
    assert kd_loss(other, logits, 1.0).item() > 0
    high_t = kd_loss(other, logits, 100.0).item()
    assert kd_loss(other, logits, 50.0).item() == pytest.approx(high_t, rel=0.05)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, sentiment_csv, tiny_encoder):
    out = tmp_path_factory.mktemp("teacher")
    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    metrics = finetune(tiny_encoder, data, FinetuneConfig(epochs=8, lr=1e-3, batch_size=16, patience=0),
                       out, out / "work", max_length=32, progress=False)
    assert metrics["test"]["accuracy"] >= 0.9
    return out, data


@pytest.mark.parametrize("alpha_hidden", [0.0, 1.0])
def test_distilled_student_keeps_teacher_accuracy(teacher, tmp_path, alpha_hidden):
    teacher_dir, data = teacher
    cfg = DistillConfig(epochs=4, lr=1e-3, batch_size=16, patience=0, alpha_hidden=alpha_hidden)
    metrics = distill(teacher_dir, data, cfg, tmp_path / "s", tmp_path / "work", max_length=32,
                      progress=False)
    assert metrics["teacher_layers"] == [0, 2]
    assert metrics["params"] < metrics["teacher_params"]
    assert metrics["retention"] >= 0.95
    assert (tmp_path / "work" / "teacher_logits.npy").is_file()  # cached for a resumed run


def test_teacher_without_head_is_refused(tiny_encoder, sentiment_csv, tmp_path):
    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    with pytest.raises(ModelError) as err:
        distill(tiny_encoder, data, DistillConfig(), tmp_path / "s", tmp_path / "w", max_length=32)
    assert "no sequence-classification head" in err.value.message and "finetune" in err.value.hint
