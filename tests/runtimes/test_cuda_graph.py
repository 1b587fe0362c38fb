"""Graph-captured GPU runtimes: bucketing, padding and slicing on CPU; capture under -m gpu."""

import numpy as np
import pytest
import torch

from slimbert.errors import RuntimeUnavailable, SlimbertError
from slimbert.models import load_classifier
from slimbert.runtimes import all_runtimes, get_runtime
from slimbert.runtimes.buckets import BucketedSession, Buckets, pad_batch, seq_buckets_from_lengths
from slimbert.runtimes.cuda_graph import eager_forward
from slimbert.runtimes.torch_runtime import model_input_names
from tests.conftest import token_batch

GRAPH_TARGETS = ["torch-cuda-graph-fp16", "torch-cuda-graph-bf16", "torch-cuda-graph-fp8",
                 "torch-cuda-graph-int8wo", "ort-cuda-graph"]


def test_pick_is_the_smallest_bucket_that_holds_the_batch():
    buckets = Buckets(batch_sizes=(1, 4, 16), seq_lens=(16, 48, 128))
    assert buckets.pick(1, 16) == (1, 16)
    assert buckets.pick(2, 17) == (4, 48)
    assert buckets.pick(16, 128) == (16, 128)
    with pytest.raises(SlimbertError, match="longer than the longest bucket"):
        buckets.pick(1, 129)


def test_buckets_are_cut_to_the_model_position_limit():
    assert Buckets(seq_lens=(64, 128, 256, 512)).within(300).seq_lens == (64, 128, 256, 300)
    assert Buckets(seq_lens=(64, 128)).within(128).seq_lens == (64, 128)


@pytest.mark.parametrize("bad", [(), (0, 8), (8, 4), (4, 4)])
def test_bucket_ladders_must_ascend(bad):
    with pytest.raises(SlimbertError, match="ascending"):
        Buckets(batch_sizes=bad)


def test_sequence_buckets_follow_the_data_lengths():
    short_texts = [9] * 90 + [30] * 9 + [70]
    assert seq_buckets_from_lengths(short_texts, 512) == (16, 32, 70)
    long_docs = list(range(300, 1000))
    buckets = seq_buckets_from_lengths(long_docs, 512)
    assert buckets[-1] == 512 and all(b % 16 == 0 for b in buckets)


def test_fitted_buckets_are_tight_on_the_data_and_keep_the_ladder_above_it():
    buckets = Buckets(seq_lens=(16, 32, 64, 128, 256)).fitted([9] * 90 + [30] * 9 + [70])
    assert buckets.seq_lens == (16, 32, 70, 128, 256)
    assert buckets.pick(1, 40) == (1, 70) and buckets.pick(1, 128) == (1, 128)


def test_pad_batch_masks_the_padding_and_keeps_padded_rows_finite():
    batch = token_batch(2, 5)
    padded = pad_batch(batch, rows=4, seq_len=8)
    assert padded["input_ids"].shape == (4, 8)
    np.testing.assert_array_equal(padded["input_ids"][:2, :5], batch["input_ids"])
    assert not padded["attention_mask"][:2, 5:].any()  # padded positions are masked
    np.testing.assert_array_equal(padded["attention_mask"][2:], [[1] + [0] * 7] * 2)  # one token each
    with pytest.raises(ValueError, match="does not fit"):
        pad_batch(batch, rows=1, seq_len=8)


@pytest.mark.parametrize(("rows", "seq"), [(1, 7), (3, 16), (70, 20)])
def test_bucketed_session_gives_the_unpadded_logits(tiny_classifier, rows, seq):
    model = load_classifier(tiny_classifier).eval()
    names = model_input_names(tiny_classifier)
    session = BucketedSession(names, Buckets(batch_sizes=(1, 4, 32), seq_lens=(8, 32)),
                              eager_forward(model, names, "cpu"))
    batch = token_batch(rows, seq, seed=rows)
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    logits = session.run(batch)
    assert logits.shape == (rows, 2)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    # 70 rows run as 32 + 32 + 6 (padded to 32): only the buckets the batch reached were built
    expected_buckets = {1: [(1, 8)], 3: [(4, 32)], 70: [(32, 32)]}[rows]
    assert session.captured == expected_buckets
    assert set(session.setup_seconds) == {f"{r}x{s}" for r, s in expected_buckets}


def test_warm_captures_ahead_of_timing(tiny_classifier):
    model = load_classifier(tiny_classifier).eval()
    names = model_input_names(tiny_classifier)
    calls = []

    def capture(rows, seq):
        calls.append((rows, seq))
        return eager_forward(model, names, "cpu")(rows, seq)

    session = BucketedSession(names, Buckets(batch_sizes=(1, 8), seq_lens=(16, 64)), capture)
    session.warm([(1, 10), (8, 64), (100, 64)])
    assert calls == [(1, 16), (8, 64)]  # 100 rows run as chunks of 8: no new bucket
    session.run(token_batch(1, 12))
    assert calls == [(1, 16), (8, 64)]
    with pytest.raises(SlimbertError, match="before the first capture"):
        session.fit_to_lengths([12, 20])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report without a GPU")
def test_graph_targets_are_reported_unavailable_with_their_reason():
    runtimes = all_runtimes()
    for name in GRAPH_TARGETS:
        assert name in runtimes and not runtimes[name].in_default
        assert "install" in runtimes[name].unavailable_reason()
        with pytest.raises(RuntimeUnavailable, match="not available here"):
            get_runtime(name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("target", "atol"),
                         [("torch-cuda-graph-fp16", 3e-2), ("torch-cuda-graph-bf16", 8e-2)])
def test_captured_graphs_agree_with_eager_fp32(tiny_classifier, target, atol):
    reference = get_runtime("torch-cuda").load(tiny_classifier)
    session = get_runtime(target).load(tiny_classifier)
    for rows, seq in [(1, 12), (5, 40), (3, 12)]:
        batch = token_batch(rows, seq, seed=seq)
        np.testing.assert_allclose(session.run(batch), reference.run(batch), atol=atol)
    # (1, 12) -> 1x16, (5, 40) -> 8x48, (3, 12) -> 4x16: one graph per bucket, captured once
    assert session.captured == [(1, 16), (4, 16), (8, 48)]
    replay = session.run(token_batch(1, 12, seed=12))
    np.testing.assert_allclose(replay, reference.run(token_batch(1, 12, seed=12)), atol=atol)
    assert session.captured == [(1, 16), (4, 16), (8, 48)]


@pytest.mark.gpu
def test_ort_cuda_graph_matches_ort_cpu(tiny_classifier, tmp_path, sentiment_csv):
    if all_runtimes()["ort-cuda-graph"].unavailable_reason():
        pytest.skip(all_runtimes()["ort-cuda-graph"].unavailable_reason())
    from slimbert.data import DatasetConfig, encode_split, load_dataset
    from slimbert.export.onnx import OnnxExportConfig, export_onnx
    from slimbert.models import load_tokenizer

    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    enc = encode_split(load_tokenizer(tiny_classifier), data.splits["dev"], 32)
    export_onnx(tiny_classifier, tmp_path, OnnxExportConfig(), enc)
    session = get_runtime("ort-cuda-graph").load(tmp_path)
    np.testing.assert_allclose(get_runtime("ort-cpu").load(tmp_path).predict(enc, 8),
                               session.predict(enc, 8), atol=1e-3)
    assert session.captured  # every batch went through a captured bucket
