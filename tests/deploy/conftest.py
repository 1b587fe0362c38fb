"""Fixtures for deploy tests: a real sshd on 127.0.0.1 and a tiny ONNX artifact.

The "device" is this machine reached through a throwaway sshd (own host key, own
authorized_keys, own port), so the transports, the remote shell commands and the on-device
runner run for real; the device's Python is this venv's, which has onnxruntime.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slimbert.data import DatasetConfig, encode_split, load_dataset
from slimbert.deploy.devices import Device, get_device
from slimbert.export.onnx import OnnxExportConfig, export_onnx
from slimbert.models import load_tokenizer

SSHD = Path("/usr/sbin/sshd")
DEVICE = "local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "slimbert-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {log.read_text()}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"sshd did not listen on 127.0.0.1:{port} within {timeout_s}s: {log.read_text()}")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> dict:
    """A real sshd on 127.0.0.1:<free port>; yields devices.yaml settings for it (no root)."""
    if not SSHD.exists():
        pytest.skip("openssh-server not installed (.ci/run installs it)")
    folder = tmp_path_factory.mktemp("sshd")
    host_key, client_key = keygen(folder / "host_key"), keygen(folder / "client_key")
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "StrictModes no", "PermitRootLogin prohibit-password", f"PidFile {folder / 'sshd.pid'}",
        "Subsystem sftp internal-sftp",  # scp speaks SFTP since OpenSSH 9
        # bash sources ~/.bashrc for ssh commands only in a top-level shell; SHLVL=1 makes the
        # remote shell a second-level one, so this machine's interactive setup (pyenv init:
        # a quarter second per command) is not timed by every test. Real devices are unaffected.
        "SetEnv SHLVL=1",
        "",
    ]))
    key_type, key_body = (folder / "host_key.pub").read_text().split()[:2]
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_body}\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
    log = folder / "sshd.log"
    with open(log, "w") as log_fh:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                stdout=log_fh, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, log)
        yield {"transport": "ssh", "host": "127.0.0.1", "port": port, "user": getpass.getuser(),
               "key": str(client_key), "known_hosts": str(known_hosts), "python": sys.executable}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_devices(path: Path, devices: dict[str, dict]) -> Path:
    path.write_text(yaml.safe_dump(devices))
    return path


@pytest.fixture
def device_file(sshd, tmp_path) -> Path:
    """devices.yaml with device 'local' (the test sshd), installing into a fresh folder."""
    return write_devices(tmp_path / "devices.yaml", {DEVICE: {**sshd, "root": str(tmp_path / "device-root")}})


@pytest.fixture
def device(device_file) -> Device:
    return get_device(device_file, DEVICE)


@pytest.fixture(scope="session")
def onnx_artifact(tiny_classifier, sentiment_csv, tmp_path_factory) -> Path:
    """The tiny classifier exported to ONNX (labels neg, pos), once for all deploy tests."""
    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    enc = encode_split(load_tokenizer(tiny_classifier), data.splits["dev"], 32)
    out = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    out.mkdir()
    export_onnx(tiny_classifier, out, OnnxExportConfig(validate_examples=32), enc)
    return out


@pytest.fixture(scope="session")
def other_artifact(onnx_artifact, tmp_path_factory) -> Path:
    """The same graph with other label names: a different bundle, cheaply."""
    out = tmp_path_factory.mktemp("onnx-b") / "tiny-onnx-b"
    shutil.copytree(onnx_artifact, out)
    config = json.loads((out / "config.json").read_text())
    config["id2label"] = {"0": "negative", "1": "positive"}
    config["label2id"] = {"negative": 0, "positive": 1}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


INJECTOR = '''"""Fault injection on the "device": runs runner.py with onnxruntime made to misbehave."""
import runpy
import sys

import onnxruntime as ort

MODE, WHERE = {mode!r}, {where!r}  # WHERE: a path fragment of the runner it applies to ('' = all)
script = sys.argv[1]
if WHERE in script:
    if MODE == "no-kernel":
        def refuse(self, *args, **kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an "
                               "implementation for MatMulInteger(10) node with name 'injected'")
        ort.InferenceSession.__init__ = refuse
    elif MODE == "wrong-answers":
        run = ort.InferenceSession.run
        ort.InferenceSession.run = lambda self, *a, **k: [-out for out in run(self, *a, **k)]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
'''


def faulty_python(folder: Path, mode: str, where: str = "") -> str:
    """A device 'python' (for devices.yaml) whose onnxruntime fails as ``mode`` says.

    no-kernel: the session cannot be created (a graph the device's onnxruntime cannot run);
    wrong-answers: the logits come out negated (a runtime that computes something else).
    ``where`` limits it to runners whose path contains it, e.g. '/current/' (after the switch).
    """
    path = folder / f"inject-{mode}-{abs(hash(where))}.py"
    path.write_text(INJECTOR.format(mode=mode, where=where))
    return f"{sys.executable} {path}"


def variant(artifact: Path, folder: Path, n: int) -> Path:
    """A copy of ``artifact`` with other label names: a different bundle, cheaply."""
    out = folder / f"{artifact.name}-v{n}"
    if not out.exists():
        shutil.copytree(artifact, out)
        config = json.loads((out / "config.json").read_text())
        config["id2label"] = {"0": f"neg{n}", "1": f"pos{n}"}
        config["label2id"] = {f"neg{n}": 0, f"pos{n}": 1}
        (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
