"""FP8 (E4M3) and INT8 post-training quantization of an exported ONNX graph by Q/DQ insertion.

For every Linear layer selected by `QuantConfig.include` / `exclude` (module names, see
`DIT_QUANTIZED_LINEARS`) the pass rewrites

    x -> MatMul(x, Transpose(W))             (how torch exports nn.Linear, W [out, in])

into

    x [-> Mul(1/s)] -> QuantizeLinear(a_scale, zp) -> DequantizeLinear(a_scale, zp) -> MatMul
    W_q [in, out] (fp8/int8 initializer) -> DequantizeLinear(w_scale [out], zp, axis=1) -> MatMul

- weights: per-output-channel scales amax_c / qmax, stored quantized (half/quarter size);
- activations: one scale per tensor, amax from calibration / qmax;
- INT8 applies SmoothQuant first: s_j = amax_x[j]^alpha / amax_w[j]^(1-alpha) per input
  channel, x / s and W * s (same product), which moves activation outliers into the weights;
  layers reading the same tensor (q/k/v) share one s and one activation Q/DQ;
- only standard QuantizeLinear / DequantizeLinear of the default domain, and ALWAYS with an
  explicit zero point: onnxruntime mis-computes an FP8 DequantizeLinear without one when it
  feeds a MatMul+Add (measured, FACTS.md), and TensorRT wants the zero point anyway.

Everything not selected (norms, modulation, embeddings, heads, softmax and the attention
itself) is left untouched and runs in the graph's own float type. TensorRT builds such a
graph strongly typed and runs the selected GEMMs in fp8/int8.
"""
from __future__ import annotations

import fnmatch
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .config import Precision, QuantConfig

logger = logging.getLogger(__name__)

FP8_E4M3_MAX = 448.0
INT8_MAX = 127.0
MIN_OPSET = {Precision.FP8: 19, Precision.INT8: 13}  # FP8 Q/DQ exist from opset 19
_TINY = 1e-12  # floor for amax so an all-zero channel gets a finite scale
# onnxruntime (1.32) rewrite rules that are wrong for these graphs. ReluQuantRewrite deletes
# a Relu feeding a QuantizeLinear whose zero point is 0, which is only right for uint8: with
# an FP8 zero point of 0 the negative values then pass through (measured: 57% output error
# on a Relu FFN). Every onnxruntime session over a Q/DQ graph must disable it.
ORT_DISABLED_OPTIMIZERS = ("ReluQuantRewrite",)


@dataclass(frozen=True)
class LinearSite:
    """One quantizable Linear in the graph."""

    module: str  # e.g. "blocks.0.self_attn.q"
    matmul: str  # MatMul node name
    activation: str  # the MatMul's input tensor
    weight: str  # the weight initializer name
    transposed: bool  # weight stored [out, in] and fed through a Transpose (torch export)


def qmax(precision: Precision) -> float:
    return FP8_E4M3_MAX if precision is Precision.FP8 else INT8_MAX


def module_name(weight_name: str) -> str:
    return weight_name[: -len(".weight")] if weight_name.endswith(".weight") else weight_name


def find_linear_sites(model: onnx.ModelProto, quant: QuantConfig) -> list[LinearSite]:
    """The MatMuls whose constant weight belongs to a module selected by the config."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    sites = []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        act, b = node.input
        producer = producers.get(b)
        if producer is not None and producer.op_type == "Transpose" and producer.input[0] in inits:
            weight, transposed = producer.input[0], True
            perm = [a.ints for a in producer.attribute if a.name == "perm"]
            if perm and list(perm[0]) != [1, 0]:
                continue
        elif b in inits:
            weight, transposed = b, False
        else:
            continue  # activation x activation (attention) stays high precision
        name = _matching_name(module_name(weight), quant.include)
        if name is None or any(fnmatch.fnmatchcase(name, p) for p in quant.exclude):
            continue
        sites.append(LinearSite(name, node.name, act, weight, transposed))
    return sites


def _matching_name(name: str, patterns) -> Optional[str]:
    """`name` or its shortest-prefix-stripped suffix that a pattern matches: an export
    wrapper may prefix the state-dict names (e.g. "dit.blocks.0.ffn.0")."""
    parts = name.split(".")
    for i in range(len(parts)):
        candidate = ".".join(parts[i:])
        if any(fnmatch.fnmatchcase(candidate, p) for p in patterns):
            return candidate
    return None


# -- calibration -------------------------------------------------------------------------
def collect_amax(
    model: onnx.ModelProto, tensors: Iterable[str], feeds: Iterable[Mapping[str, np.ndarray]],
    providers: Optional[list] = None,
) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |x| of graph tensors over calibration feeds, via onnxruntime."""
    import onnxruntime as ort

    tensors = list(dict.fromkeys(tensors))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for t in tensors:
        if t not in existing:
            probe.graph.output.append(helper.make_empty_tensor_value_info(t))
    session = ort.InferenceSession(
        probe.SerializeToString(), providers=providers or ["CPUExecutionProvider"],
        disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
    )
    amax: dict[str, np.ndarray] = {}
    seen = 0
    for feed in feeds:
        values = session.run(tensors, dict(feed))
        for name, v in zip(tensors, values):
            m = np.abs(v.astype(np.float32)).reshape(-1, v.shape[-1]).max(axis=0)
            amax[name] = m if name not in amax else np.maximum(amax[name], m)
        seen += 1
    if not seen:
        raise ValueError("calibration needs at least one input sample")
    logger.info("calibrated %d activation tensors on %d samples", len(tensors), seen)
    return amax


# -- the pass ------------------------------------------------------------------------------
def quantize_model(
    model: onnx.ModelProto, quant: QuantConfig, activation_amax: Mapping[str, np.ndarray]
) -> onnx.ModelProto:
    """A copy of `model` with Q/DQ around the selected Linears (see module docstring).

    activation_amax: per-channel amax of each site's input tensor (collect_amax); the
    per-tensor activation scale is derived from it after smoothing.
    """
    precision = quant.precision
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET[precision]:
        raise ValueError(f"{precision.value} Q/DQ needs opset >= {MIN_OPSET[precision]}, the graph has {opset}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    sites = find_linear_sites(out, quant)
    if not sites:
        raise ValueError(f"no Linear layer of the graph matches {quant.include}")
    missing = sorted({s.activation for s in sites} - set(activation_amax))
    if missing:
        raise ValueError(f"no calibration amax for activation tensors {missing[:5]}")

    inits = {i.name: i for i in graph.initializer}
    weights = {s.weight: _weight_out_in(inits[s.weight], s.transposed) for s in sites}
    float_type = inits[sites[0].weight].data_type
    q_type = TensorProto.FLOAT8E4M3FN if precision is Precision.FP8 else TensorProto.INT8
    bound = qmax(precision)

    by_activation: dict[str, list[LinearSite]] = defaultdict(list)
    for s in sites:
        by_activation[s.activation].append(s)

    new_inits: list[TensorProto] = []
    new_nodes_before: dict[str, list[onnx.NodeProto]] = defaultdict(list)  # MatMul name -> nodes
    rewired: dict[str, tuple[str, str]] = {}  # MatMul name -> (activation input, weight input)
    for act, group in by_activation.items():
        x_amax = np.maximum(np.asarray(activation_amax[act], dtype=np.float64), _TINY)
        smooth = None
        if quant.smoothquant_alpha is not None:
            w_amax = np.max([np.abs(weights[s.weight]).max(axis=0) for s in group], axis=0)
            smooth = _smoothing(x_amax, w_amax, quant.smoothquant_alpha)
            x_amax = x_amax / smooth
        a_scale = float(x_amax.max()) * quant.amax_margin / bound
        tag = _safe(group[0].module) + "_input"
        first = group[0].matmul
        x = act
        if smooth is not None:
            new_inits.append(_float_tensor(f"{tag}_smooth_inv", 1.0 / smooth, float_type))
            new_nodes_before[first].append(
                helper.make_node("Mul", [act, f"{tag}_smooth_inv"], [f"{tag}_smoothed"], name=f"{tag}_smooth")
            )
            x = f"{tag}_smoothed"
        new_inits += [
            _float_tensor(f"{tag}_scale", np.array(a_scale), float_type),
            _zero_point(f"{tag}_zero_point", q_type, ()),
        ]
        new_nodes_before[first] += [
            helper.make_node("QuantizeLinear", [x, f"{tag}_scale", f"{tag}_zero_point"], [f"{tag}_q"], name=f"{tag}_quantize"),
            helper.make_node("DequantizeLinear", [f"{tag}_q", f"{tag}_scale", f"{tag}_zero_point"], [f"{tag}_dq"], name=f"{tag}_dequantize"),
        ]
        for s in group:
            w = weights[s.weight] * smooth[None, :] if smooth is not None else weights[s.weight]
            w_in_out = np.ascontiguousarray(w.T)  # MatMul wants [in, out]; channel axis 1
            w_amax = np.maximum(np.abs(w_in_out).max(axis=0), _TINY)
            w_scale = w_amax / bound
            wtag = s.module
            new_inits += [
                _quantized_tensor(f"{wtag}.weight_quantized", w_in_out / w_scale[None, :], precision),
                _float_tensor(f"{wtag}.weight_scale", w_scale, float_type),
                _zero_point(f"{wtag}.weight_zero_point", q_type, (w_scale.size,)),
            ]
            new_nodes_before[s.matmul].append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{wtag}.weight_quantized", f"{wtag}.weight_scale", f"{wtag}.weight_zero_point"],
                    [f"{wtag}.weight_dq"], name=f"{_safe(wtag)}_weight_dequantize", axis=1,
                )
            )
            rewired[s.matmul] = (f"{tag}_dq", f"{wtag}.weight_dq")

    nodes = []
    for node in graph.node:
        nodes += new_nodes_before.get(node.name, [])
        if node.name in rewired:
            node.input[0], node.input[1] = rewired[node.name]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    _drop_replaced(graph, {s.weight for s in sites})
    logger.info("quantized %d Linear layers to %s (%d activation Q/DQ)", len(sites), precision.value, len(by_activation))
    return out


def _smoothing(x_amax: np.ndarray, w_amax: np.ndarray, alpha: float) -> np.ndarray:
    s = np.power(x_amax, alpha) / np.power(np.maximum(w_amax, _TINY), 1.0 - alpha)
    return np.clip(s, 1e-5, 1e5)


def _weight_out_in(init: TensorProto, transposed: bool) -> np.ndarray:
    w = numpy_helper.to_array(init).astype(np.float64)
    if w.ndim != 2:
        raise ValueError(f"weight {init.name} is not 2-D: {w.shape}")
    return w if transposed else w.T


def _float_tensor(name: str, value: np.ndarray, float_type: int) -> TensorProto:
    np_type = helper.tensor_dtype_to_np_dtype(float_type)
    if float_type == TensorProto.BFLOAT16:
        import torch

        bits = torch.from_numpy(np.asarray(value, np.float32)).to(torch.bfloat16).view(torch.int16).numpy()
        t = helper.make_tensor(name, float_type, bits.shape, bits.tobytes(), raw=True)
        return t
    return numpy_helper.from_array(np.asarray(value).astype(np_type), name)


def _zero_point(name: str, q_type: int, shape: tuple) -> TensorProto:
    n = int(np.prod(shape)) if shape else 1
    return helper.make_tensor(name, q_type, list(shape), bytes(n), raw=True)


def _quantized_tensor(name: str, scaled: np.ndarray, precision: Precision) -> TensorProto:
    if precision is Precision.INT8:
        q = np.clip(np.rint(scaled), -128, 127).astype(np.int8)  # rint: half to even, like QuantizeLinear
        return numpy_helper.from_array(q, name)
    import torch

    clipped = np.clip(scaled, -FP8_E4M3_MAX, FP8_E4M3_MAX).astype(np.float32)
    bits = torch.from_numpy(clipped).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    return helper.make_tensor(name, TensorProto.FLOAT8E4M3FN, list(bits.shape), bits.tobytes(), raw=True)


def _drop_replaced(graph: onnx.GraphProto, weights: set[str]) -> None:
    """Remove the float weights the pass replaced, and their Transposes, once nothing reads them."""
    def used() -> set[str]:
        return {i for n in graph.node for i in n.input} | {o.name for o in graph.output}

    reads = used()
    dead = [n for n in graph.node if n.op_type == "Transpose" and n.input[0] in weights
            and not any(o in reads for o in n.output)]
    for n in dead:
        graph.node.remove(n)
    reads = used()
    keep = [i for i in graph.initializer if i.name not in weights or i.name in reads]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _safe(name: str) -> str:
    return name.replace(".", "_")


def fake_quantize_reference(x: np.ndarray, scale, precision: Precision, axis: Optional[int] = None) -> np.ndarray:
    """numpy quantize -> dequantize, the oracle the tests compare onnxruntime against."""
    scale = np.asarray(scale, dtype=np.float32)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    scaled = x.astype(np.float32) / scale
    if precision is Precision.INT8:
        return np.clip(np.rint(scaled), -128, 127).astype(np.float32) * scale
    import torch

    q = torch.from_numpy(np.clip(scaled, -FP8_E4M3_MAX, FP8_E4M3_MAX)).to(torch.float8_e4m3fn).float().numpy()
    return q * scale
