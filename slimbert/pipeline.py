"""Run a recipe: resolve each stage's input, reuse finished stages, write artifacts.

A stage is skipped when its folder holds a manifest whose ``inputs_hash`` equals the hash
of everything the stage would read now (its config, its input's content, the dataset's
content, the seed), or which differs only by settings added to slimbert since, left at
their defaults. Interrupted training resumes from the checkpoint in ``.work/``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from slimbert import distributed
from slimbert.artifacts import (
    FORMAT_VERSION,
    Artifact,
    Manifest,
    artifact_writer,
    finish_artifact,
    read_artifact,
    sha256_json,
    write_json_atomic,
    write_text_atomic,
)
from slimbert.bench.run import BenchEntry
from slimbert.data import TextClassificationData, load_dataset, with_absolute_paths
from slimbert.errors import RecipeError
from slimbert.models import model_fingerprint, resolve_model
from slimbert.recipe import Recipe, StageSpec
from slimbert.schema import field_defaults, to_dict
from slimbert.stages import MODEL_KINDS, STAGES, StageContext, StageInput, detect_kind

log = logging.getLogger(__name__)


@dataclass
class StageOutcome:
    name: str
    type: str
    status: str  # "ran" or "reused"
    seconds: float
    artifact: Artifact


@dataclass
class RunResult:
    out_dir: Path
    stages: list[StageOutcome] = field(default_factory=list)

    def artifact(self, name: str) -> Artifact:
        return next(s.artifact for s in self.stages if s.name == name)

    @property
    def report_path(self) -> Path | None:
        reports = [s for s in self.stages if s.artifact.kind == "report"]
        return reports[-1].artifact.path / "report.md" if reports else None


class _Run:
    """State of one recipe run: the data and base model, loaded on first use."""

    def __init__(self, recipe: Recipe, out_dir: Path, progress: bool, withhold_test: bool = False):
        self.recipe = recipe
        self.out_dir = out_dir
        self.progress = progress
        self.withhold_test = withhold_test
        self._data: TextClassificationData | None = None
        self._model: StageInput | None = None
        self.done: dict[str, StageInput] = {}

    @property
    def data(self) -> TextClassificationData:
        if self._data is None:
            self._data = load_dataset(self.recipe.dataset, seed=self.recipe.seed,
                                      base=self.recipe.base_dir)
            if self.withhold_test:
                self._data = self._data.withholding("test")
        return self._data

    @property
    def model(self) -> StageInput:
        if self._model is None:
            path = resolve_model(self.recipe.model, base=self.recipe.base_dir)
            self._model = StageInput("model", path, "hf-model", model_fingerprint(path))
        return self._model

    def resolve_input(self, spec: StageSpec) -> StageInput | None:
        wanted = STAGES[spec.type].input_kind
        if wanted is None:
            return None
        if spec.input == "model":
            found = self.model
        elif spec.input is not None:
            found = self.done[spec.input]
        else:  # the latest earlier stage of the right kind, else the base model
            earlier = [s for s in self.done.values() if s.kind == wanted]
            if earlier:
                found = earlier[-1]
            elif wanted == "hf-model":
                found = self.model
            else:
                raise RecipeError(
                    f"stage {spec.name!r} ({spec.type}) needs a {wanted} input and no earlier "
                    "stage produces one.",
                    hint="add the stage that produces it first, or set `input:`.",
                )
        if found.kind != wanted:
            raise RecipeError(
                f"stage {spec.name!r} ({spec.type}) needs a {wanted} input, but "
                f"{found.name!r} is a {found.kind}.",
            )
        return found

    def resolve_reference(self, spec: StageSpec, ref: str) -> StageInput:
        """An artifact a stage's config names: an earlier model stage, else a model folder."""
        if ref in self.done:
            return self.done[ref]
        if ref == "model":
            return self.model
        path = Path(ref).expanduser()
        path = path if path.is_absolute() else self.recipe.base_dir / path
        if not path.is_dir() or detect_kind(path) != "hf-model":
            raise RecipeError(
                f"stage {spec.name!r} refers to {ref!r}, which is neither an earlier model stage "
                "nor a transformers model folder.",
                hint=f"earlier stages: {', '.join(self.done) or 'none'}.",
            )
        return StageInput(ref, path, "hf-model", model_fingerprint(path))

    def record(self, name: str, artifact: Artifact) -> None:
        """Make a finished stage's model available as a later stage's input."""
        if artifact.kind in MODEL_KINDS:
            self.done[name] = StageInput(name, artifact.path, artifact.kind,
                                         sha256_json(artifact.manifest.files))

    def bench_entries(self, spec: StageSpec) -> list[BenchEntry]:
        names = spec.config.artifacts
        if names is None:
            return [BenchEntry(s.name, s.path, s.kind) for s in self.done.values() if s.kind in MODEL_KINDS]
        entries = []
        for name in names:
            if name in self.done:
                s = self.done[name]
                entries.append(BenchEntry(s.name, s.path, s.kind))
                continue
            if name == "model":
                entries.append(BenchEntry("model", self.model.path, "hf-model"))
                continue
            path = Path(name).expanduser()
            path = path if path.is_absolute() else self.recipe.base_dir / path
            kind = detect_kind(path) if path.is_dir() else None
            if kind not in MODEL_KINDS:
                what = (f"a {kind} folder, not a model" if kind else "a folder without a model"
                        if path.is_dir() else "neither an earlier stage nor an existing folder")
                earlier = f"; earlier stages: {', '.join(self.done)}" if self.done else ""
                raise RecipeError(
                    f"bench artifact {name!r} is {what}.",
                    hint="give a model folder (config.json + weights, model.onnx, model.ort, "
                    f"model.pte or model.pt2){earlier}.",
                )
            entries.append(BenchEntry(path.name, path, kind))
        return entries


def _input_fingerprint(entry: StageInput | BenchEntry) -> str:
    art = read_artifact(entry.path)
    return sha256_json(art.manifest.files) if art is not None else model_fingerprint(entry.path)


@dataclass
class _Plan:
    """What a stage reads, and the hash of all of it."""

    input: StageInput | None
    entries: list[BenchEntry]
    parents: dict[str, str]
    references: dict[str, StageInput]
    inputs_hash: str


def _plan(run: _Run, spec: StageSpec) -> _Plan:
    stage = STAGES[spec.type]
    stage_input = run.resolve_input(spec)
    entries = run.bench_entries(spec) if spec.type == "bench" else []
    parents = {stage_input.name: stage_input.fingerprint} if stage_input else {
        e.name: run.done[e.name].fingerprint if e.name in run.done else _input_fingerprint(e)
        for e in entries}
    references = {ref: run.resolve_reference(spec, ref)
                  for ref in (stage.references(spec.config, run.done.keys()) if stage.references else [])}
    parents |= {ref: r.fingerprint for ref, r in references.items()}
    inputs_hash = _inputs_hash(run, spec.type, to_dict(spec.config), parents)
    return _Plan(stage_input, entries, parents, references, inputs_hash)


def _inputs_hash(run: _Run, stage_type: str, config: dict, parents: dict[str, str]) -> str:
    return sha256_json({
        "format": FORMAT_VERSION, "type": stage_type, "config": config,
        "parents": parents, "data": run.data.fingerprint,
        "max_length": run.recipe.dataset.max_length, "seed": run.recipe.seed,
    })


def _unchanged(run: _Run, spec: StageSpec, plan: _Plan, existing: Artifact) -> bool:
    """Whether ``existing`` was made from the inputs the stage would read now.

    Either its hash matches, or it predates settings that slimbert has since added to the
    stage and that this recipe leaves at their defaults: a new version must not retrain a
    student because its config gained an option nobody uses. Its recorded config (hashed
    with today's other inputs) must then give its recorded hash, and every other setting
    must be equal.
    """
    recorded = existing.manifest.inputs_hash
    if recorded == plan.inputs_hash:
        return True
    old, now = existing.manifest.config, to_dict(spec.config)
    added = now.keys() - old.keys()
    if not added or old.keys() - now.keys() or any(old[k] != now[k] for k in old):
        return False
    defaults = field_defaults(spec.config)
    if any(k not in defaults or now[k] != defaults[k] for k in added):
        return False
    return _inputs_hash(run, spec.type, old, plan.parents) == recorded


def _context(run: _Run, spec: StageSpec, plan: _Plan, out: Path, work: Path) -> StageContext:
    recipe = run.recipe
    return StageContext(spec.name, spec.config, plan.input, run.data, recipe.dataset.max_length,
                        recipe.seed, out, work, run.progress, plan.entries, recipe.name,
                        {ref: r.path for ref, r in plan.references.items()},
                        with_absolute_paths(recipe.dataset, recipe.base_dir), run.out_dir)


def _why_it_runs(run: _Run, spec: StageSpec, plan: _Plan, existing: Artifact | None, *, force: bool,
                 rerun: tuple[str, ...]) -> str | None:
    """Why the stage must run now; None when its finished artifact can be reused."""
    if force:
        return "--force"
    if spec.name in rerun:
        return "--rerun"
    if existing is None:
        return "no artifact yet"
    if not _unchanged(run, spec, plan, existing):
        return "its settings or inputs changed"
    if not all((existing.path / f).is_file() for f in existing.manifest.files):
        return "files of its artifact are missing"
    return None


def _check_rerun(recipe: Recipe, rerun: tuple[str, ...]) -> None:
    unknown = [n for n in rerun if n not in {s.name for s in recipe.stages}]
    if unknown:
        raise RecipeError(f"--rerun names unknown stage {unknown[0]!r}; stages: "
                          f"{', '.join(s.name for s in recipe.stages)}.")


@dataclass
class PlannedStage:
    name: str
    type: str
    reason: str | None  # why it would run; None: it would be reused


def plan_recipe(recipe: Recipe, out_dir: Path | str, *, force: bool = False,
                rerun: tuple[str, ...] = ()) -> list[PlannedStage]:
    """What ``run_recipe`` would do with ``out_dir``, without running or writing anything.

    A stage downstream of one that runs is said to run after it: its input will be new
    (a deterministic export may still come out identical and be reused then).
    """
    out_dir = Path(out_dir)
    _check_rerun(recipe, rerun)
    run = _Run(recipe, out_dir, progress=False)
    planned: list[PlannedStage] = []
    for spec in recipe.stages:
        plan = _plan(run, spec)
        existing = read_artifact(out_dir / spec.name)
        waits = [p.name for p in planned if p.reason is not None and p.name in plan.parents]
        reason = _why_it_runs(run, spec, plan, existing, force=force, rerun=rerun)
        if reason is None and waits:
            reason = f"after {', '.join(waits)}"
        planned.append(PlannedStage(spec.name, spec.type, reason))
        kind = STAGES[spec.type].output_kind
        if kind in MODEL_KINDS:  # the artifact there now stands in for the one a run would make
            fingerprint = sha256_json(existing.manifest.files) if existing else f"pending {spec.name}"
            run.done[spec.name] = StageInput(spec.name, out_dir / spec.name, kind, fingerprint)
    return planned


def _produce(run: _Run, spec: StageSpec, plan: _Plan, dest: Path, work: Path) -> Artifact:
    """Run the stage into a temporary folder and rename it to ``dest`` (main process)."""
    stage = STAGES[spec.type]
    with artifact_writer(dest) as tmp:
        metrics = stage.run(_context(run, spec, plan, tmp, work))
        if stage.trains:
            distributed.barrier()  # every process is done with the work folder
        manifest = Manifest(
            kind=stage.output_kind, stage=spec.name, stage_type=spec.type,
            inputs_hash=plan.inputs_hash, config=to_dict(spec.config), parents=plan.parents,
            metrics=metrics,
            extra={"recipe": run.recipe.name, "seed": run.recipe.seed, "dataset": run.data.info,
                   "dataset_config": to_dict(with_absolute_paths(run.recipe.dataset, run.recipe.base_dir)),
                   "input": str(plan.input.path) if plan.input else None,
                   "base_model": run.recipe.model},
        )
        finish_artifact(tmp, manifest)
    shutil.rmtree(work, ignore_errors=True)
    return read_artifact(dest)


def _train_alongside(run: _Run, spec: StageSpec, plan: _Plan, work: Path) -> None:
    """Take part in a training stage (not the main process): its outputs go to scratch."""
    work.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=work.parent, prefix=f".rank{distributed.rank()}-{spec.name}-"))
    try:
        STAGES[spec.type].run(_context(run, spec, plan, scratch, work))
        distributed.barrier()  # the main one's, in _produce
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_recipe(recipe: Recipe, out_dir: Path | str, *, force: bool = False,
               rerun: tuple[str, ...] = (), progress: bool = True, withhold_test: bool = False) -> RunResult:
    """Run every stage of ``recipe`` into ``out_dir``, reusing finished ones.

    ``withhold_test``: no stage may read the test split (model selection); one that tries
    fails with a DataError.

    Under a multi-process launch the result is the main process's; the others only lend
    their devices to the training stages and return an empty one.
    """
    out_dir = Path(out_dir)
    _check_rerun(recipe, rerun)
    main = distributed.is_main()
    run = _Run(recipe, out_dir, progress and main, withhold_test)
    result = RunResult(out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "recipe.json", recipe.to_dict())
    unread: list[str] = []  # other processes: stages the main one finishes, read when needed
    for spec in recipe.stages:
        stage = STAGES[spec.type]
        if not main and not stage.trains:
            unread.append(spec.name)
            continue
        dest = out_dir / spec.name
        # a training stage: the main process resolves (and may fetch) its inputs first; the
        # others go on once it has finished every stage before this one
        with distributed.main_first() if stage.trains else contextlib.nullcontext():
            for name in unread:
                run.record(name, read_artifact(out_dir / name))
            unread.clear()
            plan = _plan(run, spec)
            existing = read_artifact(dest)
            reuse = _why_it_runs(run, spec, plan, existing, force=force, rerun=rerun) is None
        if stage.trains:
            reuse = distributed.broadcast(reuse)  # one decision for all
        work = out_dir / ".work" / f"{spec.name}-{plan.inputs_hash[:12]}"
        start = time.perf_counter()
        if not main:
            if not reuse:
                _train_alongside(run, spec, plan, work)
            unread.append(spec.name)
            continue
        if reuse:
            log.info("stage %s: unchanged inputs, reusing %s", spec.name, dest)
            artifact, status = existing, "reused"
        else:
            log.info("stage %s (%s): running", spec.name, spec.type)
            artifact, status = _produce(run, spec, plan, dest, work), "ran"
        seconds = time.perf_counter() - start
        result.stages.append(StageOutcome(spec.name, spec.type, status, seconds, artifact))
        run.record(spec.name, artifact)
        if artifact.kind == "report":
            for name in ("report.md", "report.json", "report.html"):  # the run's headline, at its top level
                if (dest / name).is_file():
                    write_text_atomic(out_dir / name, (dest / name).read_text())
    if main:
        write_json_atomic(out_dir / "run.json", {
            "recipe": recipe.name,
            "stages": [{"name": s.name, "type": s.type, "status": s.status,
                        "seconds": round(s.seconds, 1), "path": str(s.artifact.path)}
                       for s in result.stages],
        })
    return result
