"""The search: cheap first, train as few students as the decision needs, choose on held-out data.

1. The teacher and what quantization alone makes of it, on every target (no training).
2. Every (depth, distillation recipe) trains briefly; per depth the better recipe is kept,
   and at most ``survivors`` depths go on: the shallowest already within the budget, then
   the best-scoring (survivors_of_short_rung).
3. Survivors train fully; then pruning (structured, vocabulary) and each target's
   quantizations are tried on them, fastest-looking first. A model whose drop is
   already beyond the budget is not pruned further (pruning does not win accuracy back).
4. Per target, the fastest point whose drop bound is within the budget on the ranking split
   is chosen; the test split is read once to confirm it against the teacher (select.py).

Candidates are ranked on a selection split held out of the training data: training stages
early-stop on dev, so a ranking on dev would favour whichever candidate fitted dev's noise.
A time budget is checked before every unit of work; when it runs out, the search stops,
chooses among what it has, and lists what it did not try.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimbert.bench.report import load_report
from slimbert.errors import RuntimeUnavailable, SlimbertError
from slimbert.search.candidates import Candidates, SplitRow
from slimbert.search.config import OptimizeConfig
from slimbert.search.select import (
    Point,
    confirm,
    drop_bound,
    examples_to_resolve,
    pareto_front,
    ranked_within_budget,
    resolution_points,
)
from slimbert.search.space import (
    TARGETS,
    TEACHER,
    distill_stage,
    model_variants,
    student_layers,
)

log = logging.getLogger(__name__)

MIN_DEV_EXAMPLES = 100  # below this a dev split cannot rank candidates even 5 points apart
# a held-out selection split smaller than this is not worth the training examples it takes:
# the search ranks on dev instead
MIN_SELECTION_EXAMPLES = 200
TEACHER_RUNTIME = "torch-cpu"  # the teacher's dev and test predictions: the reference


def _clock() -> float:
    """Seconds for the time budget (a function of its own, so tests can run time faster)."""
    return time.monotonic()


class OutOfTime(Exception):
    """The time budget ran out before this unit of work."""


@dataclass
class SearchResult:
    points: list[Point]
    chosen: dict[str, dict[str, Any]]  # target -> the chosen point, its confirmation, its folder
    not_tried: list[str]
    teacher_score: float  # on the ranking split
    rank_split: str  # "selection" (held out of training) or "dev"
    rank_examples: int
    resolution_points: float  # 95% half-width of a paired drop on the ranking split
    seconds: float
    stopped_by_time: bool = False
    targets: list[str] = field(default_factory=list)
    # every candidate stage (training, export, quantization, dev and test benches) the search
    # used, and what they took to make, by this search or an earlier one in the same folder:
    # the search's cost from an empty candidates folder, whatever it reused
    stages_used: list[str] = field(default_factory=list)
    made_seconds: float = 0.0


def check_targets(targets: list[str]) -> None:
    """Every target is known and runs here; otherwise say which, why, and how to get it."""
    from slimbert.runtimes import all_runtimes

    runtimes = all_runtimes()
    for target in targets:
        if target not in TARGETS:
            raise SlimbertError(f"optimize cannot search for target {target!r}.",
                                hint=f"known targets: {', '.join(TARGETS)}.")
        for runtime in TARGETS[target].runtimes:
            reason = runtimes[runtime].unavailable_reason()
            if reason:
                raise RuntimeUnavailable(f"target {target!r} cannot run here: {reason}",
                                         hint="optimize for a target this machine has, or install it.")


def check_time_budget(teacher_dir: Path, data, cfg: OptimizeConfig, teacher_layers: int,
                      max_length: int) -> None:
    """Refuse a time budget below what the first student's short run needs (measured here).

    The teacher's forward speed on 64 training examples, scaled to one short distillation of
    the shallowest student: the teacher labels every training example once, the student
    trains on each (forward and backward, about 3 forwards at its depth) for short_epochs.
    """
    from slimbert.data import encode_split
    from slimbert.models import load_tokenizer
    from slimbert.runtimes import get_runtime

    train = data.splits["train"]
    sample = encode_split(load_tokenizer(teacher_dir), train.take(np.arange(min(64, len(train)))), max_length)
    session = get_runtime("torch-cpu").load(teacher_dir)
    session.predict(sample.head(8), 8)  # first call: allocation, thread start
    start = time.perf_counter()
    session.predict(sample, 32)
    per_example = (time.perf_counter() - start) / len(sample)
    fraction = min(len(student_layers(teacher_layers, d)) for d in cfg.depths) / teacher_layers
    seconds = len(train) * per_example * (1 + 3 * fraction * cfg.short_epochs)
    minimum = max(1, int(np.ceil(seconds / 60)))
    if cfg.time_budget_min < minimum:
        raise SlimbertError(
            f"a time budget of {cfg.time_budget_min:g} min cannot train one student here: one short "
            f"run of the shallowest ({len(train)} training examples, {cfg.short_epochs} epoch(s)) takes "
            f"about {minimum} min on this machine (measured from the teacher's speed).",
            hint=f"give --time-budget {minimum} or more, or search quantization alone (no depths).")


def with_selection_split(dataset: dict[str, Any], cfg: OptimizeConfig, train_examples: int) -> dict[str, Any]:
    """``dataset`` holding out ``cfg.selection`` of its training examples to rank candidates on.

    Left as it is when it names its own selection share, or when the share would hold out
    fewer than MIN_SELECTION_EXAMPLES (small data: every training example counts; rank on dev).
    """
    split = dict(dataset.get("split") or {})
    if "selection" in split or round(cfg.selection * train_examples) < MIN_SELECTION_EXAMPLES:
        return dataset
    return {**dataset, "split": {**split, "selection": cfg.selection}}


def load_with_selection_split(dataset: dict[str, Any], cfg: OptimizeConfig, seed: int):
    """(dataset, its DatasetConfig, the loaded data), holding out the selection split that
    ``with_selection_split`` decides on; loaded a second time only when it holds one out."""
    from slimbert.data import DatasetConfig, load_dataset
    from slimbert.schema import from_dict

    dataset_cfg = from_dict(DatasetConfig, dataset, source="optimize dataset")
    data = load_dataset(dataset_cfg, seed=seed)
    held_out = with_selection_split(dataset, cfg, len(data.splits["train"]))
    if held_out is dataset:
        return dataset, dataset_cfg, data
    dataset_cfg = from_dict(DatasetConfig, held_out, source="optimize dataset")
    return held_out, dataset_cfg, load_dataset(dataset_cfg, seed=seed)


def rank_split(data) -> str:
    """The split candidates are ranked on: the held-out selection split, else dev."""
    return "selection" if "selection" in data.splits else "dev"


def check_rank_split(data, max_drop: float) -> float:
    """Refuse a ranking split too small to rank candidates; return the drop it resolves (points)."""
    name = rank_split(data)
    n = len(data.splits[name])
    resolution = resolution_points(n)
    if n < MIN_DEV_EXAMPLES:
        raise SlimbertError(
            f"the {name} split has {n} examples: too few to rank candidates (a paired drop on it "
            f"resolves only about +-{resolution:.1f} points at 95%).",
            hint=f"give a larger {name} split (dataset split.{name}, or a {name} file): {MIN_DEV_EXAMPLES} "
                 f"at the least; resolving {max(max_drop, 1):g} point(s) takes about "
                 f"{examples_to_resolve(max(max_drop, 1))} examples.")
    return round(float(resolution), 2)


class Search:
    """One search over the candidates folder (see the module docstring for the steps)."""

    def __init__(self, candidates: Candidates, cfg: OptimizeConfig, teacher_layers: int, *,
                 num_classes: int = 2, on_point: Callable[[Point], None] | None = None,
                 clock: Callable[[], float] | None = None):
        self.c = candidates
        self.cfg = cfg
        self.teacher_layers = teacher_layers
        self.num_classes = num_classes
        self.on_point = on_point or (lambda p: log.info("candidate %s", p))
        self.clock = clock or _clock
        self.start = self.clock()
        self.deadline = self.start + 60 * cfg.time_budget_min if cfg.time_budget_min else None
        self.points: list[Point] = []
        self.not_tried: list[str] = []
        self.reference: SplitRow | None = None

    # --- time ------------------------------------------------------------------------------
    def _check_time(self, what: str) -> None:
        if self.deadline is not None and self.clock() >= self.deadline:
            raise OutOfTime(what)

    # --- measuring -------------------------------------------------------------------------
    def _point(self, target: str, row: SplitRow) -> Point:
        ref = self.reference
        bound = drop_bound(row.labels, ref.predictions, row.predictions, metric=self.c.metric,
                           num_classes=self.num_classes, confidence=self.cfg.selection_confidence,
                           seed=self.c.seed)
        point = Point(
            target=target, artifact=row.artifact, runtime=row.runtime,
            lineage=self.c.lineage(row.artifact) if row.artifact != TEACHER else [],
            score=round(100 * row.score, 2), drop=round(100 * (ref.score - row.score), 2), drop_bound=bound,
            agreement=round(float(np.mean(row.predictions == ref.predictions)), 4),
            p50_ms=round(row.p50_ms, 3), size_mb=row.size_mb,
            train_seconds=self.c.cost(self.c.lineage(row.artifact)) if row.artifact != TEACHER else 0.0)
        self.points.append(point)
        self.on_point(point)
        return point

    def _try_target(self, model: str, target: str) -> list[Point]:
        """Make and measure every artifact ``target`` runs of ``model``."""
        plan = TARGETS[target]
        points = []
        for artifact in plan.artifacts(model, self.cfg):
            self._check_time(f"{artifact.name} on {target}")
            if artifact.stages:
                self.c.run(list(artifact.stages))
            for runtime in plan.runtimes:
                if _runs(runtime, self.c.kind(artifact.name)):
                    points.append(self._point(target, self.c.measure(artifact.name, runtime)))
        return points

    def _model_score(self, model: str) -> SplitRow:
        return self.c.measure(model, TEACHER_RUNTIME)

    # --- the steps -------------------------------------------------------------------------
    def run(self) -> None:
        self.reference = self._model_score(TEACHER)
        # no training first: the teacher quantized, and with the vocabulary its task uses
        self._explore(TEACHER, structured=False)
        survivors = self._short_rung()
        for model in survivors:
            self._explore(model)

    def _short_rung(self) -> list[str]:
        """Brief training of every (depth, recipe); the promising ones, fully trained."""
        depths = sorted({len(student_layers(self.teacher_layers, d)) for d in self.cfg.depths})
        best_per_depth: dict[int, tuple[float, str]] = {}
        for count in depths:
            layers = student_layers(self.teacher_layers, count)
            for variant in self.cfg.distill:
                stage = distill_stage(layers, variant, self.cfg.short_epochs, self.cfg)
                self._check_time(f"short training of {stage['name']}")
                self.c.run([stage])
                score = self._model_score(stage["name"]).score
                log.info("short run %s: %s %.2f%%", stage["name"], self.c.split, 100 * score)
                if count not in best_per_depth or score > best_per_depth[count][0]:
                    best_per_depth[count] = (score, variant)
        going_on = survivors_of_short_rung({c: 100 * (self.reference.score - best_per_depth[c][0])
                                            for c in best_per_depth}, self.cfg)
        for count in best_per_depth:
            if count not in going_on:
                score = 100 * best_per_depth[count][0]
                self.not_tried.append(f"{count}-layer students beyond the short run ({score:.2f}% on "
                                      f"{self.c.split}): the {self.cfg.survivors} survivor(s) went to the "
                                      "shallowest depth already within the budget, then the best-scoring")
        survivors = []
        for count in sorted(going_on):
            variant = best_per_depth[count][1]
            layers = student_layers(self.teacher_layers, count)
            stage = distill_stage(layers, variant, self.cfg.epochs, self.cfg)
            if self.cfg.epochs > self.cfg.short_epochs:
                self._check_time(f"full training of {stage['name']}")
                self.c.run([stage])
            survivors.append(stage["name"])
        return survivors

    def _explore(self, student: str, structured: bool = True) -> None:
        """The model, its pruned variants, each through every target's quantizations."""
        for model, stages in model_variants(student, self.cfg, structured=structured):
            pruned = any(s["method"] == "structured" for s in stages)
            if pruned:
                unpruned_drop = 100 * (self.reference.score - self._model_score(student).score)
                if unpruned_drop > self.cfg.max_drop:
                    self.not_tried.append(f"{model}: the unpruned {student} already loses "
                                          f"{unpruned_drop:.2f} points on {self.c.split} "
                                          f"(budget {self.cfg.max_drop:g})")
                    continue
            self._check_time(f"making {model}")
            if stages:
                self.c.run(stages)
                self._model_score(model)
            for target in self.cfg.targets:
                self._try_target(model, target)


def survivors_of_short_rung(short_drops: dict[int, float], cfg: OptimizeConfig) -> list[int]:
    """Depths (layer counts) to train fully, from their short runs' drops: successive halving.

    The best-scoring depths go on; first, though, the shallowest depth whose short run is
    already within the budget (full training only adds to it): with a loose budget the
    fastest student that meets it is kept even if deeper ones score higher. A deeper student
    that scores lower after one epoch is not cut for that alone: one epoch on a few hundred
    sentences orders close depths by chance.
    """
    shallowest_within = [c for c in sorted(short_drops) if short_drops[c] <= cfg.max_drop][:1]
    ranked = sorted(short_drops, key=lambda c: (short_drops[c], c))
    return (shallowest_within + [c for c in ranked if c not in shallowest_within])[:cfg.survivors]


def _runs(runtime_name: str, kind: str) -> bool:
    from slimbert.runtimes import all_runtimes

    return all_runtimes()[runtime_name].kind == kind


def run_search(teacher_dir: Path, dataset: dict[str, Any], seed: int, cfg: OptimizeConfig, *,
               candidates_dir: Path, publish_dir: Path, progress: bool = True,
               on_point: Callable[[Point], None] | None = None,
               clock: Callable[[], float] | None = None) -> SearchResult:
    """Search, choose per target on the ranking split, confirm on test.

    Candidates live in ``candidates_dir`` (shared by every search over the same teacher and
    data, so they are reused); each target's choice is copied to ``publish_dir``/<target>.
    """
    from transformers import AutoConfig

    check_targets(cfg.targets)
    dataset, dataset_cfg, data = load_with_selection_split(dataset, cfg, seed)
    resolution = check_rank_split(data, cfg.max_drop)
    teacher_layers = AutoConfig.from_pretrained(teacher_dir).num_hidden_layers
    if cfg.time_budget_min is not None and cfg.depths:
        check_time_budget(teacher_dir, data, cfg, teacher_layers, dataset_cfg.max_length)
    candidates = Candidates(candidates_dir, teacher_dir, dataset, seed, metric=cfg.metric,
                            seq_len=cfg.seq_len, bench_budget_s=cfg.bench_budget_s, progress=progress,
                            split=rank_split(data))
    search = Search(candidates, cfg, teacher_layers, num_classes=data.num_labels, on_point=on_point,
                    clock=clock)
    stopped = False
    try:
        search.run()
    except OutOfTime as stop:
        stopped = True
        search.not_tried.append(f"stopped by the time budget ({cfg.time_budget_min:g} min) before {stop}; "
                                "everything after it in the search order was not tried")
    chosen = {target: _choose_and_confirm(candidates, search, target, data, publish_dir, seed)
              for target in cfg.targets}
    return SearchResult(points=search.points, chosen=chosen, not_tried=search.not_tried,
                        teacher_score=round(100 * search.reference.score, 2), rank_split=candidates.split,
                        rank_examples=len(data.splits[candidates.split]), resolution_points=resolution,
                        seconds=round(search.clock() - search.start, 1), stopped_by_time=stopped,
                        targets=list(cfg.targets), stages_used=sorted(candidates.stages),
                        made_seconds=candidates.cost(list(candidates.stages)))


def _choose_and_confirm(candidates: Candidates, search: Search, target: str, data, out_dir: Path,
                        seed: int) -> dict[str, Any]:
    cfg = search.cfg
    ranked = ranked_within_budget([p for p in search.points if p.target == target], cfg.max_drop)
    if not ranked:
        return {"point": None,
                "why": f"no candidate for {target} stayed within {cfg.max_drop:g} points on "
                       f"{candidates.split} (at {cfg.selection_confidence:.0%} one-sided confidence)"}
    point = ranked[0]
    bench_name = f"test-{point.artifact}@{point.runtime}"
    teacher_onnx = "teacher-onnx"
    on_ort = "ort-cpu" in TARGETS[target].runtimes  # speed-ups against the teacher's fp32 ONNX too
    artifacts = [point.artifact, TEACHER] + ([teacher_onnx] if on_ort else [])
    if on_ort:
        candidates.stages.setdefault(teacher_onnx, {"name": teacher_onnx, "type": "export-onnx",
                                                    "input": TEACHER})
    runtimes = sorted({point.runtime, TEACHER_RUNTIME, *(["ort-cpu"] if on_ort else [])})
    stage = {"name": bench_name, "type": "bench", "artifacts": artifacts, "targets": runtimes,
             "split": "test", "batch_sizes": [1], "seq_len": cfg.seq_len, "budget_s": cfg.bench_budget_s,
             "reference": TEACHER}
    # the one place the test split is read: the chosen artifact and the teacher, once
    candidates.run([stage], withhold_test=False)
    report_path = candidates.folder / bench_name / "report.json"
    report = load_report(report_path)
    chosen_row = report.row(point.artifact, point.runtime)
    teacher_row = report.row(TEACHER, TEACHER_RUNTIME)
    confirmation = confirm(np.asarray(report.labels), np.asarray(teacher_row.predictions),
                           np.asarray(chosen_row.predictions), metric=cfg.metric,
                           num_classes=data.num_labels, max_drop=cfg.max_drop,
                           confidence=cfg.confidence, seed=seed)
    onnx_row = report.row(teacher_onnx, "ort-cpu")
    speedup_onnx = chosen_row.speedup(onnx_row, 1) if onnx_row else None
    confirmation["speedup_vs_teacher_onnx"] = round(speedup_onnx, 2) if speedup_onnx else None
    confirmation["speedup_vs_teacher_torch"] = round(chosen_row.speedup(teacher_row, 1), 2)
    confirmation["test_p50_ms"] = round(chosen_row.p50(1), 3)
    # a row whose re-timing in the same bench disagreed (bench/measure.py): its speed-up is not
    # to be trusted as measured; said beside it, never silently replaced by the other timing
    confirmation["timing_flags"] = {f"{r.artifact}@{r.target}": r.timing_flag
                                    for r in (chosen_row, teacher_row, onnx_row) if r and r.timing_flag}
    if not confirmation["within_budget"]:
        nxt = ranked[1] if len(ranked) > 1 else None
        confirmation["next_candidate"] = nxt.to_dict() if nxt else None
    folder = out_dir / target
    _publish(candidates.folder / point.artifact if point.artifact != TEACHER else candidates.teacher_dir,
             report_path, folder)
    # the folder is named relative to the optimize report's own (the stage writes it atomically)
    return {"point": point.to_dict(), "confirmation": confirmation, "folder": target,
            "proxy": TARGETS[target].proxy,
            "why": _why(point, ranked, search.points, cfg, candidates.split)}


def _publish(artifact: Path, report: Path, folder: Path) -> None:
    """``folder``/model (the chosen artifact, as deploy takes it) and ``folder``/report.json (the
    test bench, as the gate takes it). ``folder`` is inside the optimize stage's own artifact,
    which the engine writes atomically."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(artifact, folder / "model")
    shutil.copy2(report, folder / "report.json")


def _why(point: Point, ranked: list[Point], points: list[Point], cfg: OptimizeConfig, split: str) -> str:
    same_target = [p for p in points if p.target == point.target]
    faster_out = [p for p in same_target if p.p50_ms < point.p50_ms and p.drop_bound > cfg.max_drop]
    text = (f"{point.artifact} on {point.runtime} is the fastest of {len(ranked)} candidates (of "
            f"{len(same_target)} measured for {point.target}) that lose at most {cfg.max_drop:g} points "
            f"on the {split} split at {cfg.selection_confidence:.0%} one-sided confidence: "
            f"{point.p50_ms:.2f} ms at batch 1, {point.drop:+.2f} points (bound {point.drop_bound:+.2f}), "
            f"{point.agreement:.1%} of the teacher's predictions.")
    if faster_out:
        best = min(faster_out, key=lambda p: p.p50_ms)
        text += (f" {len(faster_out)} faster candidate(s) may lose more; the fastest, {best.artifact}, "
                 f"runs in {best.p50_ms:.2f} ms and loses {best.drop:.2f} points (bound "
                 f"{best.drop_bound:.2f}).")
    return text


__all__ = ["SearchResult", "run_search", "pareto_front"]
