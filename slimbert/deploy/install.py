"""Install, roll back and inspect bundles on a device like an OTA updater (RAUC, Mender, SWUpdate).

Layout under the device's root folder::

    incoming/<bundle_id>-<random>/   the upload in progress (emptied at the start of every deploy)
    releases/<bundle_id>/            verified, health-checked bundles, never modified after the move
    releases.log                     release ids in deploy order, oldest first (multi-step rollback)
    current  -> releases/<bundle_id> what is live
    previous -> releases/<bundle_id> what a plain --rollback goes back to
    .lock, .lock.info (or .lock.d/)  the device lock (see lock.py)

A deploy, under the device lock: clean ``incoming/``; upload; on the device, check the
runtime, verify every file's hash and run the health check (the model on the examples
recorded at bundle time must agree with the build machine's predictions); only then move
the upload under ``releases/`` and switch ``current`` with a rename of a fresh symlink over
it, which POSIX makes atomic. Then the health check runs again through ``current``; if it
fails, the previous ``current``/``previous`` links are put back and the new release removed.
Last, releases beyond the newest ``keep`` (plus current and previous) are deleted.
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

from slimbert.deploy.bundle import BUNDLE_FILE, HEALTH_FILE, RUNNER_FILE, read_bundle
from slimbert.deploy.devices import Device
from slimbert.deploy.lock import device_lock
from slimbert.deploy.transports import Transport, connected
from slimbert.errors import DeployError

_EXIT_VERIFY, _EXIT_MISSING, _EXIT_CANNOT_RUN, _EXIT_UNHEALTHY, _NOT_FOUND = 3, 4, 5, 6, 127
RELEASES_LOG = "releases.log"


class HealthCheckFailed(DeployError):
    """The model did not run, or answered otherwise than on the build machine: a verdict (exit 1)."""

    exit_code = 1
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
    releases: list[str] = field(default_factory=list)  # kept on the device, in deploy order, oldest first


@dataclass
class InstallResult:
    device: str
    bundle_id: str
    path: str  # the release folder on the device
    previous: str | None  # bundle id a rollback would restore
    reused: bool  # the release was already on the device (verified, not copied again)
    runtime: dict[str, str] = field(default_factory=dict)  # package versions on the device
    health: dict[str, Any] = field(default_factory=dict)  # the post-switch health check's report
    pruned: list[str] = field(default_factory=list)  # releases deleted to keep the newest `keep`


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


def _verify(device: Device, transport: Transport, folder: str) -> str | None:
    """None if every file in ``folder`` matches its bundle.json, else the runner's complaint."""
    rc, out, err = transport.run(_runner_line(device, folder, "verify"), check=False)
    if rc == 0:
        return None
    if rc == _EXIT_VERIFY:
        return err.strip() or "verification failed"
    raise _runner_error(device, folder, rc, out, err)


@dataclass
class _State:
    """What the device holds, read in one round trip (under the lock, it cannot change)."""

    current: str | None
    previous: str | None
    log: list[str]  # deploy order, oldest first, each id once (its last deploy)
    releases: list[str]  # folders under releases/

    def ordered(self) -> list[str]:
        """Kept releases in deploy order; ones the log does not know (older slimbert) first."""
        return [r for r in self.releases if r not in self.log] + [r for r in self.log if r in self.releases]


def _sections(out: str) -> dict[str, list[str]]:
    parts: dict[str, list[str]] = {}
    name = None
    for line in out.splitlines():
        if line.startswith(_MARK):
            name = line[len(_MARK):].strip()
            parts[name] = []
        elif name is not None and line.strip():
            parts[name].append(line.strip())
    return parts


def _read_state(transport: Transport, root: str) -> _State:
    _, out, _ = transport.run(f"cd {q(root)} 2>/dev/null || exit 0; "
                              f"echo {_MARK}current; readlink current; "
                              f"echo {_MARK}previous; readlink previous; "
                              f"echo {_MARK}log; cat {RELEASES_LOG} 2>/dev/null; "
                              f"echo {_MARK}releases; ls releases 2>/dev/null; true")
    parts = _sections(out)
    link = {k: (parts.get(k) or [""])[0].rstrip("/").rsplit("/", 1)[-1] or None
            for k in ("current", "previous")}
    log = list(dict.fromkeys(reversed(parts.get("log", []))))[::-1]  # each id at its last position
    return _State(link["current"], link["previous"], log, parts.get("releases", []))


def _check_lines(err: str) -> str:
    return " ".join(line for line in err.strip().splitlines() if line) or "no output"


def _health_failure(device: Device, rc: int, out: str, err: str, folder: str, outcome: str) -> DeployError:
    """The error for a failed check/health run; ``outcome`` says what stays live."""
    if rc in (_EXIT_CANNOT_RUN, _EXIT_UNHEALTHY):
        return HealthCheckFailed(f"device {device.name!r} failed the health check: {_check_lines(err)}; "
                                 f"{outcome}",
                                 hint="the device's runtime cannot run this model as the build machine does: "
                                      "align its onnxruntime/executorch version with the one the bundle was "
                                      "recorded with (`runner.py check` prints it), or export for that "
                                      "runtime.")
    return _runner_error(device, folder, rc, out, err)


def _health_line(device: Device, folder: str, *before: str) -> str:
    """Runner ``before`` checks, then the health check, which releases from before health.json skip."""
    health = f"{{ [ ! -f {q(f'{folder}/{HEALTH_FILE}')} ] || {_runner_line(device, folder, 'health')}; }}"
    return f"{_runner_line(device, folder, *before)} && {health}" if before else health


def _post_check(device: Device, transport: Transport, root: str) -> tuple[str | None, dict[str, Any]]:
    """The health check through ``current``, as users reach it: (failure message or None, its report)."""
    rc, out, err = transport.run(_health_line(device, f"{root}/current", "verify"), check=False)
    if rc != 0:
        return f"{_check_lines(err or out)} (exit code {rc})", {}
    with contextlib.suppress(ValueError, IndexError):
        return None, json.loads(out.strip().splitlines()[-1])
    return None, {}


def _links_line(current: str | None, previous: str | None) -> str:
    """Shell putting both links back as they were (absent links are removed)."""
    parts = [_relink(name, q(f"releases/{bid}")) if bid else f"rm -f {name}"
             for name, bid in (("current", current), ("previous", previous))]
    return " && ".join(parts)


def _activate(device: Device, transport: Transport, root: str, bundle_id: str, before: _State,
              fresh: bool) -> dict[str, Any]:
    """Switch to ``bundle_id``, health-check it live, and fall back automatically if it fails."""
    target = f"releases/{bundle_id}"
    transport.run(f"cd {q(root)} && {_switch_line(target)}")
    problem, report = _post_check(device, transport, root)
    if problem is None:
        return report
    drop = f" && rm -rf {q(target)}" if fresh and bundle_id not in (before.current, before.previous) else ""
    transport.run(f"cd {q(root)} && {_links_line(before.current, before.previous)}{drop}")
    back = f"{before.current} is live again" if before.current else "nothing is live, as before"
    raise HealthCheckFailed(
        f"the health check after switching device {device.name!r} to {bundle_id} failed: {problem}; "
        f"rolled back automatically: {back}.",
        hint="run `runner.py health` in the release folder on the device to see why; the device's runtime "
             "or resources differ from the build machine's.")


def _prune(transport: Transport, root: str, state: _State, log: list[str], keep: int) -> list[str]:
    """Delete releases beyond the newest ``keep`` (never current or previous); write the log."""
    ordered = [r for r in state.ordered() if r not in log] + log
    kept = set(ordered[-keep:]) | {state.current, state.previous} - {None}
    doomed = [r for r in state.releases if r not in kept]
    new_log = [r for r in log if r in kept]
    lines = " ".join(q(r) for r in new_log)
    remove = f"rm -rf {' '.join(q(f'releases/{r}') for r in doomed)} && " if doomed else ""
    transport.run(f"cd {q(root)} && {remove}printf '%s\\n' {lines} > {RELEASES_LOG}.tmp && "
                  f"mv {RELEASES_LOG}.tmp {RELEASES_LOG}")
    return [r for r in doomed if not r.startswith(".") and ".broken-" not in r]


def install(bundle_dir: Path, device: Device, transport: Transport | None = None,
            keep: int | None = None) -> InstallResult:
    """Upload, check, verify, health-check and activate the bundle in ``bundle_dir`` on ``device``.

    Any failure before the switch leaves the device's live version as it was; a failed health
    check after the switch puts it back. ``keep``: releases kept (default: the device's).
    """
    bundle_id = read_bundle(bundle_dir)["bundle_id"]
    keep = device.keep if keep is None else keep
    if keep < 1:
        raise DeployError(f"keep must be >= 1, got {keep}.", hint="keep at least the live release.")
    with connected(device, transport) as transport:
        root = remote_root(device, transport)
        with device_lock(device, transport, root, f"deploy of {bundle_id}"):
            # under the lock nothing else uploads: whatever is in incoming/ is a dropped upload
            transport.run(f"cd {q(root)} && rm -rf incoming && mkdir -p incoming releases")
            before = _read_state(transport, root)
            incoming = f"{root}/incoming/{bundle_id}-{secrets.token_hex(4)}"
            target = f"releases/{bundle_id}"
            release = f"{root}/{target}"
            moved = False
            try:
                transport.put(Path(bundle_dir), incoming)
                rc, out, err = transport.run(_runner_line(device, incoming, "check", "verify", "health"),
                                             check=False)
                if rc == _EXIT_VERIFY:
                    raise DeployError(
                        f"corrupted transfer rejected; the installed version is unchanged (device "
                        f"{device.name!r}: {err.strip()}).",
                        hint=f"deploy again; if it keeps failing, check the connection and the free space "
                             f"on the device (df -h {root}).")
                if rc != 0:
                    raise _health_failure(device, rc, out, err, incoming, f"the new release was not made "
                                          f"live, {before.current or 'nothing'} stays live")
                runtime = json.loads(out.strip().splitlines()[0])
                _, out, _ = transport.run(f"cd {q(root)} && if [ -e {q(target)} ]; then echo exists; "
                                          f"else mv {q(incoming)} {q(target)}; fi")
                reused = out.strip() == "exists"
                moved = not reused
                if reused and _verify(device, transport, release) is not None:  # damaged: replace it
                    broken = f"{release}.broken-{secrets.token_hex(4)}"
                    transport.run(f"mv {q(release)} {q(broken)} && mv {q(incoming)} {q(release)} && "
                                  f"rm -rf {q(broken)}")
                    moved, reused = True, False
            finally:
                if not moved:  # a moved upload is the release now; anything else is litter
                    with contextlib.suppress(DeployError):  # the original error matters more
                        transport.run(["rm", "-rf", incoming], check=False)
            health = _activate(device, transport, root, bundle_id, before, fresh=not reused)
            previous = before.current if before.current != bundle_id else before.previous
            after = _State(bundle_id, previous, before.log, sorted({*before.releases, bundle_id}))
            log = [r for r in before.log if r != bundle_id] + [bundle_id]
            pruned = _prune(transport, root, after, log, keep)
    return InstallResult(device.name, bundle_id, release, previous, reused, runtime, health, pruned)


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
        script = "; ".join(f"echo {_MARK}{link}; cat {q(f'{root}/{link}/{BUNDLE_FILE}')} 2>/dev/null; echo"
                           for link in ("current", "previous"))
        _, out, _ = transport.run(script + "; true")
        state = _read_state(transport, root)
    infos = _parse_links(out)
    cur, prev = infos.get("current") or {}, infos.get("previous") or {}
    return DeviceStatus(device.name, root, cur.get("bundle_id"), prev.get("bundle_id"), cur, prev,
                        state.ordered())


def _rollback_target(device: Device, state: _State, steps: int, to: str | None) -> str:
    if state.current is None:
        raise DeployError(f"no previous version to roll back to on device {device.name!r} (nothing is "
                          "installed).", hint="deploy an artifact first.")
    kept = state.ordered()
    if to is not None:
        matches = [r for r in kept if r.startswith(to)]
        if len(matches) != 1:
            what = "no kept release starts with it" if not matches else f"it matches {', '.join(matches)}"
            raise DeployError(f"--to {to}: {what} (device {device.name!r} keeps "
                              f"{', '.join(kept) or 'none'}).",
                              hint=f"see them with: slimbert deploy --device {device.name} --status")
        if matches[0] == state.current:
            raise DeployError(f"{matches[0]} is already live on device {device.name!r}.",
                              hint="nothing to do; --status lists the other kept releases.")
        return matches[0]
    if steps == 1:
        if state.previous is None:
            raise DeployError(f"no previous version to roll back to on device {device.name!r} (only "
                              f"{state.current} was ever live).",
                              hint="deploy an artifact first; each deploy keeps the one it replaces as "
                                   "previous.")
        return state.previous
    older = kept[:kept.index(state.current)] if state.current in kept else []
    if len(older) < steps:
        raise DeployError(f"cannot roll back {steps} releases on device {device.name!r}: only {len(older)} "
                          f"older release(s) are kept ({', '.join(older) or 'none'}).",
                          hint="roll back fewer steps, or name one with --to RELEASE (see --status); raise "
                               "'keep' in devices.yaml to keep more.")
    return older[-steps]


def rollback(device: Device, transport: Transport | None = None, steps: int = 1,
             to: str | None = None) -> DeviceStatus:
    """Make an older release live, health-checked like a deploy, under the device lock.

    ``steps`` 1 (the default) swaps ``current`` and ``previous``, so a second rollback undoes
    the first; ``steps`` N goes N releases back in deploy order; ``to`` names a kept release
    (a unique prefix of its id). Either way the release left becomes ``previous``.
    """
    if steps < 1:
        raise DeployError(f"rollback steps must be >= 1, got {steps}.", hint="e.g. --rollback --rollback.")
    with connected(device, transport) as transport:
        root = remote_root(device, transport)
        with device_lock(device, transport, root, "rollback"):
            state = _read_state(transport, root)
            target = _rollback_target(device, state, steps, to)
            which = "previous release" if target == state.previous else "release"
            problem = _verify(device, transport, f"{root}/releases/{target}")
            if problem:
                raise DeployError(f"the {which} {target} on device {device.name!r} is damaged ({problem}); "
                                  "current is unchanged.",
                                  hint="deploy that artifact again instead of rolling back.")
            folder = f"{root}/releases/{target}"
            rc, out, err = transport.run(_health_line(device, folder), check=False)
            if rc != 0:
                raise _health_failure(device, rc, out, err, folder, f"{state.current} stays live")
            _activate(device, transport, root, target, state, fresh=False)
        return status(device, transport)
