"""One Python function per CLI command, with the command's protections.

`slimbert compress/export/bench/gate/deploy/assets` parse options and print; these do the
work, so a script gets what the command line gets: a model made by slimbert is evaluated on
the split recorded in its manifest (never on its own training sentences), settings are
checked before anything runs, and the results are the run's artifacts.

The names say what they act on (``compress_model``, not ``compress``) because
``slimbert.compress``, ``slimbert.export``, ``slimbert.bench``, ``slimbert.gate`` and
``slimbert.deploy`` are the packages that hold the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimbert.adhoc import bench_recipe, compress_recipe, export_stages, one_stage_recipe
from slimbert.deploy.api import DeployResult, deploy_model, device_status, rollback_device

if TYPE_CHECKING:  # torch and numpy load when a command runs, not when the CLI starts
    from slimbert.gate import GateResult
    from slimbert.pipeline import RunResult

__all__ = ["DeployResult", "TargetInfo", "bench_models", "compress_model", "deploy_model", "device_status",
           "export_model", "fetch_assets", "gate_models", "list_assets", "list_targets", "rollback_device"]


def compress_model(model: str | Path, stage: str, settings: dict[str, Any] | None = None, *,
                   out: Path | str = "runs/compress", name: str | None = None,
                   dataset: dict[str, Any] | None = None, seed: int | None = None,
                   progress: bool = True) -> RunResult:
    """Run one compression stage (finetune, distill, prune, quantize-torch, qat) on ``model``.

    ``settings`` are the stage's recipe keys (e.g. ``{"epochs": 2}``); ``dataset`` the
    recipe's `dataset:` keys. The artifact lands in ``out/name`` (name: the stage).
    """
    from slimbert.pipeline import run_recipe

    recipe = compress_recipe(model, stage, settings, Path(out), name, dataset, seed)
    return run_recipe(recipe, out, progress=progress)


def export_model(model: str | Path, fmt: str = "onnx", *, tolerance: float | None = None, opset: int = 17,
                 out: Path | str = "runs/export", dataset: dict[str, Any] | None = None,
                 seed: int | None = None, progress: bool = True) -> RunResult:
    """Export ``model`` to format ``fmt`` (slimbert.adhoc.EXPORT_FORMATS), validated on real sentences."""
    from slimbert.pipeline import run_recipe

    recipe = one_stage_recipe(model, export_stages(fmt, opset=opset, tolerance=tolerance), dataset, seed)
    return run_recipe(recipe, out, progress=progress)


def bench_models(artifacts: list[str | Path], *, out: Path | str = "runs/bench",
                 dataset: dict[str, Any] | None = None, seed: int | None = None, progress: bool = True,
                 **settings: Any) -> RunResult:
    """Measure ``artifacts`` (model folders) side by side; ``settings`` are BenchConfig's
    (batch_sizes, seq_len, targets, threads, budget_s...). The report is the run's report.json."""
    from slimbert.pipeline import run_recipe

    return run_recipe(bench_recipe(artifacts, dataset, seed, **settings), out, force=True, progress=progress)


def gate_models(baseline: Path | str, candidate: Path | str | None = None, *,
                baseline_artifact: str | None = None, candidate_artifact: str | None = None,
                target: str | None = None, junit: Path | str | None = None, summary: Path | str | None = None,
                **thresholds: Any) -> GateResult:
    """Gate a candidate row against a baseline row of bench reports; ``thresholds`` are
    GateConfig's (max_drop, min_retention, max_latency_ratio...). Check ``.passed``."""
    from slimbert.gate import GateConfig, gate_reports

    return gate_reports(baseline, candidate, baseline_artifact=baseline_artifact,
                        candidate_artifact=candidate_artifact, target=target, config=GateConfig(**thresholds),
                        junit=junit, summary=summary)


@dataclass
class TargetInfo:
    """A bench target (runtime) and whether it runs on this machine."""

    name: str
    kind: str  # the artifact kind it runs
    device: str
    unavailable: str | None  # why it cannot run here; None: it can

    def line(self) -> str:
        """One line of `slimbert bench --list-targets`."""
        state = "available" if self.unavailable is None else f"unavailable: {self.unavailable}"
        return f"{self.name:<23} {self.kind:<11} {self.device:<7} {state}"


def list_targets() -> list[TargetInfo]:
    """Every bench target, with why it cannot run here when it cannot."""
    from slimbert.runtimes import all_runtimes

    return [TargetInfo(r.name, r.kind, r.device, r.unavailable_reason()) for r in all_runtimes().values()]


def list_assets() -> list[Any]:
    """The built-in assets (slimbert.assets.Asset: name, kind, is_cached()...)."""
    from slimbert.assets import ASSETS

    return list(ASSETS.values())


def fetch_assets(names: list[str] | tuple[str, ...] = (), *, force: bool = False) -> dict[str, Path]:
    """Download and verify built-in assets (default: all) into the cache; name -> folder."""
    from slimbert.assets import ASSETS, fetch_asset

    return {name: fetch_asset(name, force=force) for name in names or tuple(ASSETS)}

