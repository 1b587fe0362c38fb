"""A battery of bad input over every command: exit 2, the file or option named, no traceback.

A user's mistake must cost a one-paragraph message that says what to fix, and leave nothing
behind: a command that stops at input validation creates no output folder. Each case is
the command line a new user could type; `{name}` stands for a file built below.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from slimbert.cli import main
from tests.conftest import tiny_recipe


@pytest.fixture
def files(tmp_path, tiny_classifier, sentiment_csv) -> dict[str, Path]:
    """Bad (and a few good) inputs, by name."""
    f = {"model": tiny_classifier, "data": sentiment_csv, "out": tmp_path / "out"}

    def recipe(name, data):
        path = tmp_path / f"{name}.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        f[name] = path

    def model_copy(name, drop=(), **files):
        folder = shutil.copytree(tiny_classifier, tmp_path / name)
        for dropped in drop:
            (folder / dropped).unlink()
        for file, content in files.items():
            (folder / file.replace("_", ".")).write_bytes(content)
        f[name] = folder

    onnx = [{"type": "export-onnx", "name": "onnx"}]
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    f["binary"] = tmp_path / "binary.yaml"
    recipe("long", tiny_recipe(tiny_classifier, sentiment_csv, onnx, max_length=100000))
    recipe("nodata", tiny_recipe(tiny_classifier, tmp_path / "missing.csv", onnx))
    recipe("nomodel", tiny_recipe(tmp_path / "no-model-here", sentiment_csv, onnx))
    recipe("listed", "- a\n- b\n")
    recipe("badlabel", tiny_recipe(tiny_classifier, sentiment_csv, onnx, label="stars"))
    model_copy("empty-onnx", drop=["model.safetensors"], model_onnx=b"")
    model_copy("bare-onnx", drop=["model.safetensors", "config.json"], model_onnx=b"\x08\x07garbage")
    model_copy("broken-manifest", manifest_json=b"")
    model_copy("text-onnx", drop=["model.safetensors"], model_onnx=b"this is not an ONNX file")
    recipe("badlayers", tiny_recipe(tiny_classifier, sentiment_csv, [
        {"type": "finetune", "name": "teacher", "epochs": 1},
        {"type": "distill", "name": "student", "input": "teacher", "layers": [0, 99]}]))
    (tmp_path / "devices.yaml").write_text("pi:\n  transport: ssh\n  host: 127.0.0.1\n")
    f["devices"] = tmp_path / "devices.yaml"
    (tmp_path / "binary-devices.yaml").write_bytes(b"\xff\xfe\x00\x01")
    f["binary-devices"] = tmp_path / "binary-devices.yaml"
    (tmp_path / "empty.json").write_bytes(b"")
    f["empty-report"] = tmp_path / "empty.json"
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00\x01")
    f["binary-report"] = tmp_path / "binary.json"
    (tmp_path / "not-a-report.json").write_text(json.dumps({"rows": []}))
    f["not-a-report"] = tmp_path / "not-a-report.json"
    return f


DATA = ["--dataset", "{data}", "--max-length", "32"]
CASES = {
    # run
    "run: binary recipe": (["run", "{binary}", "--out", "{out}"], ["binary.yaml", "not a UTF-8 text file"]),
    "run: missing recipe": (["run", "{out}.yaml", "--out", "{out}"], ["out.yaml", "does not exist"]),
    "run: recipe is a list": (["run", "{listed}", "--out", "{out}"], ["listed.yaml", "YAML mapping"]),
    "run: max_length beyond the model": (["run", "{long}", "--out", "{out}"],
                                         ["max_length 100000", "maximum of 64 positions"]),
    "run: missing dataset file": (["run", "{nodata}", "--out", "{out}"], ["missing.csv", "does not exist"]),
    "run: missing label column": (["run", "{badlabel}", "--out", "{out}"], ["'stars'"]),
    "run: missing model folder": (["run", "{nomodel}", "--out", "{out}"],
                                  ["no-model-here", "does not exist"]),
    "run: --rerun unknown stage": (["run", "{long}", "--rerun", "nope", "--out", "{out}"],
                                   ["--rerun", "'nope'"]),
    "run: --dry-run of a bad recipe": (["run", "{long}", "--dry-run", "--out", "{out}"], ["max_length"]),
    "run: --dry-run of distill layers the teacher lacks": (
        ["run", "{badlayers}", "--dry-run", "--out", "{out}"], ["[99]", "out of range", "4 layers"]),
    # compress
    "compress: --max-length beyond the model": (
        ["compress", "--stage", "finetune", "--model", "{model}", "--dataset", "{data}", "--max-length",
         "100000", "--out", "{out}"], ["max_length 100000", "--max-length", "64 positions"]),
    "compress: missing model": (["compress", "--stage", "finetune", "--model", "./nowhere", *DATA,
                                 "--out", "{out}"], ["nowhere", "does not exist"]),
    "compress: unknown --stage": (["compress", "--stage", "distil", "--model", "{model}", "--out", "{out}"],
                                  ["--stage", "distil"]),
    "compress: --set without =": (["compress", "--stage", "finetune", "--model", "{model}", "--set", "epochs",
                                   "--out", "{out}"], ["--set", "KEY=VALUE"]),
    "compress: --set a wrong type": (["compress", "--stage", "finetune", "--model", "{model}", *DATA,
                                      "--set", "epochs=two", "--out", "{out}"], ["--set epochs"]),
    "compress: missing dataset": (["compress", "--stage", "finetune", "--model", "{model}", "--dataset",
                                   "{out}.csv", "--max-length", "32", "--out", "{out}"],
                                  ["out.csv", "does not exist"]),
    "compress: the default --max-length beyond the model": (
        ["compress", "--stage", "finetune", "--model", "{model}", "--dataset", "{data}", "--out", "{out}"],
        ["max_length 128", "--max-length", "64 positions"]),
    # export
    "export: --max-length beyond the model": (["export", "{model}", "--dataset", "{data}", "--max-length",
                                               "100000", "--out", "{out}"], ["--max-length", "64 positions"]),
    "export: an empty model.onnx": (["export", "{empty-onnx}", *DATA, "--out", "{out}"],
                                    ["model.onnx", "not PyTorch weights"]),
    "export: unknown --format": (["export", "{model}", "--format", "tflite", "--out", "{out}"], ["--format"]),
    "export: --opset out of range": (["export", "{model}", "--opset", "99", "--out", "{out}"], ["--opset"]),
    "export: a damaged manifest": (["export", "{broken-manifest}", "--out", "{out}"],
                                   ["manifest.json", "is empty (0 bytes)"]),
    # bench
    "bench: an empty model.onnx": (["bench", "{empty-onnx}", *DATA, "--seq-len", "16", "--out", "{out}"],
                                   ["model.onnx", "is empty (0 bytes)"]),
    "bench: a model.onnx that is not ONNX": (
        ["bench", "{text-onnx}", *DATA, "--seq-len", "16", "--out", "{out}"],
        ["model.onnx", "is not an ONNX file"]),
    "bench: model.onnx without config.json": (["bench", "{bare-onnx}", *DATA, "--seq-len", "16",
                                               "--out", "{out}"], ["bare-onnx", "config.json"]),
    "bench: --seq-len beyond the model": (["bench", "{model}", *DATA, "--seq-len", "4096", "--out", "{out}"],
                                          ["--seq-len", "64 positions"]),
    "bench: --max-length beyond the model": (["bench", "{model}", "--dataset", "{data}", "--max-length",
                                              "100000", "--seq-len", "16", "--out", "{out}"],
                                             ["--max-length", "64 positions"]),
    "bench: a damaged manifest": (["bench", "{broken-manifest}", *DATA, "--seq-len", "16", "--out", "{out}"],
                                  ["manifest.json", "is empty (0 bytes)"]),
    "bench: missing folder": (["bench", "{out}-nowhere", "--out", "{out}"],
                              ["out-nowhere", "does not exist"]),
    "bench: bad --batch-sizes": (["bench", "{model}", "--batch-sizes", "1,x", "--out", "{out}"],
                                 ["--batch-sizes"]),
    "bench: unknown --targets": (["bench", "{model}", *DATA, "--seq-len", "16", "--targets", "ort-gpu9",
                                  "--out", "{out}"], ["ort-gpu9"]),
    # gate
    "gate: missing report": (["gate", "--baseline", "{out}.json"], ["--baseline", "out.json"]),
    "gate: empty report": (["gate", "--baseline", "{empty-report}"], ["empty.json", "not valid JSON"]),
    "gate: binary report": (["gate", "--baseline", "{binary-report}"], ["binary.json"]),
    "gate: not a bench report": (["gate", "--baseline", "{not-a-report}"], ["not-a-report.json", "rows"]),
    "gate: bad --max-drop": (["gate", "--baseline", "{not-a-report}", "--max-drop", "lots"], ["--max-drop"]),
    # deploy
    "deploy: missing devices file": (["deploy", "{model}", "--device", "pi", "--devices", "{out}.yaml"],
                                     ["out.yaml", "does not exist"]),
    "deploy: binary devices file": (["deploy", "{model}", "--device", "pi", "--devices", "{binary-devices}"],
                                    ["binary-devices.yaml"]),
    "deploy: unknown device": (["deploy", "{model}", "--device", "pi5", "--devices", "{devices}"],
                               ["'pi5'", "devices.yaml"]),
    "deploy: --report without --bench": (["deploy", "{model}", "--device", "pi", "--devices", "{devices}",
                                          "--report", "{not-a-report}"], ["--report", "--bench"]),
    "deploy: nothing to do": (["deploy", "--device", "pi", "--devices", "{devices}"],
                              ["ARTIFACT", "--status"]),
    # optimize
    "optimize: a target no runtime has": (["optimize", "{model}", *DATA, "--target", "tflite",
                                           "--out", "{out}"], ["'tflite'", "known targets"]),
    "optimize: a negative --max-drop": (["optimize", "{model}", *DATA, "--max-drop", "-1", "--out", "{out}"],
                                        ["--max-drop"]),
    "optimize: a search space with no students": (["optimize", "{model}", *DATA, "--set", "depths=[0.5]",
                                                   "--set", "distill=[]", "--out", "{out}"],
                                                  ["no students", "distill"]),
    "optimize: a dev split too small to rank": (["optimize", "{model}", *DATA, "--out", "{out}"],
                                                ["dev split has 40 examples", "resolving 1 point"]),
    # assets
    "assets: unknown asset": (["assets", "fetch", "gpt-5"], ["'gpt-5'", "minilm-l6"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_naming_it_without_a_traceback(case, files):
    args, fragments = CASES[case]
    args = [re.sub(r"\{([\w-]+)\}", lambda m: str(files[m.group(1)]), a) for a in args]
    result = CliRunner().invoke(main, ["-q", *args])
    assert result.exit_code == 2, f"{case}: exit {result.exit_code}\n{result.output}"
    # CliRunner keeps an escaped exception in result.exception (a real run prints its traceback)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, f"{case}: {fragment!r} not in\n{result.output}"
    assert not files["out"].exists(), f"{case}: left {files['out']} behind"


def test_the_battery_covers_every_command():
    commands = {args[0] for args, _ in CASES.values()}
    assert commands == set(main.commands) and len(CASES) >= 30
