"""Q/DQ insertion: which layers, which nodes, and onnxruntime numerics against numpy fake quantization."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from sama_rt.engines.config import Precision, QuantConfig
from sama_rt.engines.quantize import (
    FP8_E4M3_MAX, INT8_MAX, ORT_DISABLED_OPTIMIZERS, collect_amax, fake_quantize_reference,
    find_linear_sites, quantize_model,
)
from tests.engines.tiny_graphs import GraphBuilder, dit_like_block, dit_like_feeds

QUANTIZED = ["blocks.0.self_attn.q", "blocks.0.self_attn.k", "blocks.0.self_attn.v",
             "blocks.0.self_attn.o", "blocks.0.ffn.0", "blocks.0.ffn.2"]


def session(model, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    return ort.InferenceSession(model.SerializeToString(), so, disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS))


def quantized(model, quant, feeds):
    amax = collect_amax(model, [s.activation for s in find_linear_sites(model, quant)], feeds)
    return quantize_model(model, quant, amax)


def test_only_the_declared_linears_are_selected():
    sites = find_linear_sites(dit_like_block(), QuantConfig.default("fp8"))
    # time embedding, cross-attention k (context path) and the head stay high precision.
    assert [s.module for s in sites] == QUANTIZED
    sites = find_linear_sites(dit_like_block(), QuantConfig("fp8", exclude=("blocks.*.ffn.*",)))
    assert [s.module for s in sites] == QUANTIZED[:4]


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_graph_structure(precision):
    model = dit_like_block()
    q = quantized(model, QuantConfig.default(precision), dit_like_feeds(2))
    onnx.checker.check_model(q, full_check=True)
    qdq = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    # One shared activation Q/DQ for q/k/v, one each for o, ffn.0, ffn.2; one weight DQ per layer.
    assert sum(n.op_type == "QuantizeLinear" for n in qdq) == 4
    assert sum(n.op_type == "DequantizeLinear" for n in qdq) == 4 + len(QUANTIZED)
    assert all(n.domain == "" and len(n.input) == 3 for n in qdq), "standard Q/DQ with explicit zero point"
    inits = {i.name: i for i in q.graph.initializer}
    want = onnx.TensorProto.FLOAT8E4M3FN if precision == "fp8" else onnx.TensorProto.INT8
    for m in QUANTIZED:
        assert inits[f"{m}.weight_quantized"].data_type == want
        assert f"{m}.weight" not in inits  # float copy dropped
    for kept in ("head.head.weight", "time_embedding.0.weight", "blocks.0.cross_attn.k.weight", "ln_scale"):
        assert inits[kept].data_type == onnx.TensorProto.FLOAT
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("Softmax") == 1 and ops.count("LayerNormalization") == 1
    # SmoothQuant only for int8 (default alpha 0.5): one Mul per shared activation.
    smooth = [n for n in q.graph.node if n.name.endswith("_smooth")]
    assert len(smooth) == (4 if precision == "int8" else 0)


@pytest.mark.parametrize("precision", ["fp8", "int8"])
@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL])
def test_onnxruntime_matches_numpy_fake_quant(precision, level):
    b = GraphBuilder(seed=3)
    y = b.linear("x", "blocks.0.ffn.0", 16, 24)
    b.nodes.append(helper.make_node("Identity", [y], ["out"]))
    model = b.model([("x", [2, 5, 16])], [("out", [2, 5, 24])])
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    q = quantized(model, QuantConfig(precision), [{"x": x}])
    out = session(q, level).run(None, {"x": x})[0]

    p = Precision.parse(precision)
    inits = {i.name: numpy_helper.to_array(i) for i in list(model.graph.initializer) + list(q.graph.initializer)}
    w, bias = inits["blocks.0.ffn.0.weight"], inits["blocks.0.ffn.0.bias"]
    bound = FP8_E4M3_MAX if p is Precision.FP8 else INT8_MAX
    a_scale = np.abs(x).max() / bound
    w_scale = np.abs(w).max(axis=1) / bound
    np.testing.assert_allclose(inits["blocks_0_ffn_0_input_scale"], a_scale, rtol=1e-6)
    np.testing.assert_allclose(inits["blocks.0.ffn.0.weight_scale"], w_scale, rtol=1e-6)
    ref = fake_quantize_reference(x, a_scale, p) @ fake_quantize_reference(w.T, w_scale, p, axis=1) + bias
    # Same quantized values on both sides; only float32 summation order differs (16 terms).
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    # ... and quantization did something: the float model differs by about a quantization step.
    assert np.abs(out - (x @ w.T + bias)).max() > 1e-4


@pytest.mark.parametrize("precision, max_rel", [("fp8", 0.15), ("int8", 0.1)])
def test_block_error_is_bounded_by_the_quantization_step(precision, max_rel):
    # E4M3 keeps 3 mantissa bits (relative step 2^-3, rounding error <= 6.25%), int8 a step of
    # amax/127; errors of six chained GEMMs add roughly in quadrature, and the attention
    # softmax amplifies logit error a little: ~5% measured for both, bounds leave 2-3x margin.
    model = dit_like_block()
    q = quantized(model, QuantConfig.default(precision), dit_like_feeds(4))
    feed = dit_like_feeds(1, seed=9)[0]
    ref = session(model).run(None, feed)[0]
    out = session(q).run(None, feed)[0]
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert 1e-4 < rel < max_rel


def test_relu_before_fp8_quantize_needs_the_disabled_rewrite():
    """Guards the onnxruntime workaround: without it a Relu before an FP8 Q is deleted."""
    model = dit_like_block()  # its FFN uses Relu
    q = quantized(model, QuantConfig.default("fp8"), dit_like_feeds(2))
    feed = dit_like_feeds(1, seed=9)[0]
    safe = session(q).run(None, feed)[0]
    exact = session(q, ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, feed)[0]
    np.testing.assert_allclose(safe, exact, rtol=0, atol=1e-5)


def test_smoothquant_helps_int8_with_an_outlier_channel():
    b = GraphBuilder(seed=4)
    y = b.linear("x", "blocks.0.ffn.0", 32, 32)
    b.nodes.append(helper.make_node("Identity", [y], ["out"]))
    model = b.model([("x", [1, 64, 32])], [("out", [1, 64, 32])])
    rng = np.random.default_rng(0)

    def sample():
        x = rng.standard_normal((1, 64, 32)).astype(np.float32)
        x[..., 3] *= 100.0  # the activation outliers SmoothQuant exists for
        return {"x": x}

    feeds, feed = [sample() for _ in range(3)], sample()
    ref = session(model).run(None, feed)[0]

    def err(alpha):
        out = session(quantized(model, QuantConfig("int8", smoothquant_alpha=alpha), feeds)).run(None, feed)[0]
        return np.linalg.norm(out - ref) / np.linalg.norm(ref)

    # Without smoothing the 31 ordinary channels share a step sized for the outlier.
    assert err(0.5) < 0.5 * err(None)


def test_invalid_inputs():
    model = dit_like_block(opset=17)
    with pytest.raises(ValueError, match="opset >= 19"):
        quantize_model(model, QuantConfig("fp8"), {})
    with pytest.raises(ValueError, match="no calibration amax"):
        quantize_model(dit_like_block(), QuantConfig("fp8"), {})
    with pytest.raises(ValueError, match="no Linear layer"):
        quantize_model(dit_like_block(), QuantConfig("fp8", include=("nothing.*",)), {})
    with pytest.raises(ValueError, match="at least one"):
        collect_amax(dit_like_block(), ["x"], [])
