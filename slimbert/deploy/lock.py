"""One deploy or rollback at a time per device: a lock held by a process on the device.

A deploy takes several round trips (upload, check, switch, health check, prune), so the lock
cannot live in one remote command. It lives in a holder process started on the device
(``Transport.hold``) that takes the lock, prints a line, and waits for its stdin to close:
the deploy closes it when done, and a deploy that is killed or loses its connection closes
it by dying, so no lock outlives the deploy that took it.

The holder uses ``flock -w`` where the device has util-linux flock (Linux boards), and an
atomic ``mkdir`` elsewhere (busybox/toybox on Android have no ``flock -w``); the mkdir lock
records the holder's pid so a waiter breaks a lock whose holder is gone (a reboot, a kill -9
of the holder itself).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import select
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Literal

from slimbert.deploy.devices import Device
from slimbert.deploy.transports import Transport
from slimbert.errors import DeployError

LOCK_FILE, LOCK_DIR = ".lock", ".lock.d"
_LOCKED, _BUSY = "@@slimbert-locked", "@@slimbert-busy"
_EXIT_BUSY = 75  # EX_TEMPFAIL

Method = Literal["auto", "flock", "mkdir"]


def _flock_part(timeout_s: int) -> str:
    return (f"exec 9>>{LOCK_FILE} && if ! flock -x -w {timeout_s} 9; then "
            f'echo "{_BUSY} $(cat {LOCK_FILE}.info 2>/dev/null)"; exit {_EXIT_BUSY}; fi; '
            f'printf "%s\\n" "$info" > {LOCK_FILE}.info; echo "{_LOCKED} flock"; cat >/dev/null')


def _mkdir_part(timeout_s: int) -> str:
    return ("n=0; "
            f"while ! mkdir {LOCK_DIR} 2>/dev/null; do "
            f"pid=$(cat {LOCK_DIR}/pid 2>/dev/null); "
            f'if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then rm -rf {LOCK_DIR}; continue; fi; '
            f'n=$((n+1)); if [ "$n" -gt {timeout_s} ]; then '
            f'echo "{_BUSY} $(cat {LOCK_DIR}/info 2>/dev/null)"; exit {_EXIT_BUSY}; fi; sleep 1; done; '
            f"trap 'rm -rf {LOCK_DIR}' EXIT; trap 'exit 1' HUP INT TERM; "
            f'echo $$ > {LOCK_DIR}/pid; printf "%s\\n" "$info" > {LOCK_DIR}/info; '
            f'echo "{_LOCKED} mkdir"; cat >/dev/null')


def holder_line(root: str, timeout_s: int, info: str, method: Method = "auto") -> str:
    """Shell for the lock holder: prints _LOCKED once held, or _BUSY and the holder after timeout_s."""
    head = f"mkdir -p {shlex.quote(root)} && cd {shlex.quote(root)} && info={shlex.quote(info)} && "
    if method == "flock":
        return head + _flock_part(timeout_s)
    if method == "mkdir":
        return head + _mkdir_part(timeout_s)
    return (head + "if flock --help 2>&1 | grep -q -e --wait; then "
            + _flock_part(timeout_s) + "; else " + _mkdir_part(timeout_s) + "; fi")


def _read_line(proc: subprocess.Popen, deadline: float) -> str:
    """The holder's first line, or '' if it exits or says nothing before ``deadline``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return ""
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _release(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def device_lock(device: Device, transport: Transport, root: str, what: str,
                timeout_s: int | None = None, method: Method = "auto") -> Iterator[None]:
    """Hold the device's lock for the ``with`` body; waits up to ``timeout_s``, then refuses."""
    timeout_s = device.lock_timeout_s if timeout_s is None else timeout_s
    info = f"{what} by {getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since {time.ctime()}"
    proc = transport.hold(holder_line(root, timeout_s, info, method))
    try:
        line = _read_line(proc, time.monotonic() + timeout_s + 60)
        if not line.startswith(_LOCKED):
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
            if line.startswith(_BUSY):
                holder = line[len(_BUSY):].strip() or "another deploy or rollback"
                raise DeployError(
                    f"device {device.name!r} is busy: {holder} holds its lock, and it was not released "
                    f"within {timeout_s}s; nothing was changed by this {what}.",
                    hint="wait for it to finish and retry (or raise lock_timeout_s in devices.yaml). A lock "
                         "is released when its deploy ends or its connection drops.")
            detail = (err or b"").decode(errors="replace").strip().splitlines()
            raise DeployError(f"cannot take the deploy lock on device {device.name!r} in {root}: "
                              f"{detail[-1] if detail else line or 'no answer'}",
                              hint=f"check that {root} is writable on the device.")
        yield
    finally:
        _release(proc)
