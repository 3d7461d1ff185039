"""TensorRT-compatibility lint for exported graphs, runnable where TensorRT is not.

TensorRT's ONNX parser rejects a graph for a few reasons we can see without it: an op it
does not implement, a tensor type it does not have (float64, complex), an input that it
needs as a build-time constant but that is computed, or an opset it does not know. This
module checks those on the graph and on every model-local function body (TensorRT inlines
a local function when no plugin claims the node), and reports per graph.

The op list is onnx-tensorrt's operator support matrix for TensorRT 10 (opsets 9..22),
conservatively: ops marked unsupported or "experimental" there are not listed.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

import onnx
from onnx import TensorProto

from .anchor_op import DOMAIN as PLUGIN_DOMAIN, OP_TYPE as PLUGIN_OP

MIN_OPSET, MAX_OPSET = 9, 22

TENSORRT_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Cast CastLike Ceil Celu Clip Concat Constant
ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu
Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Identity If ImageScaler InstanceNormalization
IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization
LpPool LRN LSTM MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg
NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose
Trilu Unsqueeze Upsample Where Xor
""".split())

# Types TensorRT has no use for: it would have to cast them away or refuses them.
FORBIDDEN_TYPES = {
    TensorProto.DOUBLE: "float64",
    TensorProto.COMPLEX64: "complex64",
    TensorProto.COMPLEX128: "complex128",
    TensorProto.STRING: "string",
}

# Inputs TensorRT needs as build-time constants (initializer or Constant), by op and index.
CONSTANT_INPUTS = {
    "Slice": (3,),  # axes
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "TopK": (1,),
    "CumSum": (1,),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,),
}

# Ops whose output shape depends on tensor values; TensorRT supports them only through
# data-dependent shapes (slow, and a sign the trace captured host logic).
DATA_DEPENDENT_SHAPE_OPS = {"NonZero", "NonMaxSuppression", "Unique", "Compress"}


@dataclass
class LintReport:
    graph: str
    opset: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)
    plugin_nodes: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "graph": self.graph, "ok": self.ok, "opset": self.opset, "errors": self.errors,
            "warnings": self.warnings, "op_counts": self.op_counts, "plugin_nodes": self.plugin_nodes,
        }

    def summary(self) -> str:
        state = "ok" if self.ok else f"{len(self.errors)} error(s)"
        return (
            f"{self.graph}: {state}, {len(self.warnings)} warning(s), "
            f"{sum(self.op_counts.values())} nodes, {self.plugin_nodes} plugin node(s)"
        )


def lint_model(model: Union[str, Path, onnx.ModelProto], name: Optional[str] = None) -> LintReport:
    """Lint a model (a path, loaded without its external data, or a proto)."""
    if not isinstance(model, onnx.ModelProto):
        name = name or Path(model).stem
        model = onnx.load(str(model), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = LintReport(name or model.graph.name, opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        report.errors.append(
            f"opset {opset} is outside the range TensorRT 10 parses ({MIN_OPSET}..{MAX_OPSET})"
        )
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=False)
    except Exception as e:  # inference failures are findings, not crashes
        report.warnings.append(f"shape inference failed: {e}")
        inferred = model
    functions = {(f.domain, f.name): f for f in model.functions}
    counts: Counter = Counter()
    _check_types(inferred.graph, report)
    _check_nodes(inferred.graph.node, _constant_names(inferred.graph), functions, report, counts, "graph")
    for (domain, fname), fn in functions.items():
        _check_nodes(fn.node, set(), functions, report, counts, f"function {domain}::{fname}", count=False)
    report.op_counts = dict(sorted(counts.items()))
    return report


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.initializer}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _check_types(graph: onnx.GraphProto, report: LintReport) -> None:
    def check(kind: str, name: str, elem_type: int) -> None:
        if elem_type in FORBIDDEN_TYPES:
            report.errors.append(f"{kind} {name!r} is {FORBIDDEN_TYPES[elem_type]}")

    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        check("tensor", v.name, v.type.tensor_type.elem_type)
    for init in graph.initializer:
        check("initializer", init.name, init.data_type)


def _check_nodes(nodes: Iterable[onnx.NodeProto], constants: set[str], functions, report: LintReport,
                 counts: Counter, where: str, count: bool = True) -> None:
    constants = set(constants)
    for node in nodes:
        domain = node.domain or ""
        label = f"{where}: {node.op_type} {node.name or node.output[0]!r}"
        if count:
            counts[f"{domain}::{node.op_type}" if domain else node.op_type] += 1
        if domain == PLUGIN_DOMAIN and node.op_type == PLUGIN_OP:
            report.plugin_nodes += count
            if (domain, node.op_type) not in functions:
                report.warnings.append(f"{label}: no local function; the graph needs the plugin to parse")
            attrs = {a.name: a for a in node.attribute}
            for required in ("plugin_namespace", "num_anchor", "scale"):
                if required not in attrs:
                    report.errors.append(f"{label}: missing attribute {required}")
        elif domain in ("", "ai.onnx"):
            if node.op_type not in TENSORRT_OPS:
                report.errors.append(f"{label}: op not supported by TensorRT's ONNX parser")
            if node.op_type in DATA_DEPENDENT_SHAPE_OPS:
                report.warnings.append(f"{label}: output shape depends on tensor values")
            for index in CONSTANT_INPUTS.get(node.op_type, ()):
                if index < len(node.input) and node.input[index] and node.input[index] not in constants:
                    report.errors.append(
                        f"{label}: input {index} ({node.input[index]!r}) must be a constant for TensorRT"
                    )
            if node.op_type == "Cast":
                to = next((a.i for a in node.attribute if a.name == "to"), None)
                if to in FORBIDDEN_TYPES:
                    report.errors.append(f"{label}: casts to {FORBIDDEN_TYPES[to]}")
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.type == onnx.AttributeProto.TENSOR and a.t.data_type in FORBIDDEN_TYPES:
                        report.errors.append(f"{label}: constant of type {FORBIDDEN_TYPES[a.t.data_type]}")
                constants.update(node.output)
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    _check_nodes(a.g.node, constants | _constant_names(a.g), functions, report, counts, label, count)
        elif (domain, node.op_type) in functions:
            pass  # a local function: its body is checked on its own
        else:
            report.errors.append(f"{label}: custom op of domain {domain!r} without a local function")
