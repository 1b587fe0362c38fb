"""Deploy like an OTA updater, with faults injected: health checks, automatic fallback, the
device lock, cleaning after a killed upload, pruning and multi-step rollback.

Against the real sshd on 127.0.0.1 (the "device" is a folder here); the faults come from a
device 'python' that makes onnxruntime misbehave (conftest.faulty_python).
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slimbert.deploy.bundle import BUNDLE_FILE, HEALTH_FILE, make_bundle
from slimbert.deploy.install import HealthCheckFailed, install, rollback, status
from slimbert.deploy.lock import device_lock
from slimbert.deploy.transports import SshTransport, open_transport
from slimbert.errors import DeployError
from tests.deploy.conftest import faulty_python, variant

ROOT = Path(__file__).resolve().parents[2]


def bundle_of(artifact, tmp_path):
    return make_bundle(artifact, tmp_path / "bundles")


def links(device) -> tuple[str | None, str | None]:
    root = Path(device.root)
    return tuple(os.readlink(root / n).rsplit("/", 1)[-1] if (root / n).is_symlink() else None
                 for n in ("current", "previous"))


def releases(device) -> set[str]:
    return {p.name for p in (Path(device.root) / "releases").iterdir()}


def incoming(device) -> list[str]:
    folder = Path(device.root) / "incoming"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_bundle_records_examples_host_predictions_and_the_threshold(onnx_artifact, tmp_path):
    bundle = make_bundle(onnx_artifact, tmp_path, min_agreement=0.75)
    info = json.loads((bundle / BUNDLE_FILE).read_text())
    health = json.loads((bundle / HEALTH_FILE).read_text())
    assert info["health"] == {"file": HEALTH_FILE, "examples": 8, "min_agreement": 0.75}
    assert info["model_file"] == "model.onnx" and info["kind"] == "onnx" and HEALTH_FILE in info["files"]
    assert len(health["texts"]) == len(health["input_ids"]) == len(health["predictions"]) == 8
    assert health["min_agreement"] == 0.75 and set(health["predictions"]) <= {0, 1}
    ok = subprocess.run([sys.executable, str(bundle / "runner.py"), "health"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["agreement"] == 1.0
    with pytest.raises(DeployError, match="min_agreement must be in"):
        make_bundle(onnx_artifact, tmp_path / "x", min_agreement=0)


@pytest.mark.parametrize("mode, message", [
    ("no-kernel", "Could not find an implementation for MatMulInteger"),
    ("wrong-answers", r"agrees with the build machine on 0\.0% of 8"),
])
def test_device_that_cannot_run_the_graph_keeps_the_previous_model(onnx_artifact, other_artifact, device,
                                                                    tmp_path, mode, message):
    good = install(bundle_of(onnx_artifact, tmp_path), device)
    new_id = bundle_of(other_artifact, tmp_path).name
    device.python = faulty_python(tmp_path, mode)
    with pytest.raises(HealthCheckFailed, match=message) as exc:
        install(bundle_of(other_artifact, tmp_path), device)
    assert exc.value.exit_code == 1
    assert f"not made live, {good.bundle_id} stays live" in exc.value.message
    assert links(device) == (good.bundle_id, None)
    assert new_id not in releases(device) and incoming(device) == []


def test_failing_post_switch_check_rolls_back(onnx_artifact, other_artifact, device, tmp_path):
    first = install(bundle_of(onnx_artifact, tmp_path), device)
    second = install(bundle_of(other_artifact, tmp_path), device)
    third = variant(onnx_artifact, tmp_path, 3)
    third_id = bundle_of(third, tmp_path).name
    device.python = faulty_python(tmp_path, "no-kernel", where="/current/")  # only once live
    again = f"rolled back automatically: {second.bundle_id} is live again"
    with pytest.raises(HealthCheckFailed, match=f"switching device 'local' to {third_id} failed: .*{again}"):
        install(bundle_of(third, tmp_path), device)
    assert links(device) == (second.bundle_id, first.bundle_id)  # both links as they were
    assert third_id not in releases(device) and incoming(device) == []
    log = (Path(device.root) / "releases.log").read_text().split()
    assert log == [first.bundle_id, second.bundle_id]


def test_rollback_runs_the_health_check_too(onnx_artifact, other_artifact, device, tmp_path):
    first = install(bundle_of(onnx_artifact, tmp_path), device)
    second = install(bundle_of(other_artifact, tmp_path), device)
    device.python = faulty_python(tmp_path, "wrong-answers")
    with pytest.raises(HealthCheckFailed, match=f"health check.*; {second.bundle_id} stays live"):
        rollback(device)
    assert links(device) == (second.bundle_id, first.bundle_id)


def test_keep_prunes_old_releases_and_rollback_goes_several_steps(onnx_artifact, device, tmp_path):
    ids = [install(bundle_of(variant(onnx_artifact, tmp_path, n), tmp_path), device).bundle_id
           for n in range(4)]
    assert releases(device) == set(ids[1:])  # keep: 3 (devices.yaml default)
    state = status(device)
    assert state.releases == ids[1:] and (state.current, state.previous) == (ids[3], ids[2])

    state = rollback(device, steps=2)
    assert (state.current, state.previous) == (ids[1], ids[3]) and links(device) == (ids[1], ids[3])
    with pytest.raises(DeployError, match="cannot roll back 3 releases.*only 0 older"):
        rollback(device, steps=3)
    state = rollback(device, to=ids[2][:6])
    assert (state.current, state.previous) == (ids[2], ids[1])
    state = rollback(device)  # a plain rollback still swaps current and previous
    assert (state.current, state.previous) == (ids[1], ids[2])
    with pytest.raises(DeployError, match="--to zzz: no kept release starts with it"):
        rollback(device, to="zzz")

    last = install(bundle_of(variant(onnx_artifact, tmp_path, 9), tmp_path), device, keep=1)
    # keep 1 keeps the live release and the one a rollback goes back to, nothing else
    assert releases(device) == {last.bundle_id, ids[1]} and sorted(last.pruned) == sorted([ids[2], ids[3]])


def test_busy_device_refuses_a_second_deploy_or_rollback(onnx_artifact, other_artifact, device, tmp_path):
    first = install(bundle_of(onnx_artifact, tmp_path), device)
    device.lock_timeout_s = 1
    with open_transport(device) as t, device_lock(device, t, device.root, "deploy of X"):
        busy = "device 'local' is busy: deploy of X by .* holds its lock"
        with pytest.raises(DeployError, match=busy) as e:
            install(bundle_of(other_artifact, tmp_path), device)
        assert "nothing was changed" in e.value.message
        with pytest.raises(DeployError, match="is busy"):
            rollback(device)
    assert links(device) == (first.bundle_id, None) and incoming(device) == []
    assert install(bundle_of(other_artifact, tmp_path), device).previous == first.bundle_id  # released


def test_concurrent_deploys_wait_for_each_other_and_lose_nothing(onnx_artifact, other_artifact, device,
                                                                  tmp_path, monkeypatch):
    bundles = {"A": bundle_of(onnx_artifact, tmp_path), "B": bundle_of(other_artifact, tmp_path)}
    uploading, go_on = threading.Event(), threading.Event()
    upload = SshTransport.put

    def slow_put(self, local_dir, remote_dir):
        if threading.current_thread().name == "A":
            uploading.set()
            assert go_on.wait(60)
        upload(self, local_dir, remote_dir)

    monkeypatch.setattr(SshTransport, "put", slow_put)
    results, errors = {}, []

    def deploy(name):
        try:
            results[name] = install(bundles[name], device)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    a = threading.Thread(target=deploy, args=("A",), name="A")
    b = threading.Thread(target=deploy, args=("B",), name="B")
    a.start()
    assert uploading.wait(60)
    b.start()
    time.sleep(3)
    assert b.is_alive() and "B" not in results, "B must wait for A's lock"
    assert not (Path(device.root) / "current").exists()
    go_on.set()
    a.join(120)
    b.join(120)
    assert errors == [] and set(results) == {"A", "B"}
    a_id, b_id = results["A"].bundle_id, results["B"].bundle_id
    assert links(device) == (b_id, a_id) and results["B"].previous == a_id
    assert releases(device) == {a_id, b_id} and incoming(device) == []


KILLED_DEPLOY = """
import os, shutil, signal, sys
from pathlib import Path
from slimbert.deploy.devices import get_device
from slimbert.deploy.install import install
from slimbert.deploy.transports import SshTransport

def half_then_die(self, local_dir, remote_dir):
    os.makedirs(remote_dir)
    for path in sorted(Path(local_dir).iterdir())[:3]:  # the "device" is this machine
        shutil.copy(path, remote_dir)
    os.kill(os.getpid(), signal.SIGKILL)

SshTransport.put = half_then_die
install(Path(sys.argv[1]), get_device(Path(sys.argv[2]), sys.argv[3]))
"""


def test_upload_killed_midway_leaves_a_device_the_next_deploy_cleans(onnx_artifact, other_artifact,
                                                                      device, device_file, tmp_path):
    first = install(bundle_of(onnx_artifact, tmp_path), device)
    bundle = bundle_of(other_artifact, tmp_path)
    proc = subprocess.run([sys.executable, "-c", KILLED_DEPLOY, str(bundle), str(device_file), device.name],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9, proc.stderr
    assert len(incoming(device)) == 1 and links(device) == (first.bundle_id, None)  # the dropped upload
    device.lock_timeout_s = 30  # the killed deploy's lock goes with its connection
    second = install(bundle, device)
    assert incoming(device) == [] and links(device) == (second.bundle_id, first.bundle_id)


def test_mkdir_lock_where_flock_is_missing_waits_refuses_and_breaks_a_dead_holder(device, tmp_path):
    device.root = str(tmp_path / "root")
    lock_dir = Path(device.root) / ".lock.d"
    with open_transport(device) as t:
        with device_lock(device, t, device.root, "deploy of A", method="mkdir"):
            assert lock_dir.is_dir() and "deploy of A" in (lock_dir / "info").read_text()
            with pytest.raises(DeployError, match="busy: deploy of A by"), \
                    device_lock(device, t, device.root, "deploy of B", timeout_s=1, method="mkdir"):
                pass
        assert not lock_dir.exists()  # released with its holder
        # a holder that died without cleaning up (kill -9, power cut): its pid is gone
        dead = subprocess.Popen(["true"])
        dead.wait()
        lock_dir.mkdir()
        (lock_dir / "pid").write_text(f"{dead.pid}\n")
        with device_lock(device, t, device.root, "deploy of C", timeout_s=5, method="mkdir"):
            assert "deploy of C" in (lock_dir / "info").read_text()


def test_rollback_to_a_release_from_before_health_checks(onnx_artifact, other_artifact, device, tmp_path):
    first = install(bundle_of(onnx_artifact, tmp_path), device)
    second = install(bundle_of(other_artifact, tmp_path), device)
    old = Path(first.path)  # as an older slimbert installed it: no health.json, not in bundle.json
    (old / HEALTH_FILE).unlink()
    info = json.loads((old / BUNDLE_FILE).read_text())
    del info["files"][HEALTH_FILE]
    (old / BUNDLE_FILE).write_text(json.dumps(info))
    assert (rollback(device).current, links(device)) == (first.bundle_id, (first.bundle_id, second.bundle_id))
