"""run_bench: a model scored against another label set is refused or said to be matched."""

import json
import logging
import shutil

import pytest

from slimbert.bench.run import BenchConfig, BenchEntry, run_bench
from slimbert.data import DatasetConfig, load_dataset
from slimbert.errors import SlimbertError
from tests.conftest import make_sentences, token_batch, write_csv

FAST = BenchConfig(batch_sizes=[1], seq_len=8, warmup=0, min_iters=1, max_iters=1, budget_s=0.01)


def bench(model, csv):
    data = load_dataset(DatasetConfig(source=str(csv), max_length=16))
    return run_bench([BenchEntry("model", model, "hf-model")], data, FAST, max_length=16, progress=False)


def relabelled_csv(tmp_path, mapping):
    rows = [(text, mapping[label]) for text, label in make_sentences(60, seed=3)]
    return write_csv(tmp_path / "data.csv", rows)


def test_a_dataset_with_more_classes_than_the_model_is_refused(tmp_path, tiny_classifier):
    rows = make_sentences(60, seed=3) + [("plain words here", "neutral")] * 30
    with pytest.raises(SlimbertError, match=r"predicts 2 labels \(neg, pos\) but the dataset has 3"):
        bench(tiny_classifier, write_csv(tmp_path / "three.csv", rows))


def test_the_same_labels_in_another_order_are_refused(tmp_path, tiny_classifier):
    model = shutil.copytree(tiny_classifier, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "pos", "1": "neg"}, {"pos": 0, "neg": 1}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(SlimbertError, match="orders its labels pos, neg"):
        bench(model, relabelled_csv(tmp_path, {"neg": "neg", "pos": "pos"}))


def test_differently_named_labels_are_matched_by_position_and_logged(tmp_path, tiny_classifier, caplog):
    with caplog.at_level(logging.WARNING, logger="slimbert"):
        report = bench(tiny_classifier, relabelled_csv(tmp_path, {"neg": 0, "pos": 1}))
    assert "matched by position: 0 -> neg, 1 -> pos" in caplog.text
    assert report["rows"][0]["accuracy"]["accuracy"] >= 0


def test_retention_of_a_reference_that_scores_zero_is_left_blank(tmp_path, tiny_classifier, monkeypatch):
    import slimbert.bench.run as run

    monkeypatch.setattr(run, "classification_metrics", lambda *a, **k: {"accuracy": 0.0, "macro_f1": 0.0})
    report = bench(tiny_classifier, relabelled_csv(tmp_path, {"neg": "neg", "pos": "pos"}))
    assert report["rows"][0]["retention"] is None


def test_non_finite_logits_fail_the_bench_counted_and_named(tmp_path, tiny_classifier, monkeypatch):
    """A broken fp16/FP8 graph gives NaN; argmax would call it class 0 and score it."""
    import numpy as np

    from slimbert.runtimes.base import Session

    real = Session.predict

    def half_broken(self, enc, batch_size=64, **kw):
        logits = real(self, enc, batch_size, **kw)
        logits[::3] = np.nan
        return logits

    monkeypatch.setattr(Session, "predict", half_broken)
    csv = write_csv(tmp_path / "data.csv", make_sentences(60, seed=3))
    data = load_dataset(DatasetConfig(source=str(csv), max_length=16))
    with pytest.raises(SlimbertError, match=r"model on torch-cpu: \d+ of \d+ examples have non-finite"):
        run_bench([BenchEntry("model", tiny_classifier, "hf-model")], data,
                  BenchConfig(targets=["torch-cpu"], batch_sizes=[1], seq_len=8, warmup=0, min_iters=1,
                              max_iters=1, budget_s=0.01, isolate=False),  # the patch lives here
                  max_length=16, progress=False)


def test_a_plain_onnxruntime_session_reproduces_the_bench_on_every_onnx_artifact(tmp_path, tiny_classifier,
                                                                                 sentiment_csv):
    """What the report says is what any other loader of the file gets: onnxruntime with default
    options gives the bench's predictions, and the same logits as slimbert's session."""
    import numpy as np
    import onnxruntime as ort

    from slimbert.bench.default_loader import plain_session_agreement
    from slimbert.bench.report import load_report
    from slimbert.data import collate, encode_split
    from slimbert.models import load_tokenizer
    from slimbert.pipeline import run_recipe
    from slimbert.recipe import recipe_from_dict
    from slimbert.runtimes import get_runtime
    from slimbert.runtimes.onnxruntime_runtime import OrtSession
    from tests.conftest import tiny_recipe

    stages = [{"name": "onnx", "type": "export-onnx", "input": "model"},
              {"name": "int8", "type": "quantize-onnx", "input": "onnx", "mode": "dynamic"},
              {"name": "static", "type": "quantize-onnx", "input": "onnx", "mode": "static"},
              {"name": "bench", "type": "bench", "artifacts": ["onnx", "int8", "static"],
               "targets": ["ort-cpu"], "batch_sizes": [1], "seq_len": 16, "budget_s": 0.05}]
    recipe = recipe_from_dict(tiny_recipe(tiny_classifier, sentiment_csv, stages), "test")
    result = run_recipe(recipe, tmp_path, progress=False)
    report = load_report(result.artifact("bench").path / "report.json")
    data = load_dataset(recipe.dataset, seed=recipe.seed)
    agreement = plain_session_agreement(report, data, recipe.dataset.max_length)
    assert [a["artifact"] for a in agreement] == ["onnx", "int8", "static"]
    assert all(a["agreement"] == 1.0 and a["examples"] > 0 for a in agreement)
    # dynamic INT8 (and static with dynamic attention) depends on the batch: scored one at a time
    rows = {r.artifact: r for r in report.rows}
    assert rows["onnx"].served_batch is None and rows["int8"].served_batch == 1
    assert rows["static"].served_batch == 1 and 0 <= rows["int8"].batched_agreement <= 1
    encoded = encode_split(load_tokenizer(result.artifact("onnx").path), data.splits["test"],
                           recipe.dataset.max_length)
    for name, row in rows.items():  # a plain session, one example at a time, as a server runs it
        plain = ort.InferenceSession(str(result.artifact(name).path / "model.onnx"),
                                     providers=["CPUExecutionProvider"])
        names = {i.name for i in plain.get_inputs()}
        served = [int(plain.run(None, {k: v for k, v in collate(encoded, [i]).items() if k in names})[0]
                      .argmax(-1)[0]) for i in range(len(encoded))]
        assert served == row.predictions, name
    batch = token_batch(4, 16)
    for name in ("onnx", "int8", "static"):
        path = result.artifact(name).path
        ours = get_runtime("ort-cpu").load_alone(path)
        plain = OrtSession(ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"]))
        feed = {k: batch[k] for k in ours.input_names}
        np.testing.assert_array_equal(ours.run(feed), plain.run(feed), err_msg=name)
