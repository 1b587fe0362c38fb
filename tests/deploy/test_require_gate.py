"""deploy --require-gate: only the model a passed gate measured is shipped."""

import json

import pytest

from slimbert.deploy.api import check_gate_verdict
from slimbert.errors import DeployError
from slimbert.models import content_fingerprint
from tests.deploy.conftest import DEVICE, free_port, write_devices
from tests.deploy.test_deploy_cli import assert_usage_error, invoke


def verdict(path, **fields):
    path.write_text(json.dumps({"passed": True, "candidate": "student-int8 on ort-cpu", "checks": [],
                                **fields}))
    return path


def test_the_gated_model_passes_and_any_other_is_refused(onnx_artifact, other_artifact, tmp_path):
    good = verdict(tmp_path / "good.json", candidate_fingerprint=content_fingerprint(onnx_artifact))
    check_gate_verdict(onnx_artifact, good)
    with pytest.raises(DeployError, match="is not the model the gate passed"):
        check_gate_verdict(other_artifact, good)


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"passed": False, "checks": [{"passed": False, "message": "accuracy dropped 3.00 points"}]},
     "failed for student-int8 on ort-cpu: accuracy dropped 3.00 points"),
    ({"candidate_fingerprint": None}, "names no model fingerprint"),
])
def test_a_failed_or_anonymous_verdict_is_refused(onnx_artifact, tmp_path, fields, fragment):
    path = verdict(tmp_path / "gate.json", candidate_fingerprint=content_fingerprint(onnx_artifact))
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    with pytest.raises(DeployError, match=fragment):
        check_gate_verdict(onnx_artifact, path)


def test_an_unreadable_verdict_is_named(onnx_artifact, tmp_path):
    (tmp_path / "gate.json").write_bytes(b"\xff\xfe")
    with pytest.raises(DeployError, match="cannot read the gate verdict"):
        check_gate_verdict(onnx_artifact, tmp_path / "gate.json")
    (tmp_path / "rows.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(DeployError, match="is not a gate verdict"):
        check_gate_verdict(onnx_artifact, tmp_path / "rows.json")


def test_the_cli_refuses_another_model_before_connecting(onnx_artifact, other_artifact, tmp_path):
    # a device nobody listens for: the refusal must come before any connection
    devices = write_devices(tmp_path / "devices.yaml", {DEVICE: {"transport": "ssh", "host": "127.0.0.1",
                                                                 "port": free_port()}})
    gate = verdict(tmp_path / "gate.json", candidate_fingerprint=content_fingerprint(onnx_artifact))
    result = invoke(other_artifact, "--device", DEVICE, "--devices", devices, "--require-gate", gate)
    assert_usage_error(result, "is not the model the gate passed")
