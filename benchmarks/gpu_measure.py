"""Everything issue 29 measures on a lent GPU, in one call, each phase under its own timeout.

    python benchmarks/gpu_measure.py measure [--out DIR] [--run PACKED_RUN] [--work DIR]
        [--phases pytest shapes trained] [--timeout PHASE=SECONDS ...] [--deadline-s 450]
    python benchmarks/gpu_measure.py pack-run --run runs/default --into .gpu-run
    python benchmarks/gpu_measure.py probe --into probe.json

benchmarks/gpu_measure.sh is the entry point on the GPU machine (it installs the carried
wheels first); this module holds the logic so that it is tested on CPU.

Why phases in subprocesses: a device call is short (15 minutes of device time a session,
10 minutes a command), and a first run on a GPU is where graph capture hangs or crashes.
Each phase (the probe of the card, ``pytest -m gpu``, each random-weight shape, the trained
run) runs in its own process group under its own timeout, and the overall deadline cuts
the later ones short; ``gpu_measure.json`` is rewritten before and after every phase, so
whatever stops the call, the file says which phases ran, failed or timed out, and why.

Files written to ``--out`` (at most 8 come back from a device call): gpu_measure.json (the
record), gpu_shapes.json (the three shapes), gpu_serving.json (the trained run, when one
is carried), gpu_pytest.log, gpu_measure.log (every phase's output).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHAPES = ["student-3x384", "minilm-l6-6x384", "bert-base-12x768"]
PHASES = ["pytest", "shapes", "trained"]  # what --phases picks from; the probe always runs first
# seconds per phase: a first run's compile times are unknown, so each gets a share, not all
TIMEOUTS = {"probe": 45, "pytest": 100, "student-3x384": 75, "minilm-l6-6x384": 75,
            "bert-base-12x768": 90, "trained": 100}
DEADLINE_S = 450  # the whole measure, within the 8 minutes the issue allows (install comes before)
MIN_PHASE_S = 15  # a phase that would get less than this is skipped, not started
TRAINED_TARGETS = ["torch-cuda", "torch-cuda-fp16", "torch-cuda-compile-fp16", "torch-cuda-graph-fp16",
                   "torch-cuda-graph-int8wo", "torch-cuda-graph-fp8", "ort-cuda-graph"]
RECORD = "gpu_measure.json"
NOTE = ("Written by benchmarks/gpu_measure.sh on the card named in 'card'. A phase whose status is "
        "not 'passed' produced no numbers; numbers exist only in the files this record names.")
# what a packed run folder keeps of a run (the weights are cast to fp16 to fit the 64 MiB carry)
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "vocab.txt")


@dataclass
class Phase:
    """One step of the measure: a command, its timeout, and where its output goes."""

    name: str
    command: list[str]
    timeout_s: float
    log: Path  # the phase's output is appended here
    env: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # result files in --out it writes


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def tail(path: Path, lines: int = 15) -> list[str]:
    if not path.is_file():
        return []
    return path.read_text(errors="replace").splitlines()[-lines:]


def run_phase(phase: Phase, time_left_s: float) -> dict:
    """Run ``phase`` in its own process group; the record says passed, failed or timed out, and why.

    On timeout the whole group is killed (compile workers too), so nothing of it runs on
    into the next phase's timing.
    """
    timeout = min(phase.timeout_s, time_left_s)
    record = {"name": phase.name, "command": phase.command, "timeout_s": round(timeout, 1),
              "started": now(), "outputs": phase.outputs}
    if timeout < MIN_PHASE_S:
        return {**record, "status": "skipped", "seconds": 0,
                "reason": f"out of time: {time_left_s:.0f} s left of the overall deadline"}
    start = time.monotonic()
    phase.log.parent.mkdir(parents=True, exist_ok=True)
    with open(phase.log, "a") as log:
        log.write(f"\n===== {phase.name}: {' '.join(phase.command)} (timeout {timeout:.0f} s)\n")
        log.flush()
        proc = subprocess.Popen(phase.command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **phase.env},
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    record.update(seconds=round(time.monotonic() - start, 1), returncode=code, log_tail=tail(phase.log))
    if phase.name == "pytest":
        record["summary"] = pytest_summary(phase.log)
    if code is None:
        record.update(status="timed_out", reason=f"still running after {timeout:.0f} s; killed")
    elif code == 0:
        record["status"] = "passed"
    else:
        record.update(status="failed", reason=failure_reason(phase.name, code, phase.log))
    return record


_PYTEST_SUMMARY = re.compile(r"\b\d+ (passed|failed|skipped|errors?|deselected)\b.* in [\d.]+s")


def pytest_summary(log: Path) -> str | None:
    """pytest's closing line ("6 passed, 3 skipped, 333 deselected in 30.9s"), if it got that far."""
    lines = tail(log, 40)
    return next((line.strip("= ") for line in reversed(lines) if _PYTEST_SUMMARY.search(line)), None)


def failure_reason(name: str, code: int, log: Path) -> str:
    """A one-line why for a failed phase: pytest's summary line, else the last line it printed."""
    if name == "pytest":
        if code == 5:
            return "pytest collected no gpu test"
        summary = pytest_summary(log)
        if summary:
            return f"pytest exit {code}: {summary}"
    lines = [line for line in tail(log, 40) if line.strip()]
    return f"exit {code}: {lines[-1].strip() if lines else 'no output'}"


class Record:
    """gpu_measure.json: the card, the versions, and every phase's outcome, rewritten as they go."""

    def __init__(self, out: Path, args: dict):
        self.path = out / RECORD
        self.data = {"note": NOTE, "card": None, "started": now(), "finished": None, "args": args,
                     "install": install_status(), "probe": None, "phases": [], "complete": False}

    def add(self, phase: dict) -> None:
        self.data["phases"] = [p for p in self.data["phases"] if p["name"] != phase["name"]] + [phase]
        self.write()

    def write(self) -> None:
        from slimbert.artifacts import write_json_atomic

        write_json_atomic(self.path, self.data)


def install_status() -> dict:
    """What gpu_measure.sh did with the carried wheels (it exports these before it runs us)."""
    log = os.environ.get("SLIMBERT_GPU_INSTALL_LOG")
    return {"status": os.environ.get("SLIMBERT_GPU_INSTALL", "not run through gpu_measure.sh"),
            "log_tail": tail(Path(log)) if log else []}


def card_name(probe: dict | None) -> str | None:
    """The card's name: torch's, else the first line of nvidia-smi's."""
    if not probe:
        return None
    smi = (probe.get("nvidia_smi") or "").strip().splitlines()
    return probe.get("gpu") or (smi[0].split(",")[0].strip() if smi else None)


def no_cuda_reason(probe: dict | None) -> str | None:
    """Why the GPU phases cannot run, in words a person acts on; None when CUDA is there."""
    if probe is None:
        return "the probe of the GPU did not finish (see gpu_measure.log)"
    if probe.get("cuda_available"):
        return None
    return (f"no CUDA GPU visible to PyTorch (torch {probe.get('torch')}, CUDA {probe.get('cuda')}, "
            f"nvidia-smi: {probe.get('nvidia_smi') or 'none'}): run benchmarks/gpu_measure.sh on the "
            "lent GPU machine (docs/gpu.md, 'How to measure')")


def probe(into: Path) -> None:
    """Card, driver and the versions every number depends on, as JSON in ``into``."""
    import importlib

    info: dict = {"python": sys.version.split()[0], "executable": sys.executable}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = None
        info["nvidia_smi_error"] = str(exc)
    import torch

    info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if info["cuda_available"]:
        info.update(gpu=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()))
    for name in ("transformers", "tokenizers", "huggingface_hub", "torchao", "onnxruntime", "triton",
                 "accelerate", "numpy"):
        try:
            module = importlib.import_module(name)
            info[name] = {"version": getattr(module, "__version__", "?"), "file": module.__file__}
        except Exception as exc:  # a missing or broken package is a finding, not a crash
            info[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    if "version" in info["onnxruntime"]:
        import onnxruntime

        info["onnxruntime"]["providers"] = onnxruntime.get_available_providers()
    from slimbert.artifacts import write_json_atomic

    write_json_atomic(into, info)


def merge_shapes(parts: dict[str, Path], probe_info: dict | None) -> dict:
    """gpu_shapes.json from the per-shape files (complete or cut short), with the checks."""
    from gpu_shapes import TARGET_B1_MS

    shapes = {name: json.loads(path.read_text()) for name, path in parts.items() if path.is_file()}
    return {"note": NOTE, "card": card_name(probe_info), "dtype": "fp16 (quantized rows say theirs)",
            "seq_len": 128, "targets_b1_ms": TARGET_B1_MS, "shapes": shapes, "checks": shape_checks(shapes)}


def _p50(row: dict, batch_size: int) -> float | None:
    return next((s["p50_ms"] for s in row.get("latency", []) if s["batch_size"] == batch_size), None)


def shape_checks(shapes: dict[str, dict]) -> dict:
    """Issue 29's targets against the measured rows: best graph row at b1, student b32 throughput.

    A check whose rows were not measured is None, never passed.
    """
    from gpu_shapes import BASELINE, TARGET_B1_MS, is_graph_runtime

    checks = {}
    for name, part in shapes.items():
        rows = [r for r in part.get("rows", []) if r.get("status") == "measured"]
        baseline = next((r for r in rows if r["target"] == BASELINE), None)
        graphs = [r for r in rows if is_graph_runtime(r["target"]) and _p50(r, 1) is not None]
        best = min(graphs, key=lambda r: _p50(r, 1), default=None)
        target = TARGET_B1_MS.get(name)
        check = {"target_b1_ms": target, "best_graph_row": best["target"] if best else None,
                 "best_graph_b1_ms": _p50(best, 1) if best else None,
                 "baseline_b1_ms": _p50(baseline, 1) if baseline else None,
                 "baseline_b32_ms": _p50(baseline, 32) if baseline else None}
        check["b1_target_met"] = (check["best_graph_b1_ms"] <= target
                                  if best and target is not None else None)
        if baseline and _p50(baseline, 32):
            fastest = min((r for r in graphs if _p50(r, 32)), key=lambda r: _p50(r, 32), default=None)
            check["b32_throughput_vs_baseline"] = (round(_p50(baseline, 32) / _p50(fastest, 32), 2)
                                                   if fastest else None)
        checks[name] = check
    student = checks.get("student-3x384", {})
    ratio = student.get("b32_throughput_vs_baseline")
    checks["student_b32_throughput_at_least_2x"] = ratio >= 2.0 if ratio is not None else None
    return checks


def pytest_command(python: str) -> list[str]:
    """``pytest -m gpu``, with a per-test timeout where pytest-timeout is installed."""
    import importlib.util

    command = [python, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-v", "-rfEs"]
    if importlib.util.find_spec("pytest_timeout"):
        command += ["--timeout", "60"]
    return command


def build_phases(args: argparse.Namespace, out: Path, work: Path) -> list[Phase]:
    """The phases ``args`` ask for, in order (pytest, the shapes, the trained run)."""
    python = sys.executable
    log = out / "gpu_measure.log"
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}
    timeouts = {**TIMEOUTS, **args.timeout}
    phases = []
    if "pytest" in args.phases:
        phases.append(Phase("pytest", pytest_command(python), timeouts["pytest"], out / "gpu_pytest.log",
                            offline, ["gpu_pytest.log"]))
    if "shapes" in args.phases:
        for shape in args.shapes:
            command = [python, str(HERE / "gpu_shapes.py"), "--shape", shape,
                       "--out", str(work / "shapes" / f"{shape}.json"), "--work", str(work / "models")]
            if args.targets:
                command += ["--targets", *args.targets]
            phases.append(Phase(shape, command, timeouts[shape], log, offline, ["gpu_shapes.json"]))
    if "trained" in args.phases and args.run:
        run = args.run.resolve()
        command = [python, str(HERE / "gpu_serving.py"), "--run", str(run),
                   "--out", str(work / "serving"), "--results", str(out / "gpu_serving.json"),
                   "--skip-bert-base", "--batch-sizes", "1", "32", "--no-sweep", "--no-recheck",
                   "--budget-s", "1", "--targets", *TRAINED_TARGETS]
        cache = run / "cache"
        env = {**offline, "SLIMBERT_CACHE": str(cache if cache.is_dir() else work / "cache")}
        phases.append(Phase("trained", command, timeouts["trained"], log, env, ["gpu_serving.json"]))
    return phases


def parse_timeout(text: str) -> tuple[str, float]:
    name, _, seconds = text.partition("=")
    if name not in TIMEOUTS:
        raise argparse.ArgumentTypeError(
            f"unknown phase {name!r} in --timeout; phases: {', '.join(TIMEOUTS)}")
    try:
        value = float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--timeout {text!r}: give PHASE=SECONDS, e.g. pytest=60") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--timeout {text!r}: seconds must be positive")
    return name, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("measure", help="run the phases and write the results")
    measure.add_argument("--out", type=Path, default=None,
                         help="where the results go (default: $OUT where set, else benchmarks/results)")
    measure.add_argument("--work", type=Path, default=Path("/tmp/slimbert-gpu-measure"),
                         help="scratch: models, part files, the trained run's bench folder")
    measure.add_argument("--run", type=Path, default=None,
                         help="a run folder made by `pack-run`; without it the trained phase is skipped")
    measure.add_argument("--phases", nargs="+", choices=PHASES, default=PHASES)
    measure.add_argument("--shapes", nargs="+", choices=SHAPES, default=SHAPES)
    measure.add_argument("--targets", nargs="+", default=None, help="shape rows (default: gpu_shapes.py's)")
    measure.add_argument("--timeout", type=parse_timeout, action="append", default=[], metavar="PHASE=S",
                         help=f"a phase's timeout in seconds (defaults: {TIMEOUTS})")
    measure.add_argument("--deadline-s", type=float, default=DEADLINE_S,
                         help="overall limit; later phases get what is left")
    pack = commands.add_parser("pack-run", help="a finished run, cut to what the GPU machine needs")
    pack.add_argument("--run", type=Path, required=True)
    pack.add_argument("--into", type=Path, default=Path(".gpu-run"))
    pack.add_argument("--with-teacher", action="store_true", help="also the teacher (about 45 MB more)")
    probe_cmd = commands.add_parser("probe", help="the card and versions, as JSON")
    probe_cmd.add_argument("--into", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "measure":
        args.timeout = dict(args.timeout)
        if args.out is None:
            args.out = Path(os.environ["OUT"]) if os.environ.get("OUT") else HERE / "results"
        if args.run is not None and not (args.run / "recipe.json").is_file():
            parser.error(f"--run {args.run}: no recipe.json there; make the folder with "
                         "`python benchmarks/gpu_measure.py pack-run --run runs/default`")
        if args.deadline_s < MIN_PHASE_S:
            parser.error(f"--deadline-s must be at least {MIN_PHASE_S}")
    return args


def measure(args: argparse.Namespace) -> int:
    """Probe, then every phase in turn; 0 when all passed, 1 when one did not, 2 without CUDA."""
    out, work = args.out, args.work
    out.mkdir(parents=True, exist_ok=True)
    (work / "shapes").mkdir(parents=True, exist_ok=True)
    for stale in (work / "shapes").glob("*.json"):  # a rerun on a warm machine merges only its own
        stale.unlink()
    deadline = time.monotonic() + args.deadline_s
    record = Record(out, json.loads(json.dumps(vars(args), default=str)))
    record.write()
    probe_file = work / "probe.json"
    probe_file.unlink(missing_ok=True)
    probe_phase = Phase("probe", [sys.executable, str(Path(__file__).resolve()), "probe", "--into",
                                  str(probe_file)], TIMEOUTS["probe"], out / "gpu_measure.log")
    record.add({"name": "probe", "status": "running", "started": now()})
    record.add(run_phase(probe_phase, deadline - time.monotonic()))
    info = json.loads(probe_file.read_text()) if probe_file.is_file() else None
    record.data.update(probe=info, card=card_name(info))
    phases = build_phases(args, out, work)
    if "trained" in args.phases and not args.run:
        record.add({"name": "trained", "status": "skipped",
                    "reason": "no run folder carried (--run); see pack-run"})
    reason = no_cuda_reason(info)
    if reason:
        for phase in phases:
            record.add({"name": phase.name, "status": "skipped", "reason": reason})
        record.data["finished"] = now()
        record.write()
        print(f"gpu_measure: {reason}", file=sys.stderr)
        return 2
    parts = {p.name: work / "shapes" / f"{p.name}.json" for p in phases if p.name in SHAPES}
    for phase in phases:
        record.add({"name": phase.name, "status": "running", "started": now()})
        result = run_phase(phase, deadline - time.monotonic())
        record.add(result)
        if phase.name in SHAPES:  # merged after each shape: a later hang keeps the earlier ones
            write_shapes(out / "gpu_shapes.json", parts, info)
        print(f"{phase.name}: {result['status']} ({result['seconds']} s) {result.get('reason', '')}")
    record.data.update(finished=now(), complete=all(p["status"] == "passed" for p in record.data["phases"]
                                                   if p["name"] != "trained" or args.run))
    record.write()
    return 0 if record.data["complete"] else 1


def write_shapes(path: Path, parts: dict[str, Path], probe_info: dict | None) -> None:
    from slimbert.artifacts import write_json_atomic

    write_json_atomic(path, merge_shapes(parts, probe_info))


def pack_run(run: Path, into: Path, with_teacher: bool = False) -> dict:
    """Copy what the trained phase needs of ``run`` into ``into``: small enough to carry.

    The GPU machine takes at most 64 MiB with the working tree and the wheels, and the
    run's fp32 student alone is about 70 MB; so weights are stored in fp16 and loaded back
    in fp32. The accuracy reference on the GPU (eager fp32) is then of these fp16-rounded
    weights, which ``PACKED.json`` says. The built-in dataset's files come along as a
    slimbert cache, since the GPU machine cannot download them.
    """
    import shutil

    from slimbert.assets import ASSETS, cache_root

    recipe = json.loads((run / "recipe.json").read_text())
    source = recipe.get("dataset", {}).get("source")
    asset = source if source in ASSETS and ASSETS[source].kind == "dataset" else None
    if asset is None:
        raise SystemExit(f"pack-run: the run's dataset {source!r} is not a built-in one; copy its files "
                         f"into {into} and point recipe.json at them")
    cached = cache_root() / "assets" / asset
    if not (cached / ".complete").is_file():
        raise SystemExit(f"pack-run: dataset asset {asset!r} is not in the cache ({cached}); "
                         f"run `slimbert assets fetch {asset}` first")
    into.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run / "recipe.json", into / "recipe.json")
    models = ["student"] + (["teacher"] if with_teacher else [])
    for name in models:
        _pack_model(run / name, into / name)
    shutil.copytree(cached, into / "cache" / "assets" / asset, dirs_exist_ok=True)
    packed = {"from": str(run.resolve()), "models": models, "weights": "fp16 (cast from the run's fp32 "
              "to fit the carry; loaded back as fp32, so eager fp32 is of the rounded weights)",
              "dataset_asset": asset, "mb": round(sum(f.stat().st_size for f in into.rglob("*")
                                                       if f.is_file()) / 1e6, 1)}
    (into / "PACKED.json").write_text(json.dumps(packed, indent=2) + "\n")
    return packed


def _pack_model(src: Path, dest: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from slimbert.models import check_weights

    weights = check_weights(src)
    if weights is None or weights.suffix != ".safetensors":
        raise SystemExit(f"pack-run: {src} has no single model.safetensors to pack")
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (src / name).is_file():
            (dest / name).write_bytes((src / name).read_bytes())
    tensors = load_file(weights)
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
    save_file(half, dest / weights.name, metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))  # gpu_shapes, when run from elsewhere
    args = parse_args(argv)
    if args.command == "probe":
        probe(args.into)
        return 0
    if args.command == "pack-run":
        print(json.dumps(pack_run(args.run, args.into, args.with_teacher), indent=2))
        return 0
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
