"""Latency of the live bundle measured on the device, as a row of a bench report.

The runner times the same workload as ``slimbert bench`` (full-length synthetic inputs,
warm-up, then timed runs to a budget), so a Raspberry Pi's row can sit in the same table
as the build machine's CPU and GPU rows. Accuracy is not measured on the device (the
evaluation data stays here), so the row's accuracy is None and renders as "—".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimbert.artifacts import MANIFEST, write_json_atomic
from slimbert.bench.report import BenchReport, BenchRow, load_report
from slimbert.deploy.devices import Device
from slimbert.deploy.install import python_command, remote_root
from slimbert.deploy.transports import Transport, connected
from slimbert.errors import DeployError

_EXIT_MISSING = 4
_REPORT_HINT = "give the report.json of a `slimbert run` or `slimbert bench` run folder."


@dataclass
class RemoteBenchConfig:
    """What to time on the device; defaults are those of the runner."""

    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    seq_len: int = 128
    threads: int | None = None  # None: the device's 'threads' from devices.yaml, else all cores
    warmup: int = 3
    min_iters: int = 10
    budget_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive integers, got {self.batch_sizes}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.warmup < 0 or self.min_iters < 1 or self.budget_s < 0:
            raise ValueError("warmup must be >= 0, min_iters >= 1 and budget_s >= 0")


def _bench_failed(device: Device, rc: int, err: str) -> DeployError:
    last = err.strip().splitlines()[-1] if err.strip() else f"exit code {rc}"
    if "can't open file" in err:
        return DeployError(f"nothing is installed on device {device.name!r}: {last}",
                           hint=f"deploy first: slimbert deploy ARTIFACT --device {device.name} --bench")
    if rc == _EXIT_MISSING:
        return DeployError(f"device {device.name!r} cannot run the bundle any more: {err.strip()}",
                           hint="reinstall the missing packages on the device (the 'fix:' line above).")
    return DeployError(f"the benchmark failed on device {device.name!r}: {last}",
                       hint="check --seq-len against the model's maximum positions; run `runner.py bench` "
                            "in the device's current/ folder to see the whole output.")


def bench_row(device: Device, result: dict[str, Any], root: str) -> dict[str, Any]:
    """The runner's JSON as a bench report row (same keys as slimbert.bench.run's rows)."""
    runtime = (result.get("runtime") or "onnxruntime").split()[0]  # onnxruntime or executorch
    return {
        "artifact": result.get("artifact") or result["bundle_id"],
        "path": f"{device.name}:{root}/releases/{result['bundle_id']}",
        "kind": result.get("kind") or "onnx",
        "target": f"{device.name}:{runtime}",
        "device": device.name,
        "accuracy": None,
        "latency": result["latency"],
        "size_mb": result["size_mb"],
        "retention": None,
        "speedup_b1": None,
        "rss_delta_mb": None,
        "bundle_id": result["bundle_id"],
        "platform": result.get("platform"),
        "onnxruntime": result.get("onnxruntime"),
        "runtime": result.get("runtime"),
        "threads": result.get("threads"),
    }


def remote_bench(device: Device, cfg: RemoteBenchConfig | None = None,
                 transport: Transport | None = None) -> dict[str, Any]:
    """Run ``runner.py bench`` in ``<root>/current`` on ``device``; returns a bench row."""
    cfg = cfg or RemoteBenchConfig()
    threads = cfg.threads or device.threads
    with connected(device, transport) as transport:
        root = remote_root(device, transport)
        args = python_command(device, f"{root}/current/runner.py", "bench",
                              "--batch-sizes", ",".join(map(str, cfg.batch_sizes)),
                              "--seq-len", str(cfg.seq_len), "--warmup", str(cfg.warmup),
                              "--min-iters", str(cfg.min_iters), "--budget-s", str(cfg.budget_s))
        if threads:
            args += ["--threads", str(threads)]
        rc, out, err = transport.run(args, check=False)
    if rc != 0:
        raise _bench_failed(device, rc, err)
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise DeployError(
            f"the benchmark on device {device.name!r} printed no JSON: {out.strip()[-300:]!r}",
            hint="the runner in current/ may be from an incompatible version; deploy again.") from exc
    return bench_row(device, result, root)


def writable_report(path: Path) -> BenchReport:
    """A bench report.json that deploy may add rows to."""
    report = load_report(path, DeployError, _REPORT_HINT, required=("rows", "config"))
    manifest = Path(path).parent / MANIFEST
    if manifest.is_file() and Path(path).name in json.loads(manifest.read_text()).get("files", {}):
        raise DeployError(f"{path} belongs to the bench stage's artifact; editing it would break its "
                          f"{MANIFEST} hashes.",
                          hint="append to the run folder's copy instead: "
                               f"{Path(path).parent.parent / 'report.json'}")
    return report


def _remote_notes(rows: list[BenchRow]) -> str:
    remote = [r for r in rows if r.extra.get("bundle_id") and r.extra.get("platform")]
    if not remote:
        return ""
    lines = ["", "Measured on devices (slimbert deploy --bench; accuracy is not measured there):", ""]
    lines += [f"- `{r.target}`: bundle {r.extra['bundle_id']}, {r.extra['platform']}, onnxruntime "
              f"{r.extra.get('onnxruntime')}, threads {r.threads or 'all'}" for r in remote]
    return "\n".join(lines) + "\n"


def append_rows(report_path: Path, rows: list[dict[str, Any]]) -> Path:
    """Add ``rows`` to a bench report.json and re-render report.md beside it; returns report.md.

    A row for the same artifact and target replaces the old one, so re-running a deploy
    bench updates the table instead of growing it.
    """
    from slimbert.artifacts import write_text_atomic
    from slimbert.bench.report import render_markdown

    report_path = Path(report_path)
    report = writable_report(report_path)
    seq_len = report.config.get("seq_len")
    new = [BenchRow.from_dict(row) for row in rows]
    for row in new:
        lengths = {s["seq_len"] for s in row.latency}
        if seq_len is not None and lengths != {seq_len}:
            raise DeployError(f"the device was timed at sequence length {sorted(lengths)}, the report at "
                              f"{seq_len}; their latencies do not compare.",
                              hint=f"bench again with --seq-len {seq_len}.")
    report.replace_rows(new)
    for row in new:
        row.speedup_b1 = report.speedup(row)
    write_json_atomic(report_path, report.to_dict())
    markdown_path = report_path.with_name("report.md")
    write_text_atomic(markdown_path, render_markdown(report) + _remote_notes(report.rows))
    return markdown_path
