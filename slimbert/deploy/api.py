"""Deploy as one call: bundle an artifact, install it on a device, optionally time it there.

`slimbert deploy` and ``slimbert.deploy_model`` both run this, so every setting is checked
before minutes of uploading, and a device row joins a bench report the same way.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimbert.deploy.devices import Device, get_device
from slimbert.deploy.install import DeviceStatus, InstallResult
from slimbert.deploy.remote_bench import RemoteBenchConfig
from slimbert.errors import DeployError

log = logging.getLogger(__name__)


@dataclass
class DeployResult:
    """What a deploy did: the bundle, its installation and, with a bench, the device's row."""

    device: Device
    bundle: dict[str, Any]  # bundle.json: bundle_id, artifact, files, labels
    install: InstallResult
    row: dict[str, Any] | None = None  # the device's bench row
    markdown: Path | None = None  # the re-rendered report.md the row joined


def remote_bench_config(report: Path | str | None = None, batch_sizes: list[int] | None = None,
                        seq_len: int | None = None, threads: int | None = None) -> RemoteBenchConfig:
    """Bench settings; by default those of the report the row joins, so the columns line up."""
    from slimbert.deploy.remote_bench import writable_report

    report_config = writable_report(Path(report)).config if report is not None else {}
    try:
        sizes = batch_sizes or report_config.get("batch_sizes") or [1, 8]
        return RemoteBenchConfig(batch_sizes=sizes, seq_len=seq_len or report_config.get("seq_len") or 128,
                                 threads=threads)
    except ValueError as exc:
        raise DeployError(f"--batch-sizes/--seq-len/--threads: {exc}") from exc


def deploy_artifact(artifact: Path | str, device: Device, *, bench: RemoteBenchConfig | None = None,
                    report: Path | str | None = None, keep: int | None = None,
                    min_agreement: float | None = None) -> DeployResult:
    """Install ``artifact`` on ``device``, health-checked before and after the switch (see
    install.py); with ``bench``, time it there (and add the row to ``report``). ``keep``:
    releases kept on the device (default: the device's); ``min_agreement``: the share of
    recorded examples the device must predict as this machine does."""
    from slimbert.deploy.bundle import DEFAULT_MIN_AGREEMENT, make_bundle, read_bundle
    from slimbert.deploy.install import install
    from slimbert.deploy.remote_bench import append_rows, remote_bench
    from slimbert.deploy.transports import open_transport

    if report is not None and bench is None:
        raise DeployError("a report takes the device's bench row: bench to add one.")
    warn_on_isa(Path(artifact), device)
    with tempfile.TemporaryDirectory(prefix="slimbert-bundle-") as tmp, open_transport(device) as transport:
        bundle_dir = make_bundle(Path(artifact), Path(tmp), min_agreement or DEFAULT_MIN_AGREEMENT)
        installed = install(bundle_dir, device, transport, keep=keep)
        result = DeployResult(device, read_bundle(bundle_dir), installed)
        if bench is not None:
            result.row = remote_bench(device, bench, transport)
    if report is not None:
        result.markdown = append_rows(Path(report), [result.row])
    return result


def warn_on_isa(artifact: Path, device: Device) -> str | None:
    """Warn when ``artifact``'s INT8 scheme was measured on another CPU than the device's (its
    inventory entry's ``isa``); returns the warning."""
    from slimbert.artifacts import read_artifact
    from slimbert.hw import isa_mismatch

    found = read_artifact(artifact) if (artifact / "manifest.json").is_file() else None
    tuned = found.manifest.metrics.get("tuned_isa") if found is not None else None
    mismatch = isa_mismatch(tuned, device.isa) if device.isa else None
    if mismatch:
        log.warning("deploying %s to %s: %s", artifact, device.name, mismatch)
    return mismatch


def check_deploy_options(*, artifact: Path | str | None, status: bool, rollback: bool, bench: bool,
                         bench_settings: bool, deploy_settings: bool) -> None:
    """One thing at a time: deploy an artifact (optionally timed), show the status, or roll back."""
    modes = [flag for flag, on in (("ARTIFACT", artifact is not None), ("--status", status),
                                   ("--rollback", rollback)) if on]
    if len(modes) != 1:
        raise DeployError("give an ARTIFACT to deploy, or --status, or --rollback"
                          + (f" (not {' and '.join(modes)} together)." if modes else "."))
    if bench and artifact is None:
        raise DeployError("--bench times a fresh deploy: give an ARTIFACT.")
    if bench_settings and not bench:
        raise DeployError("--report, --batch-sizes, --seq-len and --threads go with --bench.")
    if deploy_settings and artifact is None:
        raise DeployError("--keep, --min-agreement and --require-gate go with a deploy: give an ARTIFACT.")


def check_gate_verdict(artifact: Path | str, verdict: Path | str) -> None:
    """Refuse to ship ``artifact`` unless the gate verdict in ``verdict`` passed for this very model.

    The verdict names the candidate by the content fingerprint its bench row recorded; the
    artifact's own fingerprint must be the same, or the model gated and the model shipped differ.
    """
    import json

    from slimbert.models import content_fingerprint

    path = Path(verdict)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DeployError(f"cannot read the gate verdict {path}: {exc}",
                          hint="write it with `slimbert gate ... --verdict GATE.json`.") from None
    if not isinstance(data, dict) or "passed" not in data:
        raise DeployError(f"{path} is not a gate verdict (no 'passed').",
                          hint="write it with `slimbert gate ... --verdict GATE.json`.")
    if not data["passed"]:
        failed = "; ".join(c.get("message", "") for c in data.get("checks", []) if not c.get("passed"))
        raise DeployError(f"the gate in {path} failed for {data.get('candidate')}: {failed}",
                          hint="deploy a model that passed the gate.")
    expected = data.get("candidate_fingerprint")
    if not expected:
        raise DeployError(f"the gate verdict {path} names no model fingerprint (its bench report "
                          "predates them).",
                          hint="bench the candidate again with this slimbert, then gate it.")
    actual = content_fingerprint(Path(artifact))
    if actual != expected:
        raise DeployError(f"{artifact} is not the model the gate passed ({data.get('candidate')}): its "
                          f"content fingerprint is {actual[:12]}, the gated one {expected[:12]}.",
                          hint="deploy the artifact the gated bench row measured, or bench and gate it.")


def _device(name: str, devices: Path | str, trust_on_first_use: bool) -> Device:
    device = get_device(Path(devices), name)
    device.trust_on_first_use = device.trust_on_first_use or trust_on_first_use
    return device


def deploy_model(artifact: Path | str, device: str, devices: Path | str = "devices.yaml", *,
                 bench: bool = False, report: Path | str | None = None, batch_sizes: list[int] | None = None,
                 seq_len: int | None = None, threads: int | None = None, keep: int | None = None,
                 min_agreement: float | None = None, require_gate: Path | str | None = None,
                 trust_on_first_use: bool = False) -> DeployResult:
    """Deploy ``artifact`` to the device named ``device`` in the inventory ``devices``, as
    `slimbert deploy ARTIFACT --device NAME` does; ``bench`` times it there; ``require_gate``:
    a gate verdict (JSON) that must have passed for this very model."""
    if (report or batch_sizes or seq_len or threads) and not bench:
        raise DeployError("--report, --batch-sizes, --seq-len and --threads go with --bench (bench=True).")
    target = _device(device, devices, trust_on_first_use)
    # everything that can be wrong with the settings fails here, before minutes of uploading
    if require_gate is not None:
        check_gate_verdict(artifact, require_gate)
    cfg = remote_bench_config(report, batch_sizes, seq_len, threads) if bench else None
    return deploy_artifact(artifact, target, bench=cfg, report=report, keep=keep, min_agreement=min_agreement)


def device_status(device: str, devices: Path | str = "devices.yaml", *,
                  trust_on_first_use: bool = False) -> tuple[Device, DeviceStatus]:
    """The live and the previous bundle on the device named ``device``, and the kept releases."""
    from slimbert.deploy.install import status

    target = _device(device, devices, trust_on_first_use)
    return target, status(target)


def rollback_device(device: str, devices: Path | str = "devices.yaml", *, steps: int = 1,
                    to: str | None = None, trust_on_first_use: bool = False) -> tuple[Device, DeviceStatus]:
    """Make an earlier release live again on the device named ``device``, health-checked: the
    previous one (``steps`` 1; a second time: undo), ``steps`` releases back, or release ``to``."""
    from slimbert.deploy.install import rollback

    target = _device(device, devices, trust_on_first_use)
    return target, rollback(target, steps=steps, to=to)


def render_deploy(result: DeployResult) -> str:
    """What a deploy did, as `slimbert deploy` prints it: bundle, install, runtime, rollback
    point, and the device's latencies when it benched."""
    device, info, installed = result.device, result.bundle, result.install
    how = "already there, verified" if installed.reused else "uploaded and verified"
    undo = f"  (undo: slimbert deploy --device {device.name} --rollback)" if installed.previous else ""
    lines = [f"bundle {info['bundle_id']}: {info['artifact']} ({len(info['files'])} files, "
             f"labels: {', '.join(info['labels']) or '—'})",
             f"installed on {device.name} ({device.address}): {installed.path} ({how})",
             f"runtime:  {', '.join(f'{k} {v}' for k, v in installed.runtime.items())}",
             f"health:   {installed.health.get('agreement', 0):.0%} of {installed.health.get('examples')} "
             f"recorded examples agree (min {installed.health.get('min_agreement')}), checked live",
             f"previous: {installed.previous or 'none'}{undo}"]
    row = result.row
    if row is not None:
        lines += [f"latency on {row['target']} ({row.get('platform')}, "
                  f"onnxruntime {row.get('onnxruntime')}):",
                  f"  {'batch':>5} {'seq':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'examples/s':>11}"]
        lines += [f"  {s['batch_size']:>5} {s['seq_len']:>5} {s['p50_ms']:>9.2f} {s['p90_ms']:>9.2f} "
                  f"{s['p99_ms']:>9.2f} {s['throughput']:>11.1f}" for s in row["latency"]]
    return "\n".join(lines)


def render_status(device: Device, state: DeviceStatus) -> str:
    """The live and the previous bundle on ``device``, one line each."""
    lines = [f"device:   {device.name} ({device.address}), root {state.root}"]
    for what, bundle_id, info in (("current", state.current, state.current_info),
                                  ("previous", state.previous, state.previous_info)):
        label = f"{bundle_id} ({info.get('artifact')}, from {info.get('source')})"
        lines.append(f"{what + ':':<9} {label if bundle_id else 'none'}")
    if state.releases:
        lines.append(f"kept:     {', '.join(state.releases)} (oldest first; --to RELEASE)")
    return "\n".join(lines)
