"""The AnchorAttention node: its ONNX reference function, the torch op and the model agree."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from sama_rt.export import anchor_op
from sama_rt.models.attention import AttentionBackend, anchor_self_attention
from sama_rt.models.rope import rope_tables

ort = pytest.importorskip("onnxruntime")

# Float32 against float32 with the same math in a different op order (ORT's MatMul and
# Softmax vs torch's): ~3e-7 observed on values of magnitude ~1; 1e-5 leaves margin and
# still catches any real mistake (a wrong pair rotation or anchor row gives > 1e-1).
ATOL = 1e-5


def _single_node_model(num_anchor: int, heads: int, head_dim: int, opset: int = 20) -> onnx.ModelProto:
    node = helper.make_node(
        anchor_op.OP_TYPE, ["q", "k", "v", "cos", "sin"], ["out"], domain=anchor_op.DOMAIN,
        num_anchor=num_anchor, num_heads=heads, head_dim=head_dim, scale=head_dim ** -0.5,
        plugin_namespace="sama_rt", plugin_version="1",
    )
    qkv = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", "L", heads, head_dim]) for n in "qkv"]
    tables = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", head_dim // 2]) for n in ("cos", "sin")]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "L", heads, head_dim])
    graph = helper.make_graph([node], "anchor", qkv + tables, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return anchor_op.add_function(model)


@pytest.mark.parametrize("grid,num_anchor,batch", [((2, 2, 3), 5, 2), ((1, 3, 2), 0, 1)])
def test_function_matches_model_attention(grid, num_anchor, batch):
    heads, head_dim = 2, 48
    cos, sin = rope_tables(*grid, head_dim)
    length = 2 * cos.shape[0] + num_anchor
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, length, heads, head_dim, generator=gen) for _ in range(3))
    model = _single_node_model(num_anchor, heads, head_dim)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "cos": cos.numpy(), "sin": sin.numpy()})[0]
    want = anchor_self_attention(q, k, v, cos, sin, num_anchor, AttentionBackend.REFERENCE)
    np.testing.assert_allclose(got, want.numpy(), atol=ATOL, rtol=0)
    op = anchor_op.anchor_attention_op(q, k, v, cos, sin, num_anchor, head_dim ** -0.5)
    torch.testing.assert_close(op, want, atol=ATOL, rtol=0)


def test_node_attributes_and_function_declaration():
    model = _single_node_model(65, 40, 128)
    node = model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_namespace"] == b"sama_rt" and attrs["plugin_version"] == b"1"
    assert attrs["num_anchor"] == 65 and attrs["num_heads"] == 40 and attrs["head_dim"] == 128
    (fn,) = model.functions
    assert (fn.domain, fn.name) == (anchor_op.DOMAIN, anchor_op.OP_TYPE)
    assert set(anchor_op.ATTRIBUTES) <= set(fn.attribute)
    # Only standard ops inside: a runtime without the plugin can inline it.
    assert {n.domain for n in fn.node} <= {""}
    assert any(o.domain == anchor_op.DOMAIN for o in model.opset_import)
