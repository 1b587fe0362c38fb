"""Training under a multi-process launch: DDP over gloo on CPU, mixed precision, validation.

Two processes started by torchrun train the tiny classifier through ``train()``. Their
weights must be bitwise identical (DDP keeps the replicas in sync) and, with dropout off,
equal to one process training on the whole batches up to float rounding: each process took
its own rows, and the averaged gradient is the whole batch's, also for the one batch that
splits 4 + 3 (its process losses are weighted; without the weights the test fails).
"""

from __future__ import annotations

import json

import pytest
import torch

from slimbert.compress.trainer import TrainConfig, shard
from tests.compress.ddp_worker import STEPS, run
from tests.conftest import launch


@pytest.fixture(scope="module")
def single(tiny_classifier, sentiment_csv, tmp_path_factory):
    """The one-process reference run (the autouse fixture is function-scoped: force CPU here)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACCELERATE_USE_CPU", "1")
        return run(tiny_classifier, sentiment_csv, tmp_path_factory.mktemp("single") / "work")


@pytest.fixture(scope="module")
def two_processes(tiny_classifier, sentiment_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = launch(2, ["-m", "tests.compress.ddp_worker", str(tiny_classifier), str(sentiment_csv), str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from safetensors.torch import load_file

    return [(load_file(out / f"rank{r}.safetensors"), json.loads((out / f"rank{r}.json").read_text()))
            for r in (0, 1)]


def test_shard_weights_make_the_gradient_the_whole_batches():
    import numpy as np

    index = np.arange(7)
    parts = [shard(index, r, 2) for r in (0, 1)]
    assert [list(p) for p, _ in parts] == [[0, 2, 4, 6], [1, 3, 5]]
    assert sum(w for _, w in parts) / 2 == pytest.approx(1.0)  # DDP's mean of the weights
    assert [w for _, w in parts] == [pytest.approx(8 / 7), pytest.approx(6 / 7)]
    assert shard(index[:1], 1, 2)[1] == 0.0  # nothing left: one row at weight 0
    assert shard(index, 0, 1)[0] is index


def test_two_gloo_processes_keep_identical_replicas(two_processes, tiny_classifier):
    from safetensors.torch import load_file

    (w0, s0), (w1, s1) = two_processes
    assert s0["world_size"] == s1["world_size"] == 2
    assert s0["model_seen_by_loss"] == "DistributedDataParallel" and s0["rows_per_process"] == 4
    assert s0["steps"] == STEPS
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "replicas drifted apart"
    initial = load_file(tiny_classifier / "model.safetensors")
    moved = [k for k in initial if not torch.allclose(initial[k], w0[k], atol=1e-4)]
    assert len(moved) > len(initial) // 2 and not torch.equal(w0["extra.scale"], torch.ones(()))
    assert s0["resumed_from_step"] == STEPS and s0["resume_is_identical"] and s1["resume_is_identical"]
    assert s0["dev"] == s1["dev"] and s0["losses"] == s1["losses"]


def test_two_processes_train_like_one_on_the_whole_batches(two_processes, single):
    (w0, s0), _ = two_processes
    weights, summary = single
    assert summary["model_seen_by_loss"] == "ScaledLogits"  # the bare trained module
    assert summary["rows_per_process"] == 8 and summary["resume_is_identical"]
    for k, v in weights.items():
        torch.testing.assert_close(w0[k], v, rtol=0, atol=2e-5, msg=k)
    assert s0["losses"] == pytest.approx(summary["losses"], rel=1e-4)  # the whole batch's mean loss
    assert s0["dev"] == summary["dev"]


def test_mixed_precision_is_validated():
    from slimbert.errors import RecipeError
    from slimbert.recipe import recipe_from_dict

    assert TrainConfig().mixed_precision == "no"
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    stages = [{"type": "finetune", "mixed_precision": "half"}]
    with pytest.raises(RecipeError, match="mixed_precision"):
        recipe_from_dict({"name": "x", "model": "m", "dataset": {"source": "d.csv"}, "stages": stages})


def test_fp16_on_cpu_is_refused_with_a_hint(tiny_classifier, sentiment_csv, tmp_path):
    from slimbert.errors import RecipeError

    with pytest.raises(RecipeError, match="fp16 needs a CUDA GPU") as err:
        run(tiny_classifier, sentiment_csv, tmp_path / "work", mixed_precision="fp16")
    assert "bf16" in err.value.hint


def test_bf16_on_cpu_trains(tiny_classifier, sentiment_csv, tmp_path, single):
    weights, summary = run(tiny_classifier, sentiment_csv, tmp_path / "work", mixed_precision="bf16")
    fp32, _ = single
    assert all(map(torch.isfinite, map(torch.tensor, summary["losses"])))
    assert summary["dtype"] == "torch.float32"  # autocast computes in bf16; weights stay fp32
    assert any(not torch.equal(weights[k], fp32[k]) for k in fp32)  # bf16 did take effect ...
    torch.testing.assert_close(weights["classifier.weight"], fp32["classifier.weight"],
                               rtol=0, atol=5e-2)  # ... and trained to nearly the same place


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_on_cuda(tiny_classifier, sentiment_csv, tmp_path, monkeypatch, single, precision):
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    weights, summary = run(tiny_classifier, sentiment_csv, tmp_path / "work", mixed_precision=precision)
    fp32, _ = single
    assert summary["device"] == "cpu" and summary["dtype"] == "torch.float32"  # handed back as given
    assert all(map(torch.isfinite, map(torch.tensor, summary["losses"])))
    assert summary["steps"] == STEPS and summary["resume_is_identical"]
    torch.testing.assert_close(weights["classifier.weight"], fp32["classifier.weight"], rtol=0, atol=5e-2)
