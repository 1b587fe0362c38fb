"""Install, roll back and inspect bundles on a device, with an atomic switch.

Layout under the device's root folder::

    incoming/<bundle_id>-<random>/   uploads in progress (deleted on any failure)
    releases/<bundle_id>/            verified bundles, never modified after the move
    current  -> releases/<bundle_id> what is live
    previous -> releases/<bundle_id> what --rollback goes back to

A release only appears under ``releases/`` after the device itself has checked every
file's hash, and ``current`` is switched with a rename of a fresh symlink over it, which
POSIX makes atomic: a reader sees either the old release or the new one, never a partial
copy, even if the connection drops mid-deploy.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimbert.deploy.bundle import BUNDLE_FILE, RUNNER_FILE, read_bundle
from slimbert.deploy.devices import Device
from slimbert.deploy.transports import Transport, connected
from slimbert.errors import DeployError

_EXIT_VERIFY, _EXIT_MISSING, _NOT_FOUND = 3, 4, 127
_MARK = "@@slimbert-link:"
q = shlex.quote


@dataclass
class DeviceStatus:
    """The bundles live (current) and kept for rollback (previous) on a device."""

    device: str
    root: str
    current: str | None
    previous: str | None
    current_info: dict[str, Any] = field(default_factory=dict)  # bundle.json of current
    previous_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class InstallResult:
    device: str
    bundle_id: str
    path: str  # the release folder on the device
    previous: str | None  # bundle id a rollback would restore
    reused: bool  # the release was already on the device (verified, not copied again)
    runtime: dict[str, str] = field(default_factory=dict)  # package versions on the device


def python_command(device: Device, script: str, *args: str) -> list[str]:
    """``device.python`` may carry arguments (``python3 -X utf8``): split it into words."""
    return [*shlex.split(device.python), script, *args]


def remote_root(device: Device, transport: Transport) -> str:
    """The install folder as an absolute path: '~' is expanded once, by the device's shell."""
    root = str(device.root)
    if root == "~" or root.startswith("~/"):
        _, out, _ = transport.run('printf %s "$HOME"')
        if not out.strip():
            raise DeployError(f"cannot expand {root!r} on device {device.name!r}: $HOME is empty.",
                              hint="give 'root' as an absolute path in devices.yaml.")
        root = out.strip() + root[1:]
    return root


def _runner_line(device: Device, folder: str, *subcommands: str) -> str:
    """Shell running runner.py's ``subcommands`` in turn, stopping at the first failure.

    One round trip for several checks: each ssh command costs a remote shell start, which
    on a small board is a good part of a second.
    """
    return " && ".join(shlex.join(python_command(device, f"{folder}/{RUNNER_FILE}", sub))
                       for sub in subcommands)


def _runner_error(device: Device, folder: str, rc: int, out: str, err: str) -> DeployError:
    """What a failed runner.py check/verify means for the user (3 is left to the caller)."""
    if rc == _EXIT_MISSING:
        lines = err.strip().splitlines()
        fix = next((line[len("fix: "):] for line in lines if line.startswith("fix: ")), None)
        missing = next((line for line in lines if line.startswith("missing")), err.strip())
        return DeployError(
            f"device {device.name!r} cannot run the bundle: {missing} (python: {device.python}).",
            hint=f"install them on the device: {fix}; or set 'python' in devices.yaml to an interpreter "
                 "that has them (e.g. a venv's bin/python).")
    if rc == _NOT_FOUND:
        return DeployError(f"device {device.name!r} has no Python at {device.python!r}: {err.strip()}",
                           hint="install Python 3 on the device, or set 'python' in devices.yaml to "
                                "its path.")
    return DeployError(f"runner.py failed on device {device.name!r} (exit code {rc}): "
                       f"{(err or out).strip()[-500:]}",
                       hint=f"run `{device.python} {folder}/{RUNNER_FILE} check` and `... verify` on the "
                            "device to see why.")


def _verify(device: Device, transport: Transport, folder: str) -> str | None:
    """None if every file in ``folder`` matches its bundle.json, else the runner's complaint."""
    rc, out, err = transport.run(_runner_line(device, folder, "verify"), check=False)
    if rc == 0:
        return None
    if rc == _EXIT_VERIFY:
        return err.strip() or "verification failed"
    raise _runner_error(device, folder, rc, out, err)


def _relink(name: str, target: str) -> str:
    """Shell that points symlink ``name`` at ``target`` atomically (rename over it)."""
    tmp = f".{name}.tmp-{secrets.token_hex(4)}"
    return f"ln -sfn {target} {tmp} && mv -T {tmp} {name}"


def _switch_line(target: str) -> str:
    """Shell (run in the root folder) making ``target`` current; prints the previous link.

    previous is switched first: a crash between the two renames leaves both at the old
    release, never previous at something that was not live before.
    """
    keep_previous = _relink("previous", '"$cur"')
    return ('cur=$(readlink current || true) && '
            f'if [ -n "$cur" ] && [ "$cur" != {q(target)} ]; then {keep_previous}; fi && '
            f'{_relink("current", q(target))} && echo "previous=$(readlink previous || true)"')


def install(bundle_dir: Path, device: Device, transport: Transport | None = None) -> InstallResult:
    """Upload, check, verify and activate the bundle in ``bundle_dir`` on ``device``.

    Any failure before the switch leaves the device's live version as it was and removes
    the upload.
    """
    bundle_id = read_bundle(bundle_dir)["bundle_id"]
    with connected(device, transport) as transport:
        root = remote_root(device, transport)
        incoming = f"{root}/incoming/{bundle_id}-{secrets.token_hex(4)}"
        target = f"releases/{bundle_id}"
        release = f"{root}/{target}"
        transport.run(["mkdir", "-p", f"{root}/incoming", f"{root}/releases"])
        moved = False
        try:
            transport.put(Path(bundle_dir), incoming)
            rc, out, err = transport.run(_runner_line(device, incoming, "check", "verify"), check=False)
            if rc == _EXIT_VERIFY:
                raise DeployError(
                    f"corrupted transfer rejected; the installed version is unchanged (device "
                    f"{device.name!r}: {err.strip()}).",
                    hint=f"deploy again; if it keeps failing, check the connection and the free space "
                         f"on the device (df -h {root}).")
            if rc != 0:
                raise _runner_error(device, incoming, rc, out, err)
            runtime = json.loads(out.strip().splitlines()[0])
            # the usual case in one round trip: move the verified upload into place and switch
            _, out, _ = transport.run(f"cd {q(root)} && if [ -e {q(target)} ]; then echo exists; "
                                      f"else mv {q(incoming)} {q(target)} && {_switch_line(target)}; fi")
            reused = out.strip() == "exists"
            moved = not reused
            if reused:  # deployed before: keep that copy if intact, else replace it with the upload
                if _verify(device, transport, release) is not None:
                    broken = f"{release}.broken-{secrets.token_hex(4)}"
                    transport.run(f"mv {q(release)} {q(broken)} && mv {q(incoming)} {q(release)} && "
                                  f"rm -rf {q(broken)}")
                    moved, reused = True, False
                _, out, _ = transport.run(f"cd {q(root)} && {_switch_line(target)}")
        finally:
            if not moved:  # a moved upload is the release now; anything else is litter
                with contextlib.suppress(DeployError):  # the original error matters more
                    transport.run(["rm", "-rf", incoming], check=False)
    link = next((line[len("previous="):] for line in out.splitlines() if line.startswith("previous=")), "")
    return InstallResult(device.name, bundle_id, release, link.rsplit("/", 1)[-1] or None, reused, runtime)


def _parse_links(out: str) -> dict[str, dict[str, Any]]:
    infos = {}
    for name, body in re.findall(rf"^{_MARK}(\w+)\n(.*?)(?=^{_MARK}|\Z)", out, flags=re.M | re.S):
        with contextlib.suppress(ValueError):
            infos[name] = json.loads(body) if body.strip() else {}
    return infos


def status(device: Device, transport: Transport | None = None) -> DeviceStatus:
    """What ``current`` and ``previous`` point at, read from the bundle.json behind each."""
    with connected(device, transport) as transport:
        root = remote_root(device, transport)
        script = "; ".join(f"echo {_MARK}{link}; cat {q(f'{root}/{link}/{BUNDLE_FILE}')} 2>/dev/null"
                           for link in ("current", "previous"))
        _, out, _ = transport.run(script + "; true")
    infos = _parse_links(out)
    cur, prev = infos.get("current") or {}, infos.get("previous") or {}
    return DeviceStatus(device.name, root, cur.get("bundle_id"), prev.get("bundle_id"), cur, prev)


def rollback(device: Device, transport: Transport | None = None) -> DeviceStatus:
    """Swap ``current`` and ``previous``: a second rollback undoes the first."""
    with connected(device, transport) as transport:
        state = status(device, transport)
        if state.current is None or state.previous is None:
            what = "nothing is installed" if state.current is None else f"only {state.current} was ever live"
            raise DeployError(f"no previous version to roll back to on device {device.name!r} ({what}).",
                              hint="deploy an artifact first; each deploy keeps the one it replaces as "
                                   "previous.")
        problem = _verify(device, transport, f"{state.root}/previous")
        if problem:
            raise DeployError(f"the previous release {state.previous} on device {device.name!r} is damaged "
                              f"({problem}); current is unchanged.",
                              hint="deploy that artifact again instead of rolling back.")
        swap = " && ".join([_relink("current", '"$prev"'), _relink("previous", '"$cur"')])
        transport.run(f"cd {q(state.root)} && cur=$(readlink current) && prev=$(readlink previous) && {swap}")
    return DeviceStatus(device.name, state.root, state.previous, state.current, state.previous_info,
                        state.current_info)
