import numpy as np
import pytest
import torch

from slimbert.errors import RuntimeUnavailable
from slimbert.runtimes import all_runtimes, get_runtime


def test_registry_has_cpu_and_gpu_targets_with_reasons():
    runtimes = all_runtimes()
    assert {"torch-cpu", "ort-cpu", "ort-cuda", "ort-tensorrt", "torch-cuda", "torch-cuda-fp16",
            "torch-cuda-bf16", "torch-cuda-fp8", "tensorrt"} <= set(runtimes)
    assert runtimes["torch-cpu"].unavailable_reason() is None
    assert runtimes["ort-cpu"].unavailable_reason() is None
    if not torch.cuda.is_available():
        assert "CUDA" in runtimes["torch-cuda-fp16"].unavailable_reason()
        with pytest.raises(RuntimeUnavailable, match="not available here"):
            get_runtime("torch-cuda-fp16")


def test_unknown_runtime():
    with pytest.raises(RuntimeUnavailable, match="unknown runtime"):
        get_runtime("tflite")


def test_torch_session_runs_a_batch(tiny_classifier):
    session = get_runtime("torch-cpu").load(tiny_classifier, threads=1)
    ids = np.full((2, 5), 6, dtype=np.int64)
    logits = session.run({"input_ids": ids, "attention_mask": np.ones_like(ids),
                          "token_type_ids": np.zeros_like(ids)})
    assert logits.shape == (2, 2) and logits.dtype == np.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("target", "atol"), [("torch-cuda", 1e-4), ("torch-cuda-fp16", 2e-2),
                                                  ("torch-cuda-bf16", 6e-2)])
def test_torch_cuda_matches_cpu(tiny_classifier, target, atol):
    ids = np.random.default_rng(0).integers(5, 30, size=(4, 16)).astype(np.int64)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    cpu = get_runtime("torch-cpu").load(tiny_classifier).run(batch)
    gpu = get_runtime(target).load(tiny_classifier).run(batch)
    np.testing.assert_allclose(cpu, gpu, atol=atol)


@pytest.mark.gpu
def test_ort_cuda_matches_cpu(tiny_classifier, tmp_path, sentiment_csv):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here")
    from slimbert.data import DatasetConfig, encode_split, load_dataset
    from slimbert.export.onnx import OnnxExportConfig, export_onnx
    from slimbert.models import load_tokenizer

    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    enc = encode_split(load_tokenizer(tiny_classifier), data.splits["dev"], 32)
    export_onnx(tiny_classifier, tmp_path, OnnxExportConfig(), enc)
    np.testing.assert_allclose(get_runtime("ort-cpu").load(tmp_path).predict(enc),
                               get_runtime("ort-cuda").load(tmp_path).predict(enc), atol=1e-3)


def test_fp8_runtime_says_why_it_cannot_run_here():
    from slimbert.runtimes import all_runtimes

    runtime = all_runtimes()["torch-cuda-fp8"]
    if torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9):
        assert runtime.unavailable_reason() is None
    else:
        assert runtime.unavailable_reason()  # no GPU, or one without FP8 tensor cores


@pytest.mark.gpu
def test_torch_cuda_fp8_matches_cpu(tiny_classifier):
    from slimbert.runtimes import all_runtimes

    reason = all_runtimes()["torch-cuda-fp8"].unavailable_reason()
    if reason:
        pytest.skip(reason)
    ids = np.random.default_rng(0).integers(5, 30, size=(4, 16)).astype(np.int64)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    cpu = get_runtime("torch-cpu").load(tiny_classifier).run(batch)
    session = get_runtime("torch-cuda-fp8").load(tiny_classifier)
    assert any("Float8" in type(m.weight).__name__ for m in session.model.modules()
               if isinstance(m, torch.nn.Linear))
    np.testing.assert_allclose(cpu, session.run(batch), atol=0.1)


def test_cpu_bf16_is_listed_but_not_a_default_target(tiny_classifier):
    from slimbert.bench.run import default_targets
    from slimbert.runtimes import all_runtimes

    runtime = all_runtimes()["torch-cpu-bf16"]
    assert "torch-cpu-bf16" not in default_targets("hf-model") and "torch-cpu" in default_targets("hf-model")
    if runtime.unavailable_reason() is None:
        ids = np.random.default_rng(0).integers(5, 30, size=(2, 8)).astype(np.int64)
        batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        cpu = get_runtime("torch-cpu").load(tiny_classifier).run(batch)
        np.testing.assert_allclose(cpu, runtime.load(tiny_classifier).run(batch), atol=6e-2)


def _optimized_ops(runtime, folder, tmp_path, alone=False):
    """The op types of the graph ORT runs after its load-time optimizations, and the session."""
    import onnx

    from slimbert.runtimes.onnxruntime_runtime import OrtRuntime

    written = tmp_path / "optimized.onnx"

    class Recording(OrtRuntime):
        def session_options(self, options):
            options.optimized_model_filepath = str(written)

    recording = Recording(runtime.name, runtime.device, runtime.providers, runtime.description)
    session = (recording.load_alone if alone else recording.load)(folder, threads=1)
    return {n.op_type for n in onnx.load(str(written)).graph.node}, session


def test_ort_cpu_keeps_layernorm_unfused_and_spins_only_alone(tiny_classifier, tmp_path, sentiment_csv):
    from slimbert.data import DatasetConfig, encode_split, load_dataset
    from slimbert.export.onnx import OnnxExportConfig, export_onnx
    from slimbert.models import load_tokenizer

    data = load_dataset(DatasetConfig(source=str(sentiment_csv)))
    enc = encode_split(load_tokenizer(tiny_classifier), data.splits["dev"], 32)
    fused = tmp_path / "fused"
    fused.mkdir()
    export_onnx(tiny_classifier, fused, OnnxExportConfig(), enc)
    ops, session = _optimized_ops(get_runtime("ort-cpu"), fused, tmp_path)
    # ORT's own load-time fusions run, as in every other loader of the file (Add +
    # LayerNormalization, left apart by the export, become SkipLayerNormalization)
    assert "SkipLayerNormalization" in ops
    options = session.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    _, alone = _optimized_ops(get_runtime("ort-cpu"), fused, tmp_path, alone=True)
    options = alone.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    np.testing.assert_allclose(session.predict(enc), alone.predict(enc), atol=1e-5)
