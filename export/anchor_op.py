"""The anchor attention as one ONNX node, `sama_rt::AnchorAttention`, with its reference math.

Contract (the same as the Triton kernel `sama_rt.kernels.anchor_attention`):

    inputs   q, k, v   [B, L, num_heads, head_dim]  (q, k not yet rotated), L = 2N + num_anchor
             cos, sin  [N, head_dim/2] float32      (video RoPE tables, `rope_tables`)
    output   out       [B, L, num_heads, head_dim]  in v's type
    attrs    num_anchor, num_heads, head_dim (ints), scale (float),
             plugin_namespace = "sama_rt", plugin_version = "1" (strings)

The sequence is [source N | anchors A | target N]; source and target share the table rows,
anchor rows are rotated by the complex number 0 (their q and k become zero).

Three pieces make the node work everywhere:

- a torch op `sama_rt_export::anchor_attention` that the export wrappers call, so that
  torch.export keeps the attention as one opaque call (its eager body is the reference math);
- a translation into the ONNX node (`TRANSLATION_TABLE`), with the plugin attributes that
  TensorRT's ONNX parser uses to find our plugin (it dispatches on op_type);
- a model-local ONNX FunctionProto of the same domain and name (`anchor_attention_function`)
  holding the reference math in standard ops: onnxruntime runs the graph as is, and a
  TensorRT without our plugin inlines the function instead of failing.

The namespace `sama_rt_export` (not `sama_rt`) keeps this op independent of the kernel's own
`sama_rt::anchor_attention` registration: exporting needs neither Triton nor a GPU.
"""
from __future__ import annotations

import onnx
import torch
from onnx import TensorProto, helper

from ..models.rope import apply_rope, sequence_rope_tables

DOMAIN = "sama_rt"
OP_TYPE = "AnchorAttention"
DOMAIN_VERSION = 1
PLUGIN_NAMESPACE = "sama_rt"
PLUGIN_VERSION = "1"
# Every attribute a node may carry; the function declares all of them (ORT requires a
# node's attributes to be declared by the function it calls).
ATTRIBUTES = ("num_anchor", "num_heads", "head_dim", "scale", "plugin_namespace", "plugin_version")


# -- torch side ---------------------------------------------------------------------------
@torch.library.custom_op("sama_rt_export::anchor_attention", mutates_args=())
def anchor_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    num_anchor: int, scale: float,
) -> torch.Tensor:
    """Reference anchor attention in float32 (what the ONNX function computes)."""
    cos_l, sin_l = sequence_rope_tables(cos.float(), sin.float(), num_anchor)
    qr = apply_rope(q.float(), cos_l, sin_l).transpose(1, 2)
    kr = apply_rope(k.float(), cos_l, sin_l).transpose(1, 2)
    logits = torch.matmul(qr, kr.transpose(-1, -2)) * scale
    out = torch.matmul(logits.softmax(dim=-1), v.float().transpose(1, 2))
    return out.transpose(1, 2).to(v.dtype)


@anchor_attention_op.register_fake
def _anchor_attention_fake(q, k, v, cos, sin, num_anchor, scale):
    return torch.empty_like(v)


# -- ONNX node ----------------------------------------------------------------------------
def _register_schema() -> None:
    """Declare the op to onnx so the exporter can emit it and the checker can type it."""
    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    S = onnx.defs.OpSchema
    attr_types = {
        "num_anchor": S.AttrType.INT, "num_heads": S.AttrType.INT, "head_dim": S.AttrType.INT,
        "scale": S.AttrType.FLOAT, "plugin_namespace": S.AttrType.STRING, "plugin_version": S.AttrType.STRING,
    }
    schema = S(
        OP_TYPE, DOMAIN, DOMAIN_VERSION,
        doc=__doc__.split("\n\n")[1],
        inputs=[S.FormalParameter(n, "T") for n in ("q", "k", "v")]
        + [S.FormalParameter(n, "F") for n in ("cos", "sin")],
        outputs=[S.FormalParameter("out", "T")],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "activations"),
            ("F", ["tensor(float)"], "RoPE tables"),
        ],
        attributes=[S.Attribute(name, attr_types[name], "", required=False) for name in ATTRIBUTES],
    )
    onnx.defs.register_schema(schema)


_register_schema()


def _translate(q, k, v, cos, sin, num_anchor: int, scale: float):
    import onnxscript

    opset = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)
    heads, head_dim = q.shape[2], q.shape[3]
    return opset.AnchorAttention(
        q, k, v, cos, sin,
        num_anchor=num_anchor, num_heads=int(heads), head_dim=int(head_dim), scale=scale,
        plugin_namespace=PLUGIN_NAMESPACE, plugin_version=PLUGIN_VERSION,
    )


TRANSLATION_TABLE = {torch.ops.sama_rt_export.anchor_attention.default: _translate}


def anchor_attention_function(opset: int) -> onnx.FunctionProto:
    """The reference math of `AnchorAttention` as an ONNX function in standard ops.

    Rotation as in `apply_rope` (pairs of adjacent channels), anchor rows of the tables
    zero, then softmax(q k^T * scale) v, all in float32; the result is cast back to v's type.
    The anchor count is read from the shapes (L - 2N) so the body needs no integer
    attribute; `scale` comes from the node's attribute.
    """
    nodes = []

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    def const(name, values, dtype=TensorProto.INT64):
        return node("Constant", [], [name], value=helper.make_tensor(name, dtype, [len(values)], values))

    const("axis0", [0])
    const("two", [2])
    const("pairs_shape", [0, 0, 0, -1, 2])
    const("merged_shape", [0, 0, 0, -1])
    const("table_axes", [0, 2])
    const("last_axis", [4])
    node("Constant", [], ["index0"], value=helper.make_tensor("index0", TensorProto.INT64, [], [0]))
    node("Constant", [], ["index1"], value=helper.make_tensor("index1", TensorProto.INT64, [], [1]))
    scale = helper.make_node("Constant", [], ["scale_value"])
    scale.attribute.append(
        onnx.AttributeProto(name="value_float", type=onnx.AttributeProto.FLOAT, ref_attr_name="scale")
    )
    nodes.append(scale)

    # Tables for the whole sequence: [cos | zeros(A) | cos], A = L - 2N.
    node("Shape", ["q"], ["seq_len"], start=1, end=2)
    node("Shape", ["cos"], ["num_video"], start=0, end=1)
    node("Shape", ["cos"], ["half_dim"], start=1, end=2)
    node("Mul", ["num_video", "two"], ["video_rows"])
    node("Sub", ["seq_len", "video_rows"], ["num_anchor_rows"])
    node("Concat", ["num_anchor_rows", "half_dim"], ["anchor_table_shape"], axis=0)
    node("ConstantOfShape", ["anchor_table_shape"], ["anchor_rows"],
         value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    for table in ("cos", "sin"):
        node("Concat", [table, "anchor_rows", table], [f"{table}_seq"], axis=0)
        node("Unsqueeze", [f"{table}_seq", "table_axes"], [f"{table}_b"])  # [1, L, 1, D/2]

    def rotate(x: str) -> str:
        node("Cast", [x], [f"{x}_f32"], to=TensorProto.FLOAT)
        node("Reshape", [f"{x}_f32", "pairs_shape"], [f"{x}_pairs"])  # [B, L, H, D/2, 2]
        even = node("Gather", [f"{x}_pairs", "index0"], [f"{x}_even"], axis=4)
        odd = node("Gather", [f"{x}_pairs", "index1"], [f"{x}_odd"], axis=4)
        node("Mul", [even, "cos_b"], [f"{x}_ec"])
        node("Mul", [odd, "sin_b"], [f"{x}_os"])
        node("Mul", [even, "sin_b"], [f"{x}_es"])
        node("Mul", [odd, "cos_b"], [f"{x}_oc"])
        node("Sub", [f"{x}_ec", f"{x}_os"], [f"{x}_r0"])
        node("Add", [f"{x}_es", f"{x}_oc"], [f"{x}_r1"])
        node("Unsqueeze", [f"{x}_r0", "last_axis"], [f"{x}_r0u"])
        node("Unsqueeze", [f"{x}_r1", "last_axis"], [f"{x}_r1u"])
        node("Concat", [f"{x}_r0u", f"{x}_r1u"], [f"{x}_rpairs"], axis=4)
        return node("Reshape", [f"{x}_rpairs", "merged_shape"], [f"{x}_rot"])

    q_rot, k_rot = rotate("q"), rotate("k")
    node("Cast", ["v"], ["v_f32"], to=TensorProto.FLOAT)
    node("Transpose", [q_rot], ["q_bhld"], perm=[0, 2, 1, 3])
    node("Transpose", [k_rot], ["k_bhdl"], perm=[0, 2, 3, 1])
    node("Transpose", ["v_f32"], ["v_bhld"], perm=[0, 2, 1, 3])
    node("MatMul", ["q_bhld", "k_bhdl"], ["qk"])
    node("Mul", ["qk", "scale_value"], ["logits"])
    node("Softmax", ["logits"], ["probs"], axis=-1)
    node("MatMul", ["probs", "v_bhld"], ["o_bhld"])
    node("Transpose", ["o_bhld"], ["o_f32"], perm=[0, 2, 1, 3])
    node("CastLike", ["o_f32", "v"], ["out"])
    return helper.make_function(
        DOMAIN, OP_TYPE, ["q", "k", "v", "cos", "sin"], ["out"], nodes,
        opset_imports=[helper.make_opsetid("", opset)], attributes=list(ATTRIBUTES),
    )


def add_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """Attach the reference function to a model that uses `AnchorAttention` (in place)."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if not any(f.domain == DOMAIN and f.name == OP_TYPE for f in model.functions):
        model.functions.append(anchor_attention_function(opset))
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    return model


def uses_anchor_node(model: onnx.ModelProto) -> bool:
    return any(n.op_type == OP_TYPE and n.domain == DOMAIN for n in model.graph.node)
