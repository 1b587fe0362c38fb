import dataclasses

import numpy as np
import onnx
import pytest

from slimbert.data import iterate_batches
from slimbert.errors import ExportError
from slimbert.formats import ONNX_FILE
from slimbert.quantize.calibration import calibrate, with_inferred_shapes
from slimbert.quantize.config import OnnxQuantizeConfig
from slimbert.quantize.onnx_ptq import QuantJob, quantizable_nodes, quantize_onnx, run_job
from slimbert.quantize.onnx_repair import repair, sensitivity
from slimbert.runtimes import get_runtime


def _ops(folder):
    return {n.op_type for n in onnx.load(str(folder / ONNX_FILE)).graph.node}


def test_static_qoperator_quantizes_matmuls_and_attention(exported, dev_enc, train_enc, tmp_path):
    src, _ = exported
    metrics = quantize_onnx(src, tmp_path, OnnxQuantizeConfig(mode="static"), dev_enc, train_enc)
    ops = _ops(tmp_path)
    assert {"QLinearMatMul", "QAttention"} <= ops and "MatMul" not in ops
    assert "Add" in ops and "QLinearAdd" not in ops  # bias and residual sums stay fp32
    assert metrics["agreement_with_source"]["agreement"] >= 0.9
    assert metrics["int8_formats"]["isa"] and metrics["calibration"]["method"] == "minmax"
    assert (tmp_path / "config.json").is_file()


@pytest.mark.parametrize("calibration", ["entropy", "percentile"])
def test_static_qdq_with_histogram_calibration(exported, dev_enc, train_enc, tmp_path, calibration):
    src, _ = exported
    cfg = OnnxQuantizeConfig(mode="static", format="qdq", calibration=calibration, attention="fp32")
    metrics = quantize_onnx(src, tmp_path, cfg, dev_enc, train_enc)
    ops = _ops(tmp_path)
    assert {"QuantizeLinear", "DequantizeLinear", "Attention"} <= ops and "QAttention" not in ops
    assert metrics["agreement_with_source"]["agreement"] >= 0.9


def _dequantized_embedding_inputs(folder):
    graph = onnx.load(str(folder / ONNX_FILE)).graph
    weights = {t.name for t in graph.initializer}
    from_dq = {o for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
               for o in n.output}
    return [i for n in graph.node if n.op_type in ("EmbedLayerNormalization", "Gather")
            for i in n.input if i in from_dq]


def test_static_qdq_keeps_the_embedding_table_fp32_unless_asked(exported, dev_enc, train_enc, tmp_path):
    # a dequantized table costs a whole-table DequantizeLinear per run in ONNX Runtime
    src, _ = exported
    (tmp_path / "default").mkdir()
    (tmp_path / "asked").mkdir()
    cfg = OnnxQuantizeConfig(mode="static", format="qdq")
    quantize_onnx(src, tmp_path / "default", cfg, dev_enc, train_enc)
    assert "EmbedLayerNormalization" in _ops(tmp_path / "default")
    assert _dequantized_embedding_inputs(tmp_path / "default") == []
    cfg = OnnxQuantizeConfig(mode="static", format="qdq", op_types=["MatMul", "EmbedLayerNormalization"])
    quantize_onnx(src, tmp_path / "asked", cfg, dev_enc, train_enc)
    assert _dequantized_embedding_inputs(tmp_path / "asked")


def test_calibration_streams_batches_of_different_lengths(exported, train_enc, tmp_path):
    """Histogram calibration over dynamically padded batches (ORT alone stacks them and fails)."""
    from onnxruntime.quantization import load_tensors_data

    src, _ = exported
    shaped = with_inferred_shapes(src / ONNX_FILE, tmp_path / "shaped.onnx")
    lengths = {b["input_ids"].shape[1] for _, b in iterate_batches(train_enc, 16)}
    assert len(lengths) > 1
    cache = calibrate(shaped, train_enc, "entropy", tmp_path / "cal.json", batch_size=16)
    ranges = load_tensors_data(cache)
    assert "logits" in ranges and len(ranges.data) > 10
    with pytest.raises(ExportError, match="at least one full batch"):
        calibrate(shaped, train_enc.head(3), "minmax", tmp_path / "c2.json", batch_size=16)


def test_fp8_qdq_runs_on_cpu_and_keeps_predictions(exported, dev_enc, train_enc, tmp_path):
    src, _ = exported
    metrics = quantize_onnx(src, tmp_path, OnnxQuantizeConfig(mode="fp8"), dev_enc, train_enc)
    model = onnx.load(str(tmp_path / ONNX_FILE))
    fp8 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT8E4M3FN]
    # 4 layers x (qkv, attention out, 2 FFN) + pooler, classifier
    assert fp8 and metrics["fp8_nodes"] == 4 * 4 + 2
    assert next(o.version for o in model.opset_import if o.domain == "") >= 19
    assert metrics["agreement_with_source"]["agreement"] >= 0.95
    assert metrics["agreement_with_source"]["max_abs_diff"] > 0  # really quantized


def test_fp8_weight_scales_are_per_output_channel():
    from slimbert.quantize.fp8_qdq import quantize_weight

    w = np.array([[1.0, 100.0], [-2.0, 50.0]], dtype=np.float32)  # [K, N]: channel = column
    q, scale = quantize_weight(w, "e4m3fn", axis=1)
    np.testing.assert_allclose(scale, [2.0 / 448, 100.0 / 448], rtol=1e-6)
    np.testing.assert_allclose(q.astype(np.float32) * scale, w, rtol=0.07)
    q_t, scale_t = quantize_weight(w * 1e6, "e4m3fn", axis=None)  # saturates, never NaN
    assert scale_t.shape == () and not np.isnan(q_t.astype(np.float32)).any()


def test_already_quantized_input_is_refused(exported, dev_enc, tmp_path):
    src, _ = exported
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    quantize_onnx(src, tmp_path / "a", OnnxQuantizeConfig(), dev_enc)
    with pytest.raises(ExportError, match="already quantized"):
        quantize_onnx(tmp_path / "a", tmp_path / "b", OnnxQuantizeConfig(), dev_enc)


def test_static_without_calibration_examples_is_a_clear_error(exported, dev_enc, tmp_path):
    src, _ = exported
    with pytest.raises(ExportError, match="needs calibration examples"):
        quantize_onnx(src, tmp_path, OnnxQuantizeConfig(mode="static"), dev_enc, None)


@pytest.mark.parametrize("bad", [{"tolerance": -1}, {"target_isa": "z80"}, {"percentile": 50},
                                 {"mode": "fp8", "calibration": "entropy"},
                                 {"mode": "static", "format": "qdq", "fallback": "dynamic"},
                                 {"mode": "dynamic", "fallback": "dynamic"}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        OnnxQuantizeConfig(**bad)


def test_node_and_op_type_exclusions_stay_fp32(exported, dev_enc, train_enc, tmp_path):
    src, _ = exported
    cfg = OnnxQuantizeConfig(mode="static", exclude_op_types=["Attention"],
                             exclude_nodes=["/bert/pooler/dense/Gemm"])
    metrics = quantize_onnx(src, tmp_path, cfg, dev_enc, train_enc)
    ops = _ops(tmp_path)
    assert "Attention" in ops and "QAttention" not in ops
    assert "/bert/pooler/dense/Gemm" in metrics["excluded_nodes"]
    pooler = [n.op_type for n in onnx.load(str(tmp_path / ONNX_FILE)).graph.node
              if n.name.startswith("/bert/pooler/dense/Gemm")]
    assert pooler and not set(pooler) & {"QGemm", "QLinearMatMul"}  # fp32 (ORT splits it into MatMul + Add)


@pytest.fixture
def forced_job(exported, train_enc, tmp_path):
    """Per-tensor symmetric s8 everywhere: the case that needs repair."""
    src, _ = exported
    shaped = with_inferred_shapes(src / ONNX_FILE, tmp_path / "shaped.onnx")
    cfg = OnnxQuantizeConfig(mode="static", format="qdq", activation_type="int8", activation_symmetric=True,
                             tolerance=0.0, max_fallback_nodes=3)
    cache = calibrate(shaped, train_enc, "minmax", tmp_path / "cal.json")
    (tmp_path / "out").mkdir()
    return QuantJob(shaped, tmp_path / "out" / ONNX_FILE, cfg, cfg.int8_formats(), cache)


def test_sensitivity_ranks_every_quantizable_node(forced_job, dev_enc, exported, tmp_path):
    src, _ = exported
    fp32 = get_runtime("ort-cpu").load(src).predict(dev_enc)
    nodes = quantizable_nodes(forced_job)
    assert any("Attention" in n for n in nodes) and any(n.endswith("MatMul") for n in nodes)
    rows = sensitivity(forced_job, dev_enc, fp32, tmp_path)
    assert [r["node"] for r in rows] != [] and sorted(r["node"] for r in rows) == sorted(nodes)
    mse = [r["logit_mse"] for r in rows]
    assert mse == sorted(mse, reverse=True) and mse[0] > 0


def test_repair_keeps_the_most_sensitive_nodes_in_fp32_in_qdq(forced_job, dev_enc, exported, tmp_path):
    src, _ = exported
    fp32 = get_runtime("ort-cpu").load(src).predict(dev_enc)
    wrong = np.roll(fp32, 1, axis=1)  # pretend the quantized model flipped every prediction
    report = repair(forced_job, dev_enc, fp32, wrong, tmp_path)
    assert report["initial_dev_drop_points"] > 0 and "sensitivity" in report
    assert 1 <= len(report["tries"]) - 1 <= 3
    assert report["met"] == (report["final_dev_drop_points"] <= 0.0)
    top = report["sensitivity"][0]["node"]
    assert report["fallback"] == "fp32"  # a Q/DQ graph (TensorRT's form) falls back to fp32
    if report["fallback_nodes"]:
        assert report["fallback_nodes"][0] == top and top in forced_job.exclude_nodes
    assert forced_job.output.is_file()


def test_static_qoperator_repair_falls_back_to_dynamic_int8(exported, dev_enc, train_enc, tmp_path):
    src, _ = exported
    shaped = with_inferred_shapes(src / ONNX_FILE, tmp_path / "shaped.onnx")
    cfg = OnnxQuantizeConfig(mode="static", activation_type="int8", activation_symmetric=True,
                             tolerance=0.0, max_fallback_nodes=2)
    assert cfg.fallback_precision() == "dynamic"
    cache = calibrate(shaped, train_enc, "minmax", tmp_path / "cal.json")
    (tmp_path / "out").mkdir()
    job = QuantJob(shaped, tmp_path / "out" / ONNX_FILE, cfg, cfg.int8_formats(), cache)
    fp32 = get_runtime("ort-cpu").load(src).predict(dev_enc)
    wrong = np.roll(fp32, 1, axis=1)  # pretend every prediction flipped, so the repair must act
    report = repair(job, dev_enc, fp32, wrong, tmp_path)
    assert report["fallback"] == "dynamic" and report["fallback_nodes"]
    op_type = {n.name: n.op_type for n in onnx.load(str(shaped)).graph.node}
    for node in report["fallback_nodes"]:  # ORT has no dynamic Gemm: those stay fp32
        assert node in (job.exclude_nodes if op_type[node] == "Gemm" else job.dynamic_nodes)
    assert report["fp32_nodes"] == job.exclude_nodes


def test_dynamic_nodes_of_a_static_graph_run_dynamic_int8(exported, dev_enc, train_enc, tmp_path):
    src, _ = exported
    shaped = with_inferred_shapes(src / ONNX_FILE, tmp_path / "shaped.onnx")
    cfg = OnnxQuantizeConfig(mode="static")
    cache = calibrate(shaped, train_enc, "minmax", tmp_path / "cal.json")
    matmul = next(n.name for n in onnx.load(str(shaped)).graph.node if n.op_type == "MatMul")
    (tmp_path / "out").mkdir()
    job = QuantJob(shaped, tmp_path / "out" / ONNX_FILE, cfg, cfg.int8_formats(), cache,
                   dynamic_nodes=[matmul])
    run_job(job)
    ops = _ops(tmp_path / "out")
    # that one matmul dynamic (integer matmul on per-run scales), the others static, attention dynamic
    assert {"QLinearMatMul", "QAttention"} <= ops and "MatMul" not in ops
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}


def test_repair_is_skipped_when_within_tolerance(forced_job, dev_enc, exported, tmp_path):
    src, _ = exported
    fp32 = get_runtime("ort-cpu").load(src).predict(dev_enc)
    job = dataclasses.replace(forced_job, cfg=dataclasses.replace(forced_job.cfg, tolerance=1.0))
    report = repair(job, dev_enc, fp32, fp32, tmp_path)
    assert report["met"] and "sensitivity" not in report and report["fallback_nodes"] == []


def test_ort_type_names_are_accepted():
    cfg = OnnxQuantizeConfig(weight_type="qint8", activation_type="quint8")
    assert (cfg.weight_type, cfg.activation_type) == ("int8", "uint8")


def _loaded_ops(path, tmp_path, **session_kwargs):
    """The op types ONNX Runtime runs after its default load-time fusions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], **session_kwargs)
    return [n.op_type for n in onnx.load(str(tmp_path / "loaded.onnx")).graph.node]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_files_keep_add_and_layernorm_apart_in_every_loader(exported, dev_enc, train_enc, tmp_path,
                                                                  mode):
    import onnxruntime as ort

    src, _ = exported
    (tmp_path / "apart").mkdir()
    (tmp_path / "fusable").mkdir()
    # one scheme for both files (a measured choice may differ between two runs: timing)
    apart_cfg = OnnxQuantizeConfig(mode=mode, schemes="table")
    quantize_onnx(src, tmp_path / "apart", apart_cfg, dev_enc, train_enc)
    fusable_cfg = OnnxQuantizeConfig(mode=mode, schemes="table", skip_layernorm_fusion=True)
    quantize_onnx(src, tmp_path / "fusable", fusable_cfg, dev_enc, train_enc)
    apart = _loaded_ops(tmp_path / "apart" / ONNX_FILE, tmp_path)
    fusable = _loaded_ops(tmp_path / "fusable" / ONNX_FILE, tmp_path)
    assert "SkipLayerNormalization" in fusable  # what ORT does to the file left as it was
    assert "SkipLayerNormalization" not in apart and "LayerNormalization" in apart
    # a plain default session on the rewritten file runs what ORT runs with the fusion disabled
    off = _loaded_ops(tmp_path / "fusable" / ONNX_FILE, tmp_path, disabled_optimizers=["SkipLayerNormFusion"])
    assert sorted(apart) == sorted(off)
    _, feed = next(iter(iterate_batches(dev_enc, 8)))
    plain = ort.InferenceSession(str(tmp_path / "apart" / ONNX_FILE), providers=["CPUExecutionProvider"])
    unfused = ort.InferenceSession(str(tmp_path / "fusable" / ONNX_FILE), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=["SkipLayerNormFusion"])
    names = [i.name for i in plain.get_inputs()]
    feed = {n: np.asarray(feed[n], dtype=np.int64) for n in names}
    np.testing.assert_array_equal(plain.run(None, feed)[0], unfused.run(None, feed)[0])
