import re
import subprocess
from pathlib import Path

import pytest

from slimbert.deploy import transports
from slimbert.deploy.devices import parse_devices
from slimbert.deploy.transports import AdbTransport, SshTransport, open_transport
from slimbert.errors import DeployError
from tests.deploy.conftest import free_port, keygen


def make_device(tmp_path, **settings):
    return parse_devices({"dev": settings}, "devices.yaml", tmp_path)["dev"]


class FakeRun:
    """Stands in for subprocess.run: records command lines, answers from a table."""

    def __init__(self, answers=None):
        self.calls, self.answers = [], answers or {}

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        answer = self.answers.get(tuple(cmd[:2]), (0, "", ""))
        rc, out, err = answer(cmd) if callable(answer) else answer
        return subprocess.CompletedProcess(cmd, rc, out, err)


# ---------------------------------------------------------------------------- ssh, commands only


def test_ssh_command_lines(tmp_path, monkeypatch):
    (tmp_path / "key").write_text("not a real key")
    device = make_device(tmp_path, transport="ssh", host="10.0.0.5", port=2222, user="pi", key="key",
                         known_hosts="kh")
    fake = FakeRun()
    monkeypatch.setattr(transports.subprocess, "run", fake)
    with open_transport(device) as t:
        assert isinstance(t, SshTransport)
        t.run(["ls", "/a b"])
        t.put(tmp_path, "/remote/dir")
    master, run, scp, close = fake.calls
    assert master[0] == "ssh" and "ControlMaster=yes" in master and {"-f", "-N"} <= set(master)
    assert run[0] == "ssh" and run[-3:] == ["pi@10.0.0.5", "--", "ls '/a b'"]
    for option in ("BatchMode=yes", "ConnectTimeout=10", "IdentitiesOnly=yes", "StrictHostKeyChecking=yes",
                   f"UserKnownHostsFile={tmp_path / 'kh'}", "ControlMaster=no"):
        assert option in run and option in scp, option
    assert run[run.index("-i") + 1] == str(tmp_path / "key") and run[run.index("-p") + 1] == "2222"
    assert scp[:3] == ["scp", "-q", "-r"] and scp[scp.index("-P") + 1] == "2222"
    assert scp[-2:] == [str(tmp_path), "pi@10.0.0.5:/remote/dir"]
    assert close[:1] == ["ssh"] and "-O" in close and "exit" in close


def test_ssh_without_known_hosts_trusts_no_new_host_key(tmp_path, monkeypatch):
    fake = FakeRun()
    monkeypatch.setattr(transports.subprocess, "run", fake)
    with open_transport(make_device(tmp_path, transport="ssh", host="h")) as t:
        t.run("uptime")
    assert "StrictHostKeyChecking=yes" in fake.calls[1]
    assert "StrictHostKeyChecking=accept-new" not in fake.calls[1]
    assert "-i" not in fake.calls[1] and fake.calls[1][-3:] == ["h", "--", "uptime"]
    fake.calls.clear()
    with open_transport(make_device(tmp_path, transport="ssh", host="h", trust_on_first_use=True)) as t:
        t.run("uptime")
    assert "StrictHostKeyChecking=accept-new" in fake.calls[1]


def test_missing_key_file_is_named(tmp_path):
    device = make_device(tmp_path, transport="ssh", host="h", key="keys/none")
    with pytest.raises(DeployError, match="keys/none of device 'dev'.*does not exist") as exc:
        SshTransport(device).run("true")
    assert "ssh-keygen" in exc.value.hint


def test_ssh_not_installed(tmp_path, monkeypatch):
    def missing(cmd, **kwargs):
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(transports.subprocess, "run", missing)
    with pytest.raises(DeployError, match="'ssh' is not installed") as exc:
        SshTransport(make_device(tmp_path, transport="ssh", host="h")).run("true")
    assert "openssh-client" in exc.value.hint


# ---------------------------------------------------------------------------- ssh, real sshd


def test_run_put_get_over_real_ssh(device, tmp_path):
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "a.txt").write_text("hello")
    with open_transport(device) as t:
        assert t.run(["echo", "it's here"]) == (0, "it's here\n", "")
        rc, out, err = t.run("echo out; echo err >&2; exit 7", check=False)
        assert (rc, out, err) == (7, "out\n", "err\n")
        with pytest.raises(DeployError, match="exit code 7: err"):
            t.run("echo err >&2; exit 7")
        t.put(tmp_path / "up", str(tmp_path / "remote"))
        t.get(str(tmp_path / "remote" / "a.txt"), tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_text() == "hello"


def test_wrong_key_says_permission_denied_and_names_the_key(sshd, tmp_path):
    wrong = keygen(tmp_path / "wrong_key")
    device = make_device(tmp_path, **{**sshd, "key": str(wrong)})
    with pytest.raises(DeployError, match="Permission denied") as exc:
        open_transport(device).run("true")
    assert str(wrong) in exc.value.message and "check the key in devices.yaml" in exc.value.hint


def test_unreachable_port_says_so(sshd, tmp_path):
    device = make_device(tmp_path, **{**sshd, "port": free_port()})
    with pytest.raises(DeployError, match=r"could not reach .*127\.0\.0\.1:\d+.*Connection refused") as exc:
        open_transport(device).run("true")
    assert "sshd runs" in exc.value.hint and "host/port" in exc.value.hint


def test_changed_host_key_is_refused(sshd, tmp_path):
    keygen(tmp_path / "other_host_key")
    key_type, body = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    (tmp_path / "kh").write_text(f"[127.0.0.1]:{sshd['port']} {key_type} {body}\n")
    device = make_device(tmp_path, **{**sshd, "known_hosts": str(tmp_path / "kh")})
    with pytest.raises(DeployError, match="host key"):
        open_transport(device).run("true")


def test_unknown_host_key_is_refused_naming_the_device_and_the_fix(sshd, tmp_path):
    (tmp_path / "empty_known_hosts").write_text("")
    device = make_device(tmp_path, **{**sshd, "known_hosts": "empty_known_hosts"})
    with pytest.raises(DeployError, match=r"host key of .*127\.0\.0\.1.* \(device 'dev'\) is not in") as exc:
        open_transport(device).run("true")
    assert "ssh-keyscan" in exc.value.hint and "trust_on_first_use: true" in exc.value.hint


def test_trust_on_first_use_is_explicit_and_records_the_key(sshd, tmp_path):
    (tmp_path / "kh").write_text("")
    device = make_device(tmp_path, **{**sshd, "known_hosts": "kh", "trust_on_first_use": True})
    with open_transport(device) as t:
        assert t.run(["echo", "ok"])[1] == "ok\n"
    host_key = Path(sshd["known_hosts"]).read_text().split()[2]
    assert host_key in (tmp_path / "kh").read_text()  # recorded: later connections check it


# ---------------------------------------------------------------------------- adb, commands only
# No Android device is attached where these tests run: they check the command lines and the
# errors for a missing adb or device, with shutil.which and subprocess.run replaced.


def adb_answers(cmd):
    """A device that ran the command: exit status 0 on the marker line."""
    marker = re.search(r'echo "(@@slimbert-rc-\w+:)\$\?"', cmd[-1]) if cmd[3] == "shell" else None
    return 0, f"{marker.group(1)}0\n" if marker else "", ""


@pytest.fixture
def adb_device(tmp_path):
    return make_device(tmp_path, transport="adb", serial="R58M123")


def test_adb_command_lines(adb_device, tmp_path, monkeypatch):
    listing = "List of devices attached\nR58M123\tdevice\nemu-5554\tdevice\n"
    fake = FakeRun({("adb", "devices"): (0, listing, ""), ("adb", "-s"): adb_answers})
    monkeypatch.setattr(transports.shutil, "which", lambda name: "/usr/bin/adb")
    monkeypatch.setattr(transports.subprocess, "run", fake)
    t = open_transport(adb_device)
    assert isinstance(t, AdbTransport)
    t.run(["ls", "/data/local/tmp/a b"])
    t.put(tmp_path, "/data/local/tmp/slimbert/incoming/x")
    t.get("/data/local/tmp/f.json", tmp_path / "f.json")
    assert fake.calls[1][-1].startswith("( ls '/data/local/tmp/a b'\n); echo \"@@slimbert-rc-")
    assert fake.calls == [
        ["adb", "devices"],  # once: the device stays attached for the transport's life
        ["adb", "-s", "R58M123", "shell", fake.calls[1][-1]],
        ["adb", "-s", "R58M123", "push", str(tmp_path), "/data/local/tmp/slimbert/incoming/x"],
        ["adb", "-s", "R58M123", "pull", "/data/local/tmp/f.json", str(tmp_path / "f.json")],
    ]


def test_adb_not_installed(adb_device, monkeypatch):
    monkeypatch.setattr(transports.shutil, "which", lambda name: None)
    with pytest.raises(DeployError, match="adb is not installed") as exc:
        open_transport(adb_device).run("true")
    assert "platform-tools" in exc.value.hint


@pytest.mark.parametrize("listing, hint", [
    ("List of devices attached\n", "USB debugging"),
    ("List of devices attached\nOTHER1\tdevice\n", "USB debugging"),
    ("List of devices attached\nR58M123\tunauthorized\n", "Allow USB debugging"),
    ("List of devices attached\nR58M123\toffline\n", "adb reconnect"),
])
def test_adb_device_not_attached(adb_device, tmp_path, monkeypatch, listing, hint):
    monkeypatch.setattr(transports.shutil, "which", lambda name: "/usr/bin/adb")
    monkeypatch.setattr(transports.subprocess, "run", FakeRun({("adb", "devices"): (0, listing, "")}))
    with pytest.raises(DeployError, match="no device with serial 'R58M123'") as exc:
        open_transport(adb_device).put(tmp_path, "/x")
    assert hint in exc.value.hint


def test_adb_command_failure_is_a_deploy_error(adb_device, monkeypatch):
    fake = FakeRun({("adb", "devices"): (0, "List of devices attached\nR58M123\tdevice\n", ""),
                    ("adb", "-s"): (1, "", "/system/bin/sh: nope: not found")})
    monkeypatch.setattr(transports.shutil, "which", lambda name: "/usr/bin/adb")
    monkeypatch.setattr(transports.subprocess, "run", fake)
    assert open_transport(adb_device).run("nope", check=False)[0] == 1
    with pytest.raises(DeployError, match="exit code 1: /system/bin/sh: nope: not found"):
        open_transport(adb_device).run("nope")

