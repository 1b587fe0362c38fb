"""The engine: every stage on a tiny model, reuse on rerun, resume after a failure."""

import json

import pytest

from slimbert.artifacts import sha256_json
from slimbert.pipeline import run_recipe
from slimbert.recipe import recipe_from_dict
from tests.conftest import launch, tiny_recipe

FAST_TRAIN = {"lr": 1e-3, "batch_size": 16, "patience": 0}
BENCH = {"type": "bench", "batch_sizes": [1, 4], "seq_len": 16, "min_iters": 2, "budget_s": 0.05,
         "warmup": 1, "reference": "teacher", "sweep_seq_lens": [8, 32]}


def full_stages(distill_epochs=2):
    return [
        {"type": "finetune", "name": "teacher", "epochs": 8, **FAST_TRAIN},
        {"type": "distill", "name": "student", "epochs": distill_epochs, **FAST_TRAIN},
        {"type": "export-onnx", "name": "student-onnx", "input": "student"},
        {"type": "quantize-onnx", "name": "student-int8", "mode": "static", "tolerance": 1.0},
        BENCH,
    ]


@pytest.fixture(scope="module")
def first_run(tiny_encoder, sentiment_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, full_stages()))
    return out, run_recipe(recipe, out, progress=False)


def test_every_stage_runs_and_writes_manifests_and_reports(first_run):
    out, result = first_run
    assert [s.status for s in result.stages] == ["ran"] * 5
    teacher = result.artifact("teacher").manifest
    assert teacher.kind == "hf-model" and teacher.metrics["test"]["accuracy"] >= 0.9
    assert set(teacher.versions) >= {"torch", "transformers", "onnxruntime"}
    assert "model.safetensors" in teacher.files and teacher.extra["dataset"]["split_seed"] == 0
    student = result.artifact("student").manifest
    assert student.parents.keys() == {"teacher"}
    int8 = result.artifact("student-int8").manifest
    assert int8.parents.keys() == {"student-onnx"}
    assert int8.metrics["calibration"]["method"] == "minmax" and int8.metrics["int8_formats"]["isa"]
    assert int8.metrics["repair"]["met"] and int8.metrics["dev_drop_points"] <= 1.0
    report = json.loads((out / "report.json").read_text())
    assert [r["artifact"] for r in report["rows"]] == ["teacher", "student", "student-onnx", "student-int8"]
    assert [r["target"] for r in report["rows"]] == ["torch-cpu", "torch-cpu", "ort-cpu", "ort-cpu"]
    for row in report["rows"]:
        assert row["accuracy"]["accuracy"] > 0.8
        assert [s["batch_size"] for s in row["latency"]] == [1, 4]
        assert row["latency"][0]["p90_ms"] >= row["latency"][0]["p50_ms"] > 0
    md = (out / "report.md").read_text()
    assert "| student-int8 | ort-cpu |" in md
    sweep = report["rows"][0]["seq_len_sweep"]
    assert [(s["seq_len"], s["batch_size"]) for s in sweep] == [(8, 4), (32, 4)]
    assert "over sequence lengths, batch 4" in md and "| len 8 | len 32 |" in md
    assert (out / "bench" / "pareto.png").is_file()
    assert all(a.verify() == [] for a in (s.artifact for s in result.stages))


def test_bench_rows_carry_the_content_hash_of_the_stage_they_measured(first_run):
    """Bench reads its artifacts through the reference hook: its parents are the earlier model
    stages, hashed as before, and each row names the content hash of the model it measured."""
    from slimbert.bench.report import load_report

    out, result = first_run
    report = load_report(out / "report.json")
    parents = result.artifact("bench").manifest.parents
    assert parents.keys() == {"teacher", "student", "student-onnx", "student-int8"}
    for row in report.rows:
        files = result.artifact(row.artifact).manifest.files
        assert row.fingerprint == sha256_json(files) == parents[row.artifact]
        assert row.speedup_b1 == report.speedup(row)


def test_a_bench_of_a_folder_without_a_model_is_a_recipe_error(tiny_encoder, sentiment_csv, tmp_path):
    from slimbert.errors import RecipeError
    from slimbert.pipeline import plan_recipe

    (tmp_path / "empty").mkdir()
    recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, [
        {**BENCH, "reference": None, "artifacts": [str(tmp_path / "empty")]}]))
    with pytest.raises(RecipeError, match="nor a model folder .a folder without a model."):
        plan_recipe(recipe, tmp_path / "out")


def test_rerun_reuses_everything(first_run, tiny_encoder, sentiment_csv):
    out, _ = first_run
    recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, full_stages()))
    again = run_recipe(recipe, out, progress=False)
    assert [s.status for s in again.stages] == ["reused"] * 5


def test_changed_stage_reruns_itself_and_what_depends_on_it(first_run, tiny_encoder, sentiment_csv):
    out, _ = first_run
    recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, full_stages(distill_epochs=1)))
    changed = run_recipe(recipe, out, progress=False)
    assert [s.status for s in changed.stages] == ["reused", "ran", "ran", "ran", "ran"]


def test_failed_stage_leaves_no_artifact_and_rerun_resumes(tiny_encoder, sentiment_csv, tmp_path,
                                                           monkeypatch):
    import slimbert.export.onnx as exporter  # the export-onnx runner imports it when it runs

    recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, full_stages()[:3]))
    original = exporter.export_onnx

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash during export")

    monkeypatch.setattr(exporter, "export_onnx", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(recipe, tmp_path, progress=False)
    assert (tmp_path / "teacher" / "manifest.json").is_file()
    assert not (tmp_path / "student-onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.setattr(exporter, "export_onnx", original)
    resumed = run_recipe(recipe, tmp_path, progress=False)
    assert [s.status for s in resumed.stages] == ["reused", "reused", "ran"]


def test_data_change_invalidates_everything(tiny_encoder, sentiment_csv, tmp_path):
    stages = [{"type": "finetune", "name": "teacher", "epochs": 1, **FAST_TRAIN}]
    run_recipe(recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages)), tmp_path, progress=False)
    other = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages, max_length=16))
    assert [s.status for s in run_recipe(other, tmp_path, progress=False).stages] == ["ran"]


def _as_if_written_before(folder, setting: str) -> None:
    """Rewrite a manifest as a slimbert whose stage config lacked ``setting`` would have."""
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["config"][setting]
    manifest["inputs_hash"] = sha256_json({
        "format": 1, "type": manifest["stage_type"], "config": manifest["config"],
        "parents": manifest["parents"], "data": manifest["extra"]["dataset"]["fingerprint"],
        "max_length": 32, "seed": manifest["extra"]["seed"],
    })
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(("opset", "expected"), [(17, "reused"), (18, "ran")])
def test_a_setting_added_since_the_artifact_was_made_reruns_only_when_used(
        tiny_encoder, sentiment_csv, tmp_path, opset, expected):
    """Upgrading slimbert must not retrain a stage because its config gained an unused option."""
    stages = [{"type": "finetune", "name": "teacher", "epochs": 1, **FAST_TRAIN},
              {"type": "export-onnx", "name": "onnx", "input": "teacher"}]
    run_recipe(recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages)), tmp_path, progress=False)
    _as_if_written_before(tmp_path / "onnx", "opset")
    stages[1]["opset"] = opset  # 17 is the default
    again = run_recipe(recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages)), tmp_path,
                       progress=False)
    assert [s.status for s in again.stages] == ["reused", expected]


def test_a_setting_added_since_does_not_hide_a_changed_one(tiny_encoder, sentiment_csv, tmp_path):
    stages = [{"type": "finetune", "name": "teacher", "epochs": 1, **FAST_TRAIN},
              {"type": "export-onnx", "name": "onnx", "input": "teacher"}]
    run_recipe(recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages)), tmp_path, progress=False)
    _as_if_written_before(tmp_path / "onnx", "opset")
    stages[1]["atol"] = 2e-3  # an old setting changed, the added one at its default
    again = run_recipe(recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages)), tmp_path,
                       progress=False)
    assert [s.status for s in again.stages] == ["reused", "ran"]


def test_a_dry_run_says_what_would_run_and_why_without_writing(tiny_encoder, sentiment_csv, tmp_path):
    from slimbert.pipeline import plan_recipe

    stages = [{"type": "finetune", "name": "teacher", "epochs": 1, **FAST_TRAIN},
              {"type": "export-onnx", "name": "onnx"},
              {"type": "quantize-onnx", "name": "int8"}]

    def plan(**kw):
        recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages))
        return [(p.name, p.reason) for p in plan_recipe(recipe, tmp_path / "run", **kw)]

    assert plan() == [(name, "no artifact yet") for name in ("teacher", "onnx", "int8")]
    assert not (tmp_path / "run").exists()
    run_recipe(recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages)), tmp_path / "run",
               progress=False)
    written = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert plan() == [("teacher", None), ("onnx", None), ("int8", None)]
    assert plan(rerun=("teacher",)) == [("teacher", "--rerun"), ("onnx", "after teacher"),
                                        ("int8", "after onnx")]
    stages[1]["atol"] = 2e-3
    assert plan() == [("teacher", None), ("onnx", "its settings or inputs changed"), ("int8", "after onnx")]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == written


def test_a_distill_stage_seed_varies_training_not_the_split(first_run, tiny_encoder, sentiment_csv):
    """Seeds of one student are comparable: the recipe's seed draws the split, the stage's trains."""
    from safetensors.torch import load_file

    out, result = first_run
    student = {"type": "distill", "epochs": 2, "input": "teacher", **FAST_TRAIN}
    stages = full_stages()[:2] + [{**student, "name": "s-recipe-seed", "seed": 0},
                                  {**student, "name": "s-seed-1", "seed": 1}]
    recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages))
    again = run_recipe(recipe, out, progress=False)
    same, other = again.artifact("s-recipe-seed"), again.artifact("s-seed-1")
    weights = {name: load_file(again.artifact(name).path / "model.safetensors")
               for name in ("student", "s-recipe-seed", "s-seed-1")}
    def gap(name):  # largest weight difference to the recipe-seeded student
        return max((weights["student"][k] - weights[name][k]).abs().max().item() for k in weights[name])

    # the same seed trains the same student (up to float reduction order in one process:
    # measured 4e-5); another seed, another batch order (measured 1e-2)
    assert gap("s-recipe-seed") < 1e-3 < 5e-3 < gap("s-seed-1")
    assert same.manifest.extra["dataset"] == other.manifest.extra["dataset"] == \
        result.artifact("student").manifest.extra["dataset"]


def test_student_model_can_be_an_earlier_stage_tinybert_two_phases(first_run, tiny_encoder, sentiment_csv):
    """Phase two starts from phase one's student and reruns when phase one changes."""
    out, result = first_run
    stages = full_stages()[:1]
    phase1 = {"type": "distill", "name": "phase1", "input": "teacher", "layers": [0, 2], "epochs": 1,
              "alpha_kd": 0.0, "alpha_ce": 0.0, "alpha_hidden": 1.0, "alpha_attention": 1.0, **FAST_TRAIN}
    phase2 = {"type": "distill", "name": "phase2", "input": "teacher", "student_model": "phase1",
              "epochs": 1, **FAST_TRAIN}

    def run(first):
        recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages + [first, phase2]))
        return run_recipe(recipe, out, progress=False)

    done = run(phase1)
    manifest = done.artifact("phase2").manifest
    assert manifest.parents.keys() == {"teacher", "phase1"}
    assert manifest.parents["phase1"] == sha256_json(done.artifact("phase1").manifest.files)
    assert manifest.metrics["student_model"] == "phase1" and manifest.metrics["teacher_layers"] is None
    assert manifest.metrics["params"] == done.artifact("phase1").manifest.metrics["params"]
    assert [s.status for s in run({**phase1, "epochs": 2}).stages] == ["reused", "ran", "ran"]


def test_quantize_without_onnx_input_is_a_recipe_error(tiny_encoder, sentiment_csv, tmp_path):
    from slimbert.errors import RecipeError

    recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, [{"type": "quantize-onnx"}]))
    with pytest.raises(RecipeError, match="needs a onnx input"):
        run_recipe(recipe, tmp_path, progress=False)


def test_training_killed_mid_stage_resumes_from_its_checkpoint(tiny_encoder, sentiment_csv, tmp_path,
                                                              monkeypatch):
    import slimbert.compress.trainer as trainer

    stages = [{"type": "finetune", "name": "teacher", "epochs": 2, "checkpoint_every": 5, **FAST_TRAIN}]
    recipe = recipe_from_dict(tiny_recipe(tiny_encoder, sentiment_csv, stages))
    original = trainer.evaluate

    def killed(*args, **kwargs):  # the first dev evaluation, after 18 steps: checkpoint at 15
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, tmp_path, progress=False)
    assert not (tmp_path / "teacher").exists()
    assert list((tmp_path / ".work").glob("teacher-*/checkpoint.pt"))
    monkeypatch.setattr(trainer, "evaluate", original)
    result = run_recipe(recipe, tmp_path, progress=False)
    assert result.artifact("teacher").manifest.metrics["resumed_from_step"] == 15
    assert not list((tmp_path / ".work").glob("teacher-*"))  # scratch space removed once done


def test_recipe_under_two_processes_trains_together_and_writes_once(tiny_encoder, sentiment_csv, tmp_path):
    """torchrun -m slimbert run: training stages on both processes, the export on the main one."""
    import math

    import yaml

    from slimbert.artifacts import read_artifact
    from slimbert.data import DatasetConfig, load_dataset

    stages = [{"type": "finetune", "name": "teacher", "epochs": 1, **FAST_TRAIN},
              {"type": "export-onnx", "name": "teacher-onnx", "input": "teacher"},
              {"type": "distill", "name": "student", "input": "teacher", "epochs": 1, **FAST_TRAIN}]
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "run"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_encoder, sentiment_csv, stages)))
    proc = launch(2, ["-m", "slimbert", "-q", "run", str(recipe), "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1  # the main process reports
    run = json.loads((out / "run.json").read_text())
    assert [s["status"] for s in run["stages"]] == ["ran"] * 3
    train_size = len(load_dataset(DatasetConfig(source=str(sentiment_csv))).splits["train"])
    for name in ("teacher", "teacher-onnx", "student"):
        assert read_artifact(out / name).verify() == []
    for name in ("teacher", "student"):  # global batches of 16: as many steps as one process takes
        metrics = read_artifact(out / name).manifest.metrics
        assert metrics["processes"] == 2 and metrics["steps"] == math.ceil(train_size / 16)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert not list((out / ".work").iterdir())  # checkpoints and the other process's scratch are gone


# --- what is reused must be what was made: files, library versions, manifests, other recipes ---

EXPORTS = [{"type": "export-onnx", "name": "onnx"},
           {"type": "quantize-onnx", "name": "int8", "mode": "dynamic"}]


def pretend_version(monkeypatch, library: str, version: str) -> None:
    """``library`` looks installed at ``version`` to every metadata lookup (an upgrade)."""
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: version if name == library else real(name))


@pytest.fixture
def export_run(tiny_classifier, sentiment_csv, tmp_path):
    """A finished two-stage run (ONNX export, dynamic INT8) and a function that runs it again."""
    from slimbert.pipeline import plan_recipe

    def recipe(name="tiny", stages=EXPORTS):
        return recipe_from_dict({**tiny_recipe(tiny_classifier, sentiment_csv, stages), "name": name})

    def again(plan=False, **kw):
        if plan:
            return [(p.name, p.reason) for p in plan_recipe(recipe(), tmp_path / "run", **kw)]
        return [s.status for s in run_recipe(recipe(), tmp_path / "run", progress=False, **kw).stages]

    run_recipe(recipe(), tmp_path / "run", progress=False)
    return tmp_path / "run", again, recipe


def test_a_truncated_reused_artifact_reruns_with_a_warning_naming_the_file(export_run, caplog):
    from slimbert.artifacts import read_artifact

    out, again, _ = export_run
    model = out / "onnx" / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])  # a truncated copy: the manifest still looks whole
    assert again(plan=True) == [("onnx", "onnx/model.onnx does not match its recorded sha256"),
                                ("int8", "after onnx")]
    with caplog.at_level("WARNING", logger="slimbert.pipeline"):
        statuses = again()
    assert statuses[0] == "ran"  # the export is deterministic: int8's input is the same again
    assert "onnx/model.onnx does not match its recorded sha256" in caplog.text
    assert read_artifact(out / "onnx").verify() == []
    (out / "int8" / "model.onnx").unlink()
    assert again(plan=True) == [("onnx", None), ("int8", "int8/model.onnx is missing")]


@pytest.mark.parametrize(("library", "reruns"), [
    ("onnxruntime", [("onnx", True), ("int8", True)]),   # ORT fuses the export and quantizes
    ("transformers", [("onnx", True), ("int8", False)]),  # the export reads a transformers model
    ("slimbert", [("onnx", True), ("int8", True)]),
    ("torchao", [("onnx", False), ("int8", False)]),  # PT2E only
])
def test_a_changed_library_version_reruns_the_stages_it_shapes(export_run, monkeypatch, library, reruns):
    """An onnxruntime upgrade used to reuse old INT8 artifacts silently; the stage hash stays as it was."""
    import slimbert.artifacts as artifacts

    out, again, _ = export_run
    real = artifacts.library_versions()
    pretend_version(monkeypatch, library, "99.0")
    planned = dict(again(plan=True))
    for stage, expected in reruns:
        assert (planned[stage] == f"made with other library versions: {library} {real[library]} -> 99.0") \
            is expected, planned
    if reruns[1][1]:
        assert again() == ["ran", "ran"]
        assert again() == ["reused", "reused"]  # the new versions are recorded


def test_a_manifest_without_a_library_predates_its_tracking_and_is_not_rerun_for_it(export_run, monkeypatch):
    out, again, _ = export_run
    path = out / "onnx" / "manifest.json"
    manifest = json.loads(path.read_text())
    recorded = manifest["versions"].pop("onnxruntime")
    path.write_text(json.dumps(manifest))
    pretend_version(monkeypatch, "onnxruntime", "99.0")
    assert again(plan=True) == [
        ("onnx", None), ("int8", f"made with other library versions: onnxruntime {recorded} -> 99.0")]


def test_a_zero_byte_manifest_reruns_its_stage_with_a_warning(export_run, caplog):
    out, again, _ = export_run
    (out / "onnx" / "manifest.json").write_bytes(b"")  # a power cut before the data reached the disk
    (reason_onnx, reason_int8) = [reason for _, reason in again(plan=True)]
    assert "onnx/manifest.json is empty (0 bytes)" in reason_onnx and reason_int8 == "after onnx"
    with caplog.at_level("WARNING", logger="slimbert.pipeline"):
        assert again()[0] == "ran"
    assert "manifest.json is empty (0 bytes)" in caplog.text


def test_a_stage_folder_another_recipe_made_is_not_replaced_without_a_word(export_run):
    """examples/prune-student.yaml run into runs/default silently replaced the default run's `bench`."""
    from slimbert.errors import RecipeError
    from slimbert.pipeline import plan_recipe

    out, _, recipe = export_run
    before = (out / "int8" / "manifest.json").read_bytes()
    same = [EXPORTS[0], {**EXPORTS[1], "mode": "dynamic"}]
    other = [EXPORTS[0], {**EXPORTS[1], "per_channel": True}]
    assert [s.status for s in run_recipe(recipe("companion", same), out, progress=False).stages] == \
        ["reused", "reused"]  # reusing another recipe's stage is what a shared folder is for
    with pytest.raises(RecipeError) as err:
        run_recipe(recipe("companion", other), out, progress=False)
    assert "int8 (recipe 'tiny')" in err.value.message and "--rerun int8" in err.value.hint
    assert (out / "int8" / "manifest.json").read_bytes() == before
    planned = plan_recipe(recipe("companion", other), out)
    assert "refused: int8 was made by recipe 'tiny'" in planned[1].reason
    replaced = run_recipe(recipe("companion", other), out, rerun=("int8",), progress=False)
    assert [s.status for s in replaced.stages] == ["reused", "ran"]
    assert replaced.artifact("int8").manifest.extra["recipe"] == "companion"
    # the folder stays the first recipe's: its recipe.json and run.json (and report) are its own
    assert json.loads((out / "recipe.json").read_text())["name"] == "tiny"
    assert json.loads((out / "run.json").read_text())["recipe"] == "tiny"
    assert json.loads((out / "run-companion.json").read_text())["recipe"] == "companion"
