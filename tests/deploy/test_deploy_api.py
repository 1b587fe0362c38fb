"""`slimbert.deploy_model` and friends: the deploy command as Python calls, against the test sshd."""

import json

import pytest

import slimbert
from slimbert.errors import DeployError
from tests.deploy.conftest import DEVICE
from tests.deploy.test_remote_bench import local_report


def test_deploy_bench_status_and_rollback_from_python(onnx_artifact, other_artifact, device_file, tmp_path):
    report = tmp_path / "run" / "report.json"
    report.parent.mkdir()
    report.write_text(json.dumps(local_report(seq_len=16)))
    first = slimbert.deploy_model(onnx_artifact, DEVICE, device_file)
    assert first.install.previous is None and first.row is None and first.markdown is None
    second = slimbert.deploy_model(other_artifact, DEVICE, device_file, bench=True, report=report, threads=1)
    assert second.install.previous == first.install.bundle_id
    assert [(s["batch_size"], s["seq_len"]) for s in second.row["latency"]] == [(1, 16), (2, 16)]
    assert second.markdown == report.with_name("report.md")
    assert slimbert.load_report(report).row(target=f"{DEVICE}:onnxruntime").threads == 1
    _, state = slimbert.device_status(DEVICE, device_file)
    assert state.current == second.install.bundle_id and state.previous == first.install.bundle_id
    _, state = slimbert.rollback_device(DEVICE, device_file)
    assert state.current == first.install.bundle_id


def test_deploy_model_checks_settings_before_connecting(onnx_artifact, device_file, tmp_path):
    with pytest.raises(DeployError, match="go with --bench"):
        slimbert.deploy_model(onnx_artifact, DEVICE, device_file, report=tmp_path / "r.json")
    with pytest.raises(DeployError, match="cannot read bench report"):
        slimbert.deploy_model(onnx_artifact, DEVICE, device_file, bench=True,
                              report=tmp_path / "missing.json")
    with pytest.raises(DeployError, match="seq_len must be >= 2"):
        slimbert.deploy_model(onnx_artifact, DEVICE, device_file, bench=True, seq_len=1)
