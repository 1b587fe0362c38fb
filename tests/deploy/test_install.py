"""Install, switch, roll back: against a real sshd on 127.0.0.1, so the "device" is a folder here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimbert.deploy.bundle import make_bundle
from slimbert.deploy.devices import get_device
from slimbert.deploy.install import install, python_command, remote_root, rollback, status
from slimbert.deploy.transports import SshTransport, open_transport
from slimbert.errors import DeployError
from tests.deploy.conftest import DEVICE, write_devices


def deploy(artifact, device, tmp_path):
    return install(make_bundle(artifact, tmp_path / "bundles"), device)


def live(device) -> str:
    return os.readlink(Path(device.root) / "current")


def leftovers(device) -> list[str]:
    return sorted(p.name for p in (Path(device.root) / "incoming").iterdir())


def test_deploy_activates_the_verified_release(onnx_artifact, device, tmp_path):
    with pytest.raises(DeployError, match="nothing is installed"):
        rollback(device)
    result = deploy(onnx_artifact, device, tmp_path)
    assert live(device) == f"releases/{result.bundle_id}"
    assert result.path == f"{device.root}/releases/{result.bundle_id}"
    assert result.previous is None and not result.reused and leftovers(device) == []
    assert {"numpy", "onnxruntime", "tokenizers"} <= set(result.runtime)
    state = status(device)
    assert (state.current, state.previous) == (result.bundle_id, None)
    assert state.current_info["labels"] == ["neg", "pos"]
    with pytest.raises(DeployError, match="no previous version to roll back to"):
        rollback(device)
    with open_transport(device) as t:  # the live model answers through current/
        _, out, _ = t.run(python_command(device, f"{device.root}/current/runner.py", "predict",
                                         "good fun film", "dull boring plot"))
    predictions = json.loads(out)
    assert len(predictions) == 2 and {p["label"] for p in predictions} <= {"neg", "pos"}


def test_previous_rollback_and_rollback_again(onnx_artifact, other_artifact, device, tmp_path):
    first = deploy(onnx_artifact, device, tmp_path)
    second = deploy(other_artifact, device, tmp_path)
    assert second.previous == first.bundle_id and live(device) == f"releases/{second.bundle_id}"
    state = rollback(device)
    assert (state.current, state.previous) == (first.bundle_id, second.bundle_id)
    assert live(device) == f"releases/{first.bundle_id}" and status(device) == state
    state = rollback(device)
    assert (state.current, state.previous) == (second.bundle_id, first.bundle_id)
    again = deploy(other_artifact, device, tmp_path)  # the live bundle once more: nothing changes
    assert again.reused and again.previous == first.bundle_id and leftovers(device) == []

    # a release damaged on the device is neither rolled back to nor reused
    (Path(first.path) / "vocab.txt").write_text("edited on the device")
    with pytest.raises(DeployError, match=f"previous release {first.bundle_id} .* is damaged"):
        rollback(device)
    assert live(device) == f"releases/{second.bundle_id}"
    replaced = deploy(onnx_artifact, device, tmp_path)
    assert not replaced.reused and replaced.previous == second.bundle_id
    assert subprocess.run([sys.executable, f"{first.path}/runner.py", "verify"]).returncode == 0
    releases = sorted(p.name for p in (Path(device.root) / "releases").iterdir())
    assert releases == sorted([first.bundle_id, second.bundle_id]) and leftovers(device) == []


def test_corrupted_transfer_is_rejected_and_current_kept(onnx_artifact, other_artifact, device, tmp_path,
                                                          monkeypatch):
    good = deploy(onnx_artifact, device, tmp_path)
    upload = SshTransport.put

    def corrupting_put(self, local_dir, remote_dir):
        upload(self, local_dir, remote_dir)
        with open(Path(remote_dir) / "model.onnx", "ab") as fh:  # the "device" is this machine
            fh.write(b"flipped bits")

    monkeypatch.setattr(SshTransport, "put", corrupting_put)
    bad_id = make_bundle(other_artifact, tmp_path / "other").name
    rejected = "corrupted transfer rejected; the installed version is unchanged"
    with pytest.raises(DeployError, match=rejected) as exc:
        deploy(other_artifact, device, tmp_path)
    assert "model.onnx (sha256 mismatch)" in exc.value.message
    assert live(device) == f"releases/{good.bundle_id}" and leftovers(device) == []
    assert not (Path(device.root) / "releases" / bad_id).exists()


def python_without_onnxruntime(tmp_path) -> str:
    """The system Python if it lacks onnxruntime, else an empty venv."""
    system = "/usr/bin/python3"
    if Path(system).exists() and subprocess.run([system, "-c", "import onnxruntime"],
                                                capture_output=True).returncode != 0:
        return system
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    return str(tmp_path / "bare" / "bin" / "python")


def test_device_without_the_runtime_is_told_what_to_install(onnx_artifact, sshd, tmp_path):
    python = python_without_onnxruntime(tmp_path)
    path = write_devices(tmp_path / "devices.yaml",
                         {DEVICE: {**sshd, "python": python, "root": str(tmp_path / "root")}})
    device = get_device(path, DEVICE)
    with pytest.raises(DeployError, match=r"device 'local' cannot run the bundle: missing Python packages: "
                                          r".*onnxruntime") as exc:
        deploy(onnx_artifact, device, tmp_path)
    assert f"{python} -m pip install" in exc.value.hint and "onnxruntime" in exc.value.hint
    assert not (Path(device.root) / "current").exists() and leftovers(device) == []


def test_device_without_python(onnx_artifact, sshd, tmp_path):
    path = write_devices(tmp_path / "devices.yaml",
                         {DEVICE: {**sshd, "python": "/nonexistent/python3", "root": str(tmp_path / "root")}})
    with pytest.raises(DeployError, match="has no Python at '/nonexistent/python3'"):
        deploy(onnx_artifact, get_device(path, DEVICE), tmp_path)


class HomeOnly:
    """A transport whose shell only answers $HOME."""

    def run(self, args, check=True):
        return 0, "/home/pi", ""


def test_tilde_root_is_expanded_by_the_device(device):
    device.root = "~/slimbert"
    assert remote_root(device, HomeOnly()) == "/home/pi/slimbert"
    device.root = "/opt/slimbert"
    assert remote_root(device, HomeOnly()) == "/opt/slimbert"
