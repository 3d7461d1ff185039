"""Small ONNX graphs shaped like the exported DiT (torch's Linear export: Transpose(W) -> MatMul -> Add)."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    def __init__(self, seed=0):
        self.nodes, self.inits = [], []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def tmp(self, stem):
        self.n += 1
        return f"{stem}_{self.n}"

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op, inputs, **attrs):
        out = self.tmp(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.tmp(op), **attrs))
        return out

    def linear(self, x, module, d_in, d_out, weight_scale=None):
        w = self.rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)
        if weight_scale is not None:
            w = w * weight_scale
        self.const(f"{module}.weight", w)
        self.const(f"{module}.bias", 0.1 * self.rng.standard_normal(d_out))
        wt = self.node("Transpose", [f"{module}.weight"], perm=[1, 0])
        return self.node("Add", [self.node("MatMul", [x, wt]), f"{module}.bias"])

    def const_i64(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.int64), name))
        return name

    def model(self, inputs, outputs, opset=20):
        graph = helper.make_graph(
            self.nodes, "g",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            self.inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def dit_like_block(dim=32, ffn=64, seq=10, opset=19, seed=0) -> onnx.ModelProto:
    """x [1, seq, dim] -> one attention + FFN block with a time embedding and a head.

    Module names follow the DiT: time_embedding.0, blocks.0.self_attn.{q,k,v,o},
    blocks.0.cross_attn.k (context path, stays high precision), blocks.0.ffn.{0,2}, head.head.
    """
    b = GraphBuilder(seed)
    t = b.linear("t", "time_embedding.0", dim, dim)
    x = b.node("Add", ["x", t])
    h = b.node("LayerNormalization", [x, b.const("ln_scale", np.ones(dim)), b.const("ln_bias", np.zeros(dim))], axis=-1)
    q = b.linear(h, "blocks.0.self_attn.q", dim, dim)
    k = b.linear(h, "blocks.0.self_attn.k", dim, dim)
    v = b.linear(h, "blocks.0.self_attn.v", dim, dim)
    ck = b.linear("context", "blocks.0.cross_attn.k", dim, dim)
    kt = b.node("Transpose", [k], perm=[0, 2, 1])
    logits = b.node("Mul", [b.node("MatMul", [q, kt]), b.const("scale", np.array(dim ** -0.5))])
    attn = b.node("MatMul", [b.node("Softmax", [logits], axis=-1), v])
    x = b.node("Add", [x, b.linear(attn, "blocks.0.self_attn.o", dim, dim)])
    x = b.node("Add", [x, b.node("ReduceMean", [ck, b.const_i64("axes", [1])], keepdims=1)])
    f = b.linear(b.node("Relu", [b.linear(x, "blocks.0.ffn.0", dim, ffn)]), "blocks.0.ffn.2", ffn, dim)
    x = b.node("Add", [x, f])
    out = b.linear(x, "head.head", dim, 8)
    b.nodes.append(helper.make_node("Identity", [out], ["out"], name="out_identity"))
    return b.model([("x", [1, seq, dim]), ("t", [1, 1, dim]), ("context", [1, 7, dim])], [("out", [1, seq, 8])], opset)


def dit_like_feeds(n=3, dim=32, seq=10, seed=1, outlier_channel=None):
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        x = rng.standard_normal((1, seq, dim)).astype(np.float32)
        if outlier_channel is not None:
            x[..., outlier_channel] *= 50.0
        feeds.append({
            "x": x,
            "t": rng.standard_normal((1, 1, dim)).astype(np.float32),
            "context": rng.standard_normal((1, 7, dim)).astype(np.float32),
        })
    return feeds
