"""Run a recipe: resolve each stage's input, reuse finished stages, write artifacts.

A stage is skipped when its folder holds a manifest whose ``inputs_hash`` equals the hash
of everything the stage would read now (its config, its input's content, the dataset's
content, the seed), or which differs only by settings added to slimbert since, left at
their defaults; and when, besides, the libraries that shape its artifact have the versions
it recorded and every file still has its recorded sha256. Interrupted training resumes
from the checkpoint in ``.work/``.

Before anything is written, the whole recipe is planned: its data, model and the folders it
names are checked, and a stage folder another recipe made is not replaced without a word.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from slimbert import distributed
from slimbert.artifacts import (
    FORMAT_VERSION,
    KIND_LIBRARIES,
    Artifact,
    Manifest,
    artifact_writer,
    finish_artifact,
    read_artifact,
    sha256_json,
    version_changes,
    write_json_atomic,
    write_text_atomic,
)
from slimbert.data import TextClassificationData, load_dataset, with_absolute_paths
from slimbert.errors import ArtifactError, RecipeError
from slimbert.formats import MODEL_FORMATS
from slimbert.formats import detect as detect_kind
from slimbert.models import (
    check_length,
    check_model_files,
    check_weights,
    content_fingerprint,
    model_fingerprint,
    resolve_model,
)
from slimbert.recipe import Recipe, StageSpec
from slimbert.schema import field_defaults, to_dict
from slimbert.stages import STAGES, StageContext, StageInput
from slimbert.tasks import DEFAULT_TASK

log = logging.getLogger(__name__)
_MAX_LENGTH = ("max_length", " (the recipe's dataset.max_length, or --max-length)")


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
        self.inputs: dict[str, StageInput | None] = {}  # stage name -> the input it was planned with
        self._verified: dict[Path, tuple[str, list[str]]] = {}  # folder -> (inputs_hash, bad files)

    def verify(self, artifact: Artifact) -> list[str]:
        """Files of ``artifact`` that no longer match its manifest (hashed once per run)."""
        known = self._verified.get(artifact.path)
        if known is None or known[0] != artifact.manifest.inputs_hash:
            known = (artifact.manifest.inputs_hash, artifact.verify())
            self._verified[artifact.path] = known
        return known[1]

    def check_folder(self, path: Path, spec: StageSpec) -> None:
        """A model folder the recipe names: its files, and the lengths the run will give it."""
        check_model_files(path)
        check_length(path, self.recipe.dataset.max_length, *_MAX_LENGTH)
        if spec.type == "bench":
            check_length(path, max([spec.config.seq_len, *(spec.config.sweep_seq_lens or [])]),
                         "bench seq_len", " (--seq-len)")

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
            check_weights(path)  # every stage that reads the base model reads PyTorch weights
            check_length(path, self.recipe.dataset.max_length, *_MAX_LENGTH)
            self._model = StageInput("model", path, "hf-model", model_fingerprint(path))
        return self._model

    def resolve_input(self, spec: StageSpec) -> StageInput | None:
        wanted = STAGES[spec.type].input_format
        if wanted is None:
            return None
        if spec.input == "model":
            found = self.model
        elif spec.input is not None:
            found = self.done[spec.input]
        else:  # the latest earlier stage of the right format, else the base model
            earlier = [s for s in self.done.values() if s.format == wanted]
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
        if found.format != wanted:
            raise RecipeError(
                f"stage {spec.name!r} ({spec.type}) needs a {wanted} input, but "
                f"{found.name!r} is a {found.format}.",
            )
        return found

    def resolve_reference(self, spec: StageSpec, ref: str) -> StageInput:
        """An artifact a stage's config names: an earlier model stage, the base model, else a
        folder holding a model of a kind the stage reads (``StageType.reference_kinds``)."""
        if ref in self.done:
            return self.done[ref]
        if ref == "model":
            return self.model
        kinds = STAGES[spec.type].reference_kinds
        path = Path(ref).expanduser()
        path = path if path.is_absolute() else self.recipe.base_dir / path
        found = _format(path) if path.is_dir() else None
        if found not in kinds:
            wanted = "a transformers model folder" if kinds == ("hf-model",) else "a model folder"
            what = (f"a {found} folder" if found else "a folder without a model") if path.is_dir() else \
                "not an existing folder"
            raise RecipeError(
                f"stage {spec.name!r} refers to {ref!r}, which is neither an earlier model stage "
                f"nor {wanted} ({what}).",
                hint=f"earlier stages: {', '.join(self.done) or 'none'}; a model folder holds "
                "config.json + weights, model.onnx, model.ort, model.pte or model.pt2.",
            )
        self.check_folder(path, spec)
        # a transformers folder is hashed as the base model is; an exported one by its manifest
        fingerprint = model_fingerprint(path) if found == "hf-model" else content_fingerprint(path)
        return StageInput(ref, path, found, fingerprint)

    def record(self, name: str, artifact: Artifact) -> None:
        """Make a finished stage's model available as a later stage's input."""
        if artifact.kind in MODEL_FORMATS:
            self.done[name] = StageInput(name, artifact.path, artifact.kind,
                                         sha256_json(artifact.manifest.files))


def _format(folder: Path) -> str | None:
    """Format of a model folder: its manifest's (an ArtifactError if that is damaged), else detected."""
    artifact = read_artifact(folder)
    return artifact.kind if artifact is not None else detect_kind(folder)


def _existing(folder: Path) -> tuple[Artifact | None, str | None]:
    """The finished artifact in a stage's folder, or None and why a damaged one does not count."""
    try:
        return read_artifact(folder), None
    except ArtifactError as exc:
        return None, exc.message



@dataclass
class _Plan:
    """What a stage reads, and the hash of all of it."""

    input: StageInput | None
    parents: dict[str, str]
    references: dict[str, StageInput]
    inputs_hash: str


def _plan(run: _Run, spec: StageSpec) -> _Plan:
    stage = STAGES[spec.type]
    stage_input = run.inputs[spec.name] = run.resolve_input(spec)
    parents = {stage_input.name: stage_input.fingerprint} if stage_input else {}
    stage.check(spec.config)  # settings that can only be checked against this machine (bench targets)
    stage.check_input(spec.config, _input_model_config(run, stage_input))
    references = {ref: run.resolve_reference(spec, ref)
                  for ref in stage.references(spec.config, run.done.keys())}
    parents |= {ref: r.fingerprint for ref, r in references.items()}
    inputs_hash = _inputs_hash(run, spec.type, to_dict(spec.config), parents)
    return _Plan(stage_input, parents, references, inputs_hash)


def _input_model_config(run: _Run, stage_input: StageInput | None) -> dict | None:
    """The config.json of the model a stage reads, where it is known before anything runs:
    the folder's own, or for a stage still to run that keeps its input's layers (finetune),
    its input's, and so on back to the base model."""
    types = {s.name: s.type for s in run.recipe.stages}
    while stage_input is not None:
        path = stage_input.path / "config.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
        if stage_input.name not in types or not STAGES[types[stage_input.name]].keeps_layers:
            return None
        stage_input = run.inputs.get(stage_input.name)
    return None


def _inputs_hash(run: _Run, stage_type: str, config: dict, parents: dict[str, str]) -> str:
    # the task is hashed only when it is not the default: classification stages made before
    # tasks existed keep their hashes, and the same stage on another task never matches them
    task = {"task": run.recipe.task} if run.recipe.task != DEFAULT_TASK else {}
    return sha256_json({
        "format": FORMAT_VERSION, "type": stage_type, "config": config,
        "parents": parents, "data": run.data.fingerprint,
        "max_length": run.recipe.dataset.max_length, "seed": run.recipe.seed, **task,
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
                        recipe.seed, out, work, run.progress, recipe.name,
                        {ref: r.path for ref, r in plan.references.items()},
                        with_absolute_paths(recipe.dataset, recipe.base_dir), run.out_dir, recipe.task)


_CHANGED = "its settings or inputs changed"


def _libraries(stage_type: str) -> tuple[str, ...]:
    """slimbert and the libraries of the stage's input and output kinds: what shapes its artifact."""
    stage = STAGES[stage_type]
    formats = [f for f in (stage.input_format, stage.output_format) if f]
    return ("slimbert", *dict.fromkeys(lib for f in formats for lib in KIND_LIBRARIES.get(f, ())))


@dataclass
class _Why:
    """Why a stage runs; ``warn``: its artifact looked reusable but cannot be trusted."""

    reason: str | None  # None: the finished artifact is reused
    warn: bool = False


def _why_it_runs(run: _Run, spec: StageSpec, plan: _Plan, existing: Artifact | None, *, force: bool,
                 rerun: tuple[str, ...], damaged: str | None = None) -> _Why:
    """Why the stage must run now; a reason of None when its finished artifact can be reused.

    An artifact made from today's inputs is still rebuilt when a library that shapes it has
    another version now, or when a file no longer has its recorded sha256. Versions are
    compared, not hashed: the stage hash stays what it was, so an artifact made before they
    were compared is reused, and the message can name the library that changed.
    """
    if force:
        return _Why("--force")
    if spec.name in rerun:
        return _Why("--rerun")
    if damaged is not None:
        return _Why(damaged, warn=True)
    if existing is None:
        return _Why("no artifact yet")
    if not _unchanged(run, spec, plan, existing):
        return _Why(_CHANGED)
    changes = version_changes(existing.manifest.versions, _libraries(spec.type))
    if changes:
        return _Why(f"made with other library versions: {', '.join(changes)}", warn=True)
    bad = run.verify(existing)
    if bad:
        missing = not (existing.path / bad[0]).is_file()
        state = "is missing" if missing else "does not match its recorded sha256"
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return _Why(f"{spec.name}/{bad[0]} {state}{more}", warn=True)
    return _Why(None)


def _clash(run: _Run, spec: StageSpec, existing: Artifact | None, *, force: bool,
           rerun: tuple[str, ...]) -> str | None:
    """The recipe that made the stage folder this one would replace, if another and not consented to.

    Companion recipes share a run folder to reuse its stages; one stage name in both (a
    `bench`) must not silently replace the other recipe's artifact. --rerun STAGE or
    --force say the user means it.
    """
    made_by = existing.manifest.extra.get("recipe") if existing is not None else None
    if made_by is None or made_by == run.recipe.name or force or spec.name in rerun:
        return None
    return made_by


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
    clash: str | None = None  # the other recipe whose artifact a run would replace (refused)
    warn: bool = False  # its artifact was there but cannot be trusted (files, versions, manifest)


def _preflight(run: _Run, *, force: bool, rerun: tuple[str, ...]) -> list[PlannedStage]:
    """Plan every stage against the run folder as it is; raises on bad input, writes nothing.

    A stage downstream of one that runs is said to run after it: its input will be new
    (a deterministic export may still come out identical and be reused then).
    """
    planned: list[PlannedStage] = []
    for spec in run.recipe.stages:
        plan = _plan(run, spec)
        existing, damaged = _existing(run.out_dir / spec.name)
        waits = [p.name for p in planned if p.reason is not None and p.name in plan.parents]
        why = _why_it_runs(run, spec, plan, existing, force=force, rerun=rerun, damaged=damaged)
        # an input that is itself rebuilt is the reason (its folder may be damaged or absent now)
        reason = f"after {', '.join(waits)}" if waits and why.reason in (None, _CHANGED) else why.reason
        clash = _clash(run, spec, existing, force=force, rerun=rerun) if reason is not None else None
        planned.append(PlannedStage(spec.name, spec.type, reason, clash, why.warn))
        output_format = STAGES[spec.type].output_format
        if output_format in MODEL_FORMATS:  # the artifact there now stands in for the one a run would make
            fingerprint = sha256_json(existing.manifest.files) if existing else f"pending {spec.name}"
            run.done[spec.name] = StageInput(spec.name, run.out_dir / spec.name, output_format, fingerprint)
    run.done.clear()
    return planned


def plan_recipe(recipe: Recipe, out_dir: Path | str, *, force: bool = False,
                rerun: tuple[str, ...] = ()) -> list[PlannedStage]:
    """What ``run_recipe`` would do with ``out_dir``, without running or writing anything.

    A stage whose folder another recipe made says so in its reason: a run would refuse it.
    """
    _check_rerun(recipe, rerun)
    planned = _preflight(_Run(recipe, Path(out_dir), progress=False), force=force, rerun=rerun)
    for p in planned:
        if p.clash is not None:
            p.reason += (f"; refused: {p.name} was made by recipe {p.clash!r} (--rerun {p.name} or "
                         "--force replaces it)")
    return planned


def _refuse_clashes(recipe: Recipe, out_dir: Path, planned: list[PlannedStage]) -> None:
    clashes = [p for p in planned if p.clash is not None]
    if not clashes:
        return
    first = clashes[0]
    named = ", ".join(f"{p.name} (recipe {p.clash!r})" for p in clashes)
    raise RecipeError(
        f"recipe {recipe.name!r} would replace stage folders in {out_dir} that another recipe made: "
        f"{named}; {first.name} would run because {first.reason}.",
        hint=f"give the stage another name in this recipe (e.g. {first.name}-{recipe.name}), run into "
        f"another --out, or pass --rerun {first.name} (or --force) to replace it.",
    )


def _produce(run: _Run, spec: StageSpec, plan: _Plan, dest: Path, work: Path) -> Artifact:
    """Run the stage into a temporary folder and rename it to ``dest`` (main process)."""
    stage = STAGES[spec.type]
    with artifact_writer(dest) as tmp:
        metrics = stage.run(_context(run, spec, plan, tmp, work))
        if stage.trains:
            distributed.barrier()  # every process is done with the work folder
        manifest = Manifest(
            kind=stage.output_format, stage=spec.name, stage_type=spec.type,
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


def _folder_owner(out_dir: Path) -> str | None:
    """The recipe whose run folder ``out_dir`` is (the name in its recipe.json); None for a new one."""
    try:
        return json.loads((out_dir / "recipe.json").read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):  # absent, or unreadable: the folder is this run's
        return None


def run_recipe(recipe: Recipe, out_dir: Path | str, *, force: bool = False,
               rerun: tuple[str, ...] = (), progress: bool = True, withhold_test: bool = False,
               log_reuse: bool = True) -> RunResult:
    """Run every stage of ``recipe`` into ``out_dir``, reusing finished ones.

    ``log_reuse``: say each reused stage at INFO (False: at DEBUG, for a search that runs
    its candidates' shared stages again and again).

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
    owner = _folder_owner(out_dir)
    guest = owner is not None and owner != recipe.name  # a companion recipe, reusing owner's stages
    if main:  # every input error surfaces here, before the run folder is created
        planned = _preflight(run, force=force, rerun=rerun)
        _refuse_clashes(recipe, out_dir, planned)
        out_dir.mkdir(parents=True, exist_ok=True)
        if guest:
            log.info("%s is recipe %r's run folder: its recipe.json, run.json and report stay as they are; "
                     "this run's report stays in its bench stage's folder", out_dir, owner)
        else:
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
            existing, damaged = _existing(dest)
            why = _why_it_runs(run, spec, plan, existing, force=force, rerun=rerun, damaged=damaged)
            reuse = why.reason is None
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
            log.log(logging.INFO if log_reuse else logging.DEBUG, "stage %s: unchanged inputs, reusing %s",
                    spec.name, dest)
            artifact, status = existing, "reused"
        else:
            if why.warn:
                log.warning("stage %s: not reusing %s: %s; running it again", spec.name, dest, why.reason)
            log.info("stage %s (%s): running", spec.name, spec.type)
            artifact, status = _produce(run, spec, plan, dest, work), "ran"
        seconds = time.perf_counter() - start
        result.stages.append(StageOutcome(spec.name, spec.type, status, seconds, artifact))
        run.record(spec.name, artifact)
        if artifact.kind == "report" and not guest:
            for name in ("report.md", "report.json", "report.html"):  # the run's headline, at its top level
                if (dest / name).is_file():
                    write_text_atomic(out_dir / name, (dest / name).read_text())
    if main:
        write_json_atomic(out_dir / (f"run-{recipe.name}.json" if guest else "run.json"), {
            "recipe": recipe.name,
            "stages": [{"name": s.name, "type": s.type, "status": s.status,
                        "seconds": round(s.seconds, 1), "path": str(s.artifact.path)}
                       for s in result.stages],
        })
    return result
