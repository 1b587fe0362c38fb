"""`slimbert optimize` on a tiny teacher: the search, the choice, its proof, resume, budgets."""

import json
import random

import numpy as np
import pytest

import slimbert.pipeline as pipeline
from slimbert.errors import SlimbertError
from slimbert.pipeline import run_recipe
from slimbert.recipe import recipe_from_dict
from slimbert.search.api import needs_finetune, optimize, optimize_recipe
from slimbert.search.candidates import Candidates
from slimbert.search.config import OptimizeConfig
from slimbert.search.select import Point, pareto_front, ranked_within_budget
from tests.conftest import build_tiny_bert, make_sentences, write_csv

SPACE = {"targets": ["ort-cpu", "ort-mobile"], "depths": [0.25, 0.75], "distill": ["kd"], "prune": [],
         "vocab": False, "short_epochs": 1, "epochs": 2, "lr": 1e-3, "batch_size": 16, "seq_len": 32,
         "bench_budget_s": 0.05, "selection": 0.3,  # 216 of 720 training sentences held out to rank on
         "int8_schemes": "table"}  # the search's logic under test, not each candidate's scheme search
KILL_AT = 6  # the search is interrupted at this measurement, then resumed


def noisy_sentences(n: int, seed: int, flip: float = 0.15) -> list[tuple[str, str]]:
    """The cue-word sentences with some labels flipped: no model is perfect, depths differ."""
    rng = random.Random(seed)
    return [(text, ("neg" if label == "pos" else "pos") if rng.random() < flip else label)
            for text, label in make_sentences(n, seed)]


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("optimize")
    csv = write_csv(root / "reviews.csv", noisy_sentences(1200, seed=3))
    dataset = {"source": str(csv), "max_length": 32, "split": {"dev": 0.2, "test": 0.2}}
    encoder = build_tiny_bert(root / "encoder")
    recipe = {"name": "teacher", "model": str(encoder), "seed": 0, "dataset": dataset, "stages": [
        {"type": "finetune", "name": "teacher", "epochs": 3, "lr": 1e-3, "batch_size": 16, "patience": 0}]}
    run_recipe(recipe_from_dict(recipe), root / "teacher-run", progress=False)
    return root, root / "teacher-run" / "teacher", dataset


@pytest.fixture(scope="module")
def searched(setting):
    """One search, killed at its KILL_AT-th measurement and resumed; every engine call recorded."""
    root, teacher, dataset = setting
    out = root / "search"
    calls = []
    real_run_recipe = pipeline.run_recipe

    def recording(recipe, out_dir, **kw):
        calls.append({"stages": [(s.name, s.type) for s in recipe.stages],
                      "withhold_test": kw.get("withhold_test", False)})
        return real_run_recipe(recipe, out_dir, **kw)

    real_bench = Candidates.measure
    measured = []

    def dying(self, artifact, runtime):
        if len(measured) == KILL_AT:
            raise KeyboardInterrupt
        measured.append(artifact)
        return real_bench(self, artifact, runtime)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "run_recipe", recording)
        mp.setattr(Candidates, "measure", dying)
        with pytest.raises(KeyboardInterrupt):
            optimize(str(teacher), dataset, out=out, progress=False, max_drop=3.0, **SPACE)
    before = {p.parent.name: p.read_text() for p in (out / "candidates").glob("*/manifest.json")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "run_recipe", recording)
        resumed = optimize(str(teacher), dataset, out=out, progress=False, max_drop=3.0, **SPACE)
    return out, resumed, before, calls


def test_each_target_gets_the_fastest_artifact_within_budget_on_the_selection_split(searched):
    out, result, _, _ = searched
    report = result.report
    for target in SPACE["targets"]:
        chosen = report["chosen"][target]["point"]
        points = [Point(**p) for p in report["candidates"] if p["target"] == target]
        assert chosen == ranked_within_budget(points, 3.0)[0].to_dict()
        assert chosen["drop_bound"] <= 3.0 and chosen["drop"] <= chosen["drop_bound"]
        folder = result.folder(target)
        assert (folder / "model" / "manifest.json").is_file()
        test_report = json.loads((folder / "report.json").read_text())
        assert test_report["dataset"]["split"] == "test"
        assert {r["artifact"] for r in test_report["rows"]} >= {chosen["artifact"], "model"}
    mobile = report["chosen"]["ort-mobile"]
    assert mobile["point"]["artifact"].endswith("-ort") and "proxy" in mobile["proxy"]
    assert (out / "report.md").is_file() and (out / "optimize" / "pareto.png").is_file()
    # what the search used, and what that took to make: its cost from an empty folder
    assert "teacher-onnx" in report["stages_used"] and report["made_seconds"] > 0


def test_the_confirmation_carries_the_gates_statistics(searched):
    _, result, _, _ = searched
    confirmation = result.report["chosen"]["ort-cpu"]["confirmation"]
    assert confirmation["ci_low"] <= confirmation["test_drop_points"] <= confirmation["ci_high"]
    assert 0 <= confirmation["mcnemar_p"] <= 1
    assert confirmation["speedup_vs_teacher_onnx"] > 0 and confirmation["speedup_vs_teacher_torch"] > 0
    assert confirmation["within_budget"] == (confirmation["test_drop_points"] <= 3.0)


def test_the_confirmation_interval_is_in_points_around_the_drop():
    from slimbert.search.select import confirm

    labels = np.ones(1000, dtype=int)
    teacher = labels.copy()
    chosen = labels.copy()
    chosen[:100] = 0  # 10 points lost
    result = confirm(labels, teacher, chosen, metric="accuracy", num_classes=2, max_drop=11.0,
                     confidence=0.95, seed=0, samples=2000)
    assert result["test_drop_points"] == 10.0 and result["within_budget"]
    assert 7.5 < result["ci_low"] < 10.0 < result["ci_high"] < 12.5
    assert not result["gate_passes"]  # the point is within 11 points, the interval's upper end is not


def test_nothing_reads_the_test_split_before_the_confirmation(searched):
    out, _, _, calls = searched
    reading = [c for c in calls if not c["withhold_test"]]
    # the search's own recipe (teacher reuse + optimize stage) and one confirmation per target
    confirmations = [c for c in reading
                     if any(t == "bench" and n.startswith("test-") for n, t in c["stages"])]
    assert len(confirmations) == len(SPACE["targets"])
    for call in confirmations:
        assert [n for n, t in call["stages"] if t == "bench"] == [call["stages"][-1][0]]
    for call in calls:
        if call["withhold_test"]:
            assert not any(n.startswith("test-") for n, _ in call["stages"])
    ranked = list((out / "candidates").glob("selection-*"))
    assert ranked and not list((out / "candidates").glob("dev-*"))
    for folder in ranked:
        assert json.loads((folder / "report.json").read_text())["dataset"]["split"] == "selection"
    student = json.loads((out / "candidates" / "s1-kd-e1" / "manifest.json").read_text())
    assert "test" not in student["metrics"]  # the distill stage did not score on test either


def test_a_killed_search_resumes_without_redoing_finished_stages(searched, setting):
    out, result, before, _ = searched
    _, teacher, dataset = setting
    assert before, "the search was killed before anything finished"
    for name, manifest in before.items():
        assert (out / "candidates" / name / "manifest.json").read_text() == manifest
    again = optimize(str(teacher), dataset, out=out, progress=False, max_drop=3.0, **SPACE)
    assert again.report["chosen"] == result.report["chosen"]  # everything reused: the same choice


class ScriptedCandidates:
    """Candidates whose numbers are scripted by depth, to test the strategy's decisions.

    1-layer students lose 3 points, 3-layer ones 0.5; quantized graphs lose 1 point more and
    run 40% faster; latency grows with depth. The strategy decides what to make from these.
    """

    DROP = {"s1": 3.0, "s3": 0.5, "teacher": 0.0, "model": 0.0}
    MS = {"s1": 1.0, "s3": 3.0, "teacher": 6.0, "model": 6.0}

    metric, seed, split = "accuracy", 0, "selection"

    def __init__(self, folder):
        self.folder, self.stages, self.made = folder, {}, []

    def run(self, stages):
        for stage in stages:
            self.stages.setdefault(stage["name"], stage)
            self.made.append(stage["name"])

    def kind(self, name):
        return "onnx" if name.endswith(("-onnx", "-int8")) or "-static-" in name else "hf-model"

    def measure(self, artifact, runtime):
        from slimbert.search.candidates import SplitRow

        root = artifact.split("-")[0]
        quantized = artifact.endswith("-int8") or "-static-" in artifact
        drop = self.DROP[root] + (1.0 if quantized else 0.0)
        labels = np.ones(1000, dtype=int)
        predictions = labels.copy()
        predictions[:int(10 * drop) + 100] = 0  # the teacher (drop 0) gets 90%
        return SplitRow(artifact, runtime, float(np.mean(predictions == labels)),
                      self.MS[root] * (0.6 if quantized else 1.0), 1.0, predictions, labels)

    def lineage(self, name):
        return [name]

    def cost(self, lineage):
        return 0.0


@pytest.mark.parametrize(("max_drop", "chosen"), [(5.0, "s1-kd-e2-int8"), (2.0, "s3-kd-e2-int8"),
                                                  (1.0, "s3-kd-e2-onnx"), (0.2, "teacher-onnx")])
def test_the_budget_decides_depth_and_quantization(tmp_path, max_drop, chosen):
    from slimbert.search.strategy import Search

    cfg = OptimizeConfig(targets=["ort-cpu"], max_drop=max_drop, depths=[0.25, 0.75], distill=["kd"],
                         prune=[], vocab=False, short_epochs=1, epochs=2)
    candidates = ScriptedCandidates(tmp_path)
    search = Search(candidates, cfg, teacher_layers=4)
    search.run()
    assert ranked_within_budget(search.points, max_drop)[0].artifact == chosen
    # both depths were trained fully: the deeper student scored higher in its short run
    assert {"s1-kd-e1", "s3-kd-e1", "s1-kd-e2", "s3-kd-e2"} <= set(candidates.made)


def test_the_time_budget_stops_the_search_and_says_what_was_not_tried(setting, searched):
    root, teacher, dataset = setting
    ticks = iter(range(0, 10_000, 30))  # every clock read is 30 s later
    from slimbert.search import strategy

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(strategy, "_clock", lambda: next(ticks))
        mp.setattr(strategy, "check_time_budget", lambda *a, **k: None)
        result = optimize(str(teacher), dataset, out=searched[0], progress=False, max_drop=3.0,
                          time_budget_min=2, **{**SPACE, "targets": ["ort-cpu"]})
    report = result.report
    assert report["stopped_by_time"]
    assert any("stopped by the time budget" in item for item in report["not_tried"])
    assert report["chosen"]["ort-cpu"]["point"] is not None  # the best found so far


def test_quantization_that_breaks_the_budget_is_not_chosen_however_fast():
    def point(name, drop, ms):
        return Point("ort-cpu", name, "ort-cpu", [name], 80.0 - drop, drop, drop, 0.95, ms, 1.0, 0.0)

    int8 = point("s3-int8", 1.6, 1.0)
    fp32 = point("s3-onnx", 0.4, 2.0)
    teacher = point("teacher-onnx", 0.0, 6.0)
    assert ranked_within_budget([int8, fp32, teacher], 1.0) == [fp32, teacher]
    assert ranked_within_budget([int8, fp32, teacher], 2.0)[0] is int8
    assert set(map(id, pareto_front([int8, fp32, teacher]))) == {id(int8), id(fp32), id(teacher)}
    assert pareto_front([int8, point("worse", 2.0, 1.5)]) == [int8]


@pytest.mark.parametrize(("settings", "match"), [
    ({"max_drop": -0.5}, "max_drop"),
    ({"depths": [0.5], "distill": []}, "no students"),
    ({"time_budget_min": 0}, "time_budget_min"),
])
def test_bad_settings_are_refused_before_anything_runs(setting, tmp_path, settings, match):
    _, teacher, dataset = setting
    with pytest.raises(SlimbertError, match=match):
        optimize(str(teacher), dataset, out=tmp_path / "out", progress=False, **settings)
    assert not (tmp_path / "out").exists()


def test_a_target_that_cannot_run_here_is_named_with_its_reason(setting, tmp_path):
    _, teacher, dataset = setting
    with pytest.raises(SlimbertError, match="(?s)'tflite'.*known targets"):
        optimize(str(teacher), dataset, out=tmp_path / "a", progress=False, targets=["tflite"])
    with pytest.raises(SlimbertError, match="(?s)torch-cuda-fp16.*cannot run here"):
        optimize(str(teacher), dataset, out=tmp_path / "b", progress=False, targets=["torch-cuda-fp16"])


def test_a_dev_split_too_small_to_rank_is_refused_with_the_size_needed(setting, tmp_path):
    _, teacher, dataset = setting
    small = {**dataset, "split": {"dev": 0.05, "test": 0.2}}  # 60 dev sentences
    with pytest.raises(SlimbertError, match=r"(?s)dev split has 60 examples.*resolving 1 point"):
        optimize(str(teacher), small, out=tmp_path / "out", progress=False)


def test_a_time_budget_too_small_to_train_says_the_minimum(setting, tmp_path):
    _, teacher, dataset = setting
    with pytest.raises(SlimbertError, match=r"(?s)cannot train one student.*--time-budget \d+"):
        optimize(str(teacher), dataset, out=tmp_path / "out", progress=False, time_budget_min=0.001,
                 **{**SPACE, "targets": ["ort-cpu"]})


def test_a_model_without_a_head_for_these_labels_is_fine_tuned_first(setting, tmp_path):
    root, teacher, dataset = setting
    encoder = root / "encoder"
    assert needs_finetune(encoder, ["neg", "pos"]) and not needs_finetune(teacher, ["neg", "pos"])
    assert needs_finetune(teacher, ["a", "b", "c"])
    recipe = optimize_recipe(str(encoder), dataset, OptimizeConfig())
    assert [s["type"] for s in recipe["stages"]] == ["finetune", "optimize"]
    assert recipe["stages"][1]["input"] == "teacher"
    assert np.isclose(recipe["stages"][1]["max_drop"], 1.0)


def test_no_candidate_trains_or_stops_early_on_the_selection_split(searched):
    out, result, _, _ = searched
    assert result.report["rank_split"] == "selection"
    student = json.loads((out / "candidates" / "s1-kd-e1" / "manifest.json").read_text())
    sizes = student["extra"]["dataset"]["sizes"]
    assert sizes["train"] + sizes["selection"] == 720 and result.report["rank_examples"] == sizes["selection"]
    assert student["metrics"]["train_examples"]["original"] == sizes["train"]
    assert student["metrics"]["dev"]["n"] == sizes["dev"]  # early stopping reads dev, not selection


def test_the_budget_holds_the_drops_upper_bound_not_its_point_estimate():
    from slimbert.search.select import drop_bound

    labels = np.ones(400, dtype=int)
    teacher = labels.copy()
    close = labels.copy()
    close[:6] = 0  # 1.5 points lost on 400 examples: noisy
    kwargs = {"metric": "accuracy", "num_classes": 2, "seed": 0}
    assert drop_bound(labels, teacher, close, confidence=0.5, **kwargs) == 1.5
    bound = drop_bound(labels, teacher, close, confidence=0.8, **kwargs)
    assert 1.5 < bound < 3.0
    assert drop_bound(labels, teacher, teacher, confidence=0.8, **kwargs) == 0.0

    def point(name, drop, bound, ms):
        return Point("ort-cpu", name, "ort-cpu", [name], 80.0 - drop, drop, bound, 0.95, ms, 1.0, 0.0)

    budget = (1.5 + bound) / 2
    flattered = point("s2-int8", 1.5, bound, 1.0)  # within the budget as measured, not at 80%
    safer = point("s3-int8", 0.5, 1.2, 2.0)
    assert ranked_within_budget([flattered, safer], budget) == [safer]


def test_small_data_ranks_on_dev_and_a_named_selection_share_is_kept():
    from slimbert.search.strategy import with_selection_split

    cfg = OptimizeConfig(selection=0.15)
    assert with_selection_split({"source": "x"}, cfg, 10_000)["split"] == {"selection": 0.15}
    assert with_selection_split({"source": "x"}, cfg, 1000) == {"source": "x"}  # 150 held out: too few
    named = {"source": "x", "split": {"dev": 0.1, "test": 0.2, "selection": 0.0}}
    assert with_selection_split(named, cfg, 10_000) is named
    with pytest.raises(ValueError, match="selection"):
        OptimizeConfig(selection=0.6)


def test_a_confirmation_timing_the_bench_flagged_is_said_beside_the_speed_ups(searched):
    import copy

    from slimbert.search.report import render_markdown

    out, result, _, _ = searched
    chosen = result.report["chosen"]["ort-cpu"]
    point = chosen["point"]  # the confirmation's own bench (the published copy may be a later search's)
    bench = json.loads((out / "candidates" / f"test-{point['artifact']}@{point['runtime']}" / "report.json")
                       .read_text())
    flagged = {f"{r['artifact']}@{r['target']}": r["timing_flag"]
               for r in bench["rows"] if r.get("timing_flag")}
    assert chosen["confirmation"]["timing_flags"] == flagged  # what the test bench flagged, no more, no less
    report = copy.deepcopy(result.report)
    report["chosen"]["ort-cpu"]["confirmation"]["timing_flags"] = {"s1-kd-e2-int8@ort-cpu": "re-timed: 0.64x"}
    assert "`s1-kd-e2-int8@ort-cpu` re-timed: 0.64x" in render_markdown(report)
    assert "not to be trusted" in render_markdown(report)


@pytest.mark.parametrize(("max_drop", "survivors", "going_on"), [
    (1.0, 2, [3, 4]),  # the default's short runs: 4 layers scored below 3 after one epoch, still goes on
    (7.0, 2, [2, 3]),  # a loose budget: the 2-layer student already meets it, so it is kept first
    (1.0, 1, [3]),
])
def test_short_runs_keep_the_best_scoring_depths_and_the_shallowest_within_budget(max_drop, survivors,
                                                                                  going_on):
    from slimbert.search.strategy import survivors_of_short_rung

    short_drops = {2: 6.39, 3: 1.93, 4: 2.69}  # points below the teacher after one epoch (measured)
    cfg = OptimizeConfig(max_drop=max_drop, survivors=survivors)
    assert sorted(survivors_of_short_rung(short_drops, cfg)) == going_on
