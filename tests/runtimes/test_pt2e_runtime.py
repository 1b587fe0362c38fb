"""torch-pt2e-cpu: PT2E programs (model.pt2) compiled by Inductor, or eager where it cannot compile."""

import logging

import numpy as np
import pytest

from slimbert.bench.run import default_targets
from slimbert.errors import ExportError
from slimbert.quantize.config import TorchQuantizeConfig
from slimbert.quantize.torch_ptq import quantize_torch
from slimbert.runtimes import all_runtimes, get_runtime, pt2e_runtime
from tests.conftest import token_batch


@pytest.fixture(scope="module")
def pt2e_artifact(tiny_classifier, dev_enc, train_enc, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt2e")
    quantize_torch(tiny_classifier, out, TorchQuantizeConfig(calibration_examples=32), dev_enc, train_enc)
    return out


def _batch(rows: int, seq: int) -> dict[str, np.ndarray]:
    return token_batch(rows, seq, seed=seq, pad_first_row=False)


def test_registered_for_the_pt2e_kind():
    runtimes = all_runtimes()
    assert runtimes["torch-pt2e-cpu"].kind == runtimes["torch-pt2e-cpu-eager"].kind == "pt2e"
    assert runtimes["torch-pt2e-cpu"].unavailable_reason() is None
    assert default_targets("pt2e") == ["torch-pt2e-cpu"]  # the eager reference only when named


def test_without_a_compiler_it_runs_eagerly_and_says_so(pt2e_artifact, monkeypatch, caplog):
    monkeypatch.setattr(pt2e_runtime, "compiler_missing", lambda: "Inductor finds no C++ compiler (test)")
    with caplog.at_level(logging.WARNING, logger="slimbert.runtimes.pt2e_runtime"):
        session = get_runtime("torch-pt2e-cpu").load(pt2e_artifact, threads=1)
    assert not session.compiled
    assert any("eagerly" in r.message and "g++" in r.message for r in caplog.records)
    eager = get_runtime("torch-pt2e-cpu-eager").load(pt2e_artifact, threads=1)
    batch = _batch(2, 9)
    np.testing.assert_array_equal(session.run(batch), eager.run(batch))


def test_a_folder_without_a_program_is_a_clear_error(tiny_classifier):
    with pytest.raises(ExportError, match="no model.pt2"):
        get_runtime("torch-pt2e-cpu-eager").load(tiny_classifier)


def test_compiler_probe_finds_this_machines_compiler():
    import shutil

    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("no C++ compiler here")
    assert pt2e_runtime.compiler_missing() is None


@pytest.mark.slow
def test_compiled_program_matches_the_eager_reference(pt2e_artifact):
    """Inductor's oneDNN INT8 kernels against the Q/DQ reference graph (compiling takes ~30 s)."""
    if pt2e_runtime.compiler_missing():
        pytest.skip("no C++ compiler for Inductor")
    compiled = get_runtime("torch-pt2e-cpu").load(pt2e_artifact, threads=2)
    assert compiled.compiled
    eager = get_runtime("torch-pt2e-cpu-eager").load(pt2e_artifact, threads=2)
    for rows, seq in ((3, 17), (4, 40)):  # one compilation serves both (dynamic shapes)
        batch = _batch(rows, seq)
        a, b = compiled.run(batch), eager.run(batch)
        assert (a.argmax(-1) == b.argmax(-1)).all() and np.abs(a - b).max() < 1e-3
