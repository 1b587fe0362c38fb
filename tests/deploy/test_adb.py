"""adb without shell_v2 (old devices, old clients) always exits 0: the status marker must catch it.

A fake `adb` on PATH behaves like the old protocol: `shell` merges stderr into stdout and
exits 0 whatever the command did; `push` copies into a folder here (the "phone").
"""

import json
import os
import sys
from pathlib import Path

import pytest

from slimbert.deploy.bundle import make_bundle
from slimbert.deploy.devices import parse_devices
from slimbert.deploy.install import install, status
from slimbert.deploy.transports import AdbTransport
from slimbert.errors import DeployError

FAKE_ADB = r"""#!/bin/sh
# old adb: no shell_v2, so the exit status of `adb shell` is always 0 and stderr is merged
if [ "$1" = devices ]; then printf 'List of devices attached\nFAKE01\tdevice\n'; exit 0; fi
[ "$1" = -s ] && shift 2
what=$1; shift
case "$what" in
  shell) sh -c "$1" 2>&1; exit 0 ;;
  push) cp -r "$1" "$2" && [ -z "$CORRUPT_PUSH" ] || printf junk >> "$2/model.onnx"; exit 0 ;;
  pull) cp "$1" "$2"; exit 0 ;;
esac
echo "fake adb: unknown command $what" >&2; exit 1
"""


@pytest.fixture
def old_adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "adb").write_text(FAKE_ADB)
    (bin_dir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    settings = {"transport": "adb", "serial": "FAKE01", "python": sys.executable,
                "root": str(tmp_path / "phone")}
    return parse_devices({"phone": settings}, "devices.yaml", tmp_path)["phone"]


def test_exit_status_comes_from_the_marker_not_from_adb(old_adb):
    t = AdbTransport(old_adb)
    assert t.run("echo out; exit 3", check=False)[:2] == (3, "out\n")
    assert t.run("echo 'looks like @@slimbert-rc-0:0'; false", check=False)[0] == 1  # cannot be spoofed
    with pytest.raises(DeployError, match="exit code 4"):
        t.run("exit 4")
    assert t.run(["echo", "fine"]) == (0, "fine\n", "")


def test_install_over_old_adb_rejects_a_corrupted_push(onnx_artifact, old_adb, tmp_path, monkeypatch):
    bundle = make_bundle(onnx_artifact, tmp_path / "bundles")
    monkeypatch.setenv("CORRUPT_PUSH", "1")
    with pytest.raises(DeployError, match="corrupted transfer rejected"):
        install(bundle, old_adb)
    assert not (Path(old_adb.root) / "current").exists()
    monkeypatch.delenv("CORRUPT_PUSH")
    result = install(bundle, old_adb)  # the same deploy over a sound link goes through, lock and all
    assert status(old_adb).current == result.bundle_id and result.health["agreement"] == 1.0
    live = json.loads((Path(old_adb.root) / "current" / "bundle.json").read_text())
    assert live["bundle_id"] == bundle.name
