"""How commands and files reach a device: the system's ssh/scp, or adb.

Both drive the command-line tools the user already has configured (ssh config, agent,
adb server) rather than a Python SSH library, so whatever works in the user's terminal
works here, and failures are translated into what happened and what to change.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from slimbert.deploy.devices import Device
from slimbert.errors import DeployError

Result = tuple[int, str, str]  # (exit code, stdout, stderr)

_UNREACHABLE = re.compile(r"connection refused|connection timed out|timed out|no route to host|"
                          r"could not resolve hostname|network is unreachable|connection reset|"
                          r"connection closed by remote host", re.I)
_HOSTKEY = re.compile(r"host key verification failed|remote host identification has changed", re.I)
_UNKNOWN_HOST = re.compile(r"host key is known for|no matching host key|you have requested strict checking",
                           re.I)


class Transport(ABC):
    """One device connection: run a command, upload a folder, download a file.

    Use it as a context manager (or call ``close``): a transport may hold a connection open
    across calls.
    """

    def __init__(self, device: Device) -> None:
        self.device = device

    def close(self) -> None:  # noqa: B027 (a hook: most transports hold nothing open)
        """Release what the transport holds open; it can still be used (and reopens)."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def run(self, args: list[str] | str, check: bool = True) -> Result:
        """Run ``args`` (a word list, quoted for the remote shell; or a shell line) on the device."""

    @abstractmethod
    def put(self, local_dir: Path, remote_dir: str) -> None:
        """Upload ``local_dir`` to ``remote_dir``, which must not exist yet (its parent must)."""

    @abstractmethod
    def get(self, remote_path: str, local_path: Path) -> None:
        """Download the file ``remote_path`` to ``local_path``."""

    def hold(self, line: str) -> subprocess.Popen:
        """Start shell ``line`` on the device and keep it running, its stdin a pipe from here.

        The device lock lives in such a process: it ends when its stdin closes, so a lock
        taken by a deploy that is killed or loses its connection is released with it.
        """
        return subprocess.Popen(self._hold_command(line), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def _hold_command(self, line: str) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} cannot hold a device lock")

    @staticmethod
    def command_line(args: list[str] | str) -> str:
        return args if isinstance(args, str) else shlex.join(args)

    def _local(self, cmd: list[str], what: str) -> subprocess.CompletedProcess:
        """Run a local tool; the device's failures are mapped by the caller."""
        try:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        except FileNotFoundError:
            raise DeployError(f"cannot {what}: {cmd[0]!r} is not installed on this machine.",
                              hint=_INSTALL_HINTS.get(cmd[0], f"install {cmd[0]}.")) from None

    def _failed(self, what: str, proc: subprocess.CompletedProcess) -> DeployError:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()
        return DeployError(
            f"{what} failed on device {self.device.name!r} ({self.device.address}) with exit code "
            f"{proc.returncode}: {detail[-1] if detail else 'no output'}",
            hint="run the command by hand on the device to see the whole output.")


_INSTALL_HINTS = {
    "ssh": "install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client).",
    "scp": "install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client).",
    "adb": "install Android platform-tools (Debian/Ubuntu: apt-get install adb) and put adb on PATH.",
}


class SshTransport(Transport):
    """A Linux device (Raspberry Pi, Jetson, a server) over the system ssh and scp.

    BatchMode makes a missing or wrong key fail at once instead of prompting for a password
    nobody will type; IdentitiesOnly makes devices.yaml's key the one that is tried, so a
    success never depends on whatever else happens to be in the agent.

    A deploy makes several calls; they share one connection (an OpenSSH control master,
    started on first use and ended by ``close``), so the key exchange is paid once, not
    per call (it can take a second over Wi-Fi). The master is started with ``-f`` and its stderr in a
    file, because a backgrounded master would otherwise hold the pipes of whichever call
    started it and block that call until the master exits.
    """

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self._control_dir: str | None = None

    @property
    def _control_path(self) -> str | None:
        return f"{self._control_dir}/master" if self._control_dir else None

    def _connect(self) -> None:
        if self._control_dir is not None:
            return
        options = self._options()  # first: it may refuse (missing key) before anything is made
        control_dir = tempfile.mkdtemp(prefix="slimbert-ssh-")
        cmd = ["ssh", *options, "-o", "ControlMaster=yes", "-o", f"ControlPath={control_dir}/master",
               "-o", "ControlPersist=60", "-f", "-N", "-p", str(self.device.port), self._target]
        with tempfile.TemporaryFile(mode="w+") as err:
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                      text=True)
            except FileNotFoundError:
                shutil.rmtree(control_dir, ignore_errors=True)
                raise DeployError(f"cannot connect to device {self.device.name!r}: 'ssh' is not installed "
                                  "on this machine.", hint=_INSTALL_HINTS["ssh"]) from None
            err.seek(0)
            proc.stderr = err.read()
        if proc.returncode != 0:
            shutil.rmtree(control_dir, ignore_errors=True)
            self._check_connection(proc)
            raise self._failed("connecting", proc)
        self._control_dir = control_dir

    def close(self) -> None:
        if self._control_dir is None:
            return
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(["ssh", "-o", f"ControlPath={self._control_path}", "-O", "exit", self._target],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=10)
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

    def _options(self) -> list[str]:
        d = self.device
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
        if d.key:
            if not os.path.isfile(d.key):
                raise DeployError(f"the ssh key {d.key} of device {d.name!r} ({d.source}) does not exist.",
                                  hint="fix 'key' in devices.yaml (relative paths are relative to the "
                                       "file), or create one: ssh-keygen -t ed25519 -f KEY; "
                                       f"ssh-copy-id -i KEY.pub -p {d.port} {d.address.rsplit(':', 1)[0]}")
            opts += ["-i", d.key, "-o", "IdentitiesOnly=yes"]
        # A host key is trusted only if known beforehand (devices.yaml's known_hosts, else
        # ssh's own ~/.ssh/known_hosts); the first key seen is accepted only on explicit opt-in,
        # since on a fresh CI runner every connection is a first one.
        if d.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={d.known_hosts}"]
        opts += ["-o", f"StrictHostKeyChecking={'accept-new' if d.trust_on_first_use else 'yes'}"]
        if self._control_path:  # share the master's connection; if it is gone, connect directly
            opts += ["-o", "ControlMaster=no", "-o", f"ControlPath={self._control_path}"]
        return opts

    @property
    def _target(self) -> str:
        return f"{self.device.user}@{self.device.host}" if self.device.user else str(self.device.host)

    def _check_connection(self, proc: subprocess.CompletedProcess) -> None:
        """ssh exits 255 for its own failures; turn the usual ones into a diagnosis."""
        if proc.returncode != 255:
            return
        d, err = self.device, proc.stderr.strip()
        last = err.splitlines()[-1] if err else "no output"
        if "permission denied" in err.lower():
            raise DeployError(
                f"Permission denied: {d.address} refused the ssh key {d.key or '(ssh default keys)'} "
                f"of device {d.name!r} ({last}).",
                hint="check the key in devices.yaml and that its .pub line is in the device's "
                     f"~/.ssh/authorized_keys (ssh-copy-id -i KEY.pub -p {d.port} {self._target}).")
        if _UNKNOWN_HOST.search(err):
            where = d.known_hosts or "~/.ssh/known_hosts"
            raise DeployError(
                f"the host key of {d.address} (device {d.name!r}) is not in {where}, and slimbert does "
                f"not trust a key it has never seen: {last}",
                hint=f"record it: ssh-keyscan -p {d.port} {d.host} >> KNOWN_HOSTS (compare its fingerprint, "
                     "ssh-keygen -lf KNOWN_HOSTS, with the device's console) and set known_hosts: "
                     "KNOWN_HOSTS for this device in devices.yaml; or accept the first key explicitly: "
                     "trust_on_first_use: true in devices.yaml (or --trust-on-first-use).")
        if _HOSTKEY.search(err):
            raise DeployError(
                f"the host key of {d.address} does not match {d.known_hosts or '~/.ssh/known_hosts'} "
                f"(device {d.name!r}): {last}",
                hint="if the device was reinstalled, refresh the entry: ssh-keyscan -p "
                     f"{d.port} {d.host} > KNOWN_HOSTS; otherwise do not connect.")
        if _UNREACHABLE.search(err):
            raise DeployError(
                f"could not reach {d.address} (device {d.name!r}): {last}",
                hint="check the host/port in devices.yaml, that the device is on and on this "
                     f"network, and that sshd runs on it (ssh -p {d.port} {self._target} true).")

    def run(self, args: list[str] | str, check: bool = True) -> Result:
        self._connect()
        cmd = ["ssh", *self._options(), "-p", str(self.device.port), self._target, "--",
               self.command_line(args)]
        proc = self._local(cmd, f"connect to device {self.device.name!r}")
        self._check_connection(proc)
        if check and proc.returncode != 0:
            raise self._failed(f"`{self.command_line(args)}`", proc)
        return proc.returncode, proc.stdout, proc.stderr

    def _hold_command(self, line: str) -> list[str]:
        self._connect()
        return ["ssh", *self._options(), "-p", str(self.device.port), self._target, "--", line]

    def _scp(self, src: str, dest: str, recursive: bool, what: str) -> None:
        self._connect()
        cmd = ["scp", "-q", *(["-r"] if recursive else []), *self._options(), "-P", str(self.device.port),
               src, dest]
        proc = self._local(cmd, what)
        self._check_connection(proc)
        if proc.returncode != 0:
            raise self._failed(what, proc)

    def put(self, local_dir: Path, remote_dir: str) -> None:
        self._scp(str(local_dir), f"{self._target}:{remote_dir}", True, f"upload to {remote_dir}")

    def get(self, remote_path: str, local_path: Path) -> None:
        self._scp(f"{self._target}:{remote_path}", str(local_path), False, f"download of {remote_path}")


class AdbTransport(Transport):
    """An Android device over adb (USB or adb-over-TCP), found by its serial.

    There is no Android device where slimbert's tests run, so its tests cover the command
    lines built here and the "adb missing" / "device not attached" errors, with subprocess
    replaced; the install logic above it is the same one the ssh tests exercise for real.
    """

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self._ready = False

    def _adb(self, *args: str) -> list[str]:
        return ["adb", "-s", str(self.device.serial), *args]

    def ensure_attached(self) -> None:
        """Fail early and clearly unless `adb devices` lists this serial as ready."""
        if self._ready:
            return
        d = self.device
        if shutil.which("adb") is None:
            raise DeployError(f"adb is not installed, and device {d.name!r} is an adb device.",
                              hint=_INSTALL_HINTS["adb"])
        proc = self._local(["adb", "devices"], "list adb devices")
        states = dict(line.split()[:2] for line in proc.stdout.splitlines()[1:] if len(line.split()) >= 2)
        state = states.get(str(d.serial))
        if state == "device":
            self._ready = True
            return
        attached = ", ".join(f"{s} ({st})" for s, st in states.items()) or "none"
        if state == "unauthorized":
            hint = "unlock the device and accept the 'Allow USB debugging' prompt, then retry."
        elif state is not None:
            hint = f"the device is {state}; reconnect it (adb reconnect) and retry."
        else:
            hint = ("plug it in with USB debugging on (or `adb connect HOST:PORT`) and check that "
                    "'serial' in devices.yaml matches `adb devices`.")
        raise DeployError(f"no device with serial {d.serial!r} (device {d.name!r}) is attached; "
                          f"adb devices lists: {attached}.", hint=hint)

    def run(self, args: list[str] | str, check: bool = True) -> Result:
        """Run on the device; the exit status comes from a marker line, not from adb's own exit code.

        adb without shell_v2 (before Android 7, or an old adb client) always exits 0 and merges
        stderr into stdout, which would turn a failed verify into a success. The command runs in
        a subshell followed by ``echo <random marker>$?``; no marker means the command was cut
        off, which is a failure too.
        """
        self.ensure_attached()
        marker = f"@@slimbert-rc-{secrets.token_hex(6)}:"
        line = f"( {self.command_line(args)}\n); echo \"{marker}$?\""
        proc = self._local(self._adb("shell", line), f"run a command on {self.device.name!r}")
        out, sep, tail = proc.stdout.rpartition(marker)
        status = tail.strip().splitlines()[0] if sep and tail.strip() else ""
        if sep and status.isdigit():
            proc.returncode, proc.stdout = int(status), out
        elif proc.returncode == 0:  # adb says success, yet the marker never came: not a success
            proc.returncode = 255
            proc.stderr = (proc.stderr + "\nadb returned no exit status: the command was cut off "
                           "(device disconnected?)").lstrip()
        if check and proc.returncode != 0:
            raise self._failed(f"`{self.command_line(args)}`", proc)
        return proc.returncode, proc.stdout, proc.stderr

    def _hold_command(self, line: str) -> list[str]:
        self.ensure_attached()
        return self._adb("shell", line)

    def put(self, local_dir: Path, remote_dir: str) -> None:
        self.ensure_attached()
        proc = self._local(self._adb("push", str(local_dir), remote_dir), f"upload to {remote_dir}")
        if proc.returncode != 0:
            raise self._failed(f"upload to {remote_dir}", proc)

    def get(self, remote_path: str, local_path: Path) -> None:
        self.ensure_attached()
        proc = self._local(self._adb("pull", remote_path, str(local_path)), f"download of {remote_path}")
        if proc.returncode != 0:
            raise self._failed(f"download of {remote_path}", proc)


TRANSPORTS: dict[str, type[Transport]] = {"ssh": SshTransport, "adb": AdbTransport}


def open_transport(device: Device) -> Transport:
    """The transport that ``device`` names in devices.yaml (close it, or use ``with``)."""
    return TRANSPORTS[device.transport](device)


@contextlib.contextmanager
def connected(device: Device, transport: Transport | None = None) -> Iterator[Transport]:
    """``transport`` as given (the caller closes it), or a new one closed on exit."""
    if transport is not None:
        yield transport
        return
    with open_transport(device) as opened:
        yield opened
