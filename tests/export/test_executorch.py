"""ExecuTorch export and runtime; skipped where the optional `mobile` extra is absent."""

import json

import numpy as np
import pytest

from slimbert.errors import ExportError, SlimbertError
from slimbert.export.executorch import ExecutorchConfig, export_executorch
from slimbert.formats import EXECUTORCH_META_FILE as META_FILE
from slimbert.formats import PTE_FILE
from slimbert.runtimes import get_runtime
from tests.conftest import token_batch

pytest.importorskip("executorch")


@pytest.fixture(scope="module")
def fp32_pte(tiny_classifier, dev_enc, tmp_path_factory):
    out = tmp_path_factory.mktemp("pte")
    cfg = ExecutorchConfig(max_batch=8, max_seq_len=32)
    return out, export_executorch(tiny_classifier, out, cfg, dev_enc)


def _batch(rows: int, seq: int) -> dict[str, np.ndarray]:
    return token_batch(rows, seq)


def test_fp32_program_matches_pytorch_on_dynamic_shapes(fp32_pte, tiny_classifier):
    out, metrics = fp32_pte
    assert {PTE_FILE, META_FILE, "config.json", "vocab.txt"} <= {p.name for p in out.iterdir()}
    assert metrics["validation"]["max_abs_diff"] < 1e-3 and metrics["validation"]["agreement"] == 1.0
    runtime = get_runtime("executorch-xnnpack")
    assert runtime.kind == "executorch" and runtime.device == "mobile"
    session = runtime.load(out, threads=1)
    reference = get_runtime("torch-cpu").load(tiny_classifier, threads=1)
    for rows, seq in ((1, 5), (3, 17), (20, 32)):  # 20 rows > max_batch 8: split into calls
        batch = _batch(rows, seq)
        np.testing.assert_allclose(session.run(batch), reference.run(batch), atol=1e-4)


def test_longer_than_exported_sequence_is_a_clear_error(fp32_pte):
    session = get_runtime("executorch-xnnpack").load(fp32_pte[0])
    with pytest.raises(SlimbertError, match="longer than the 32"):
        session.run(_batch(1, 40))


@pytest.mark.parametrize(("activations", "calibrated"), [("dynamic", 1), ("static", 3)])
def test_int8_program_agrees(activations, calibrated, tiny_classifier, dev_enc, tmp_path, fp32_pte):
    cfg = ExecutorchConfig(precision="int8", activations=activations, max_batch=8, max_seq_len=32,
                           calibration_batches=3, calibration_batch_size=8)
    metrics = export_executorch(tiny_classifier, tmp_path, cfg, dev_enc)
    assert metrics["calibration_batches"] == calibrated and metrics["precision"] == "int8"
    assert metrics["activations"] == activations
    assert metrics["validation"]["agreement"] >= 0.95
    assert json.loads((tmp_path / META_FILE).read_text())["precision"] == "int8"
    # linear weights shrink 4x; the embeddings (a large share of this tiny model) stay fp32
    assert (tmp_path / PTE_FILE).stat().st_size < 0.8 * (fp32_pte[0] / PTE_FILE).stat().st_size


def test_seq_len_beyond_positions_is_refused(tiny_classifier, dev_enc, tmp_path):
    with pytest.raises(ExportError, match="beyond"):
        export_executorch(tiny_classifier, tmp_path, ExecutorchConfig(max_seq_len=100), dev_enc)


def test_config_ranges():
    with pytest.raises(ValueError, match="max_batch"):
        ExecutorchConfig(max_batch=1)
