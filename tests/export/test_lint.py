"""The TensorRT-compatibility lint finds what TensorRT's parser would reject."""
from onnx import TensorProto, helper

from sama_rt.export.lint import lint_model


def _model(nodes, inputs, outputs, initializers=(), opset=20):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, dtype=TensorProto.FLOAT, shape=("N",)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def test_clean_graph_passes():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    report = lint_model(m, "clean")
    assert report.ok, report.errors
    assert report.op_counts == {"Relu": 1}


def test_float64_and_unsupported_ops_are_errors():
    m = _model(
        [helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
         helper.make_node("Cast", ["d"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Unique", ["f"], ["y"])],
        [_vi("x")], [_vi("y")],
    )
    report = lint_model(m, "bad")
    text = "\n".join(report.errors)
    assert "float64" in text and "Unique" in text
    assert not report.ok


def test_computed_axes_and_foreign_ops_are_errors():
    m = _model(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Unsqueeze", ["x", "s"], ["y"]),
         helper.make_node("Mystery", ["y"], ["z"], domain="elsewhere")],
        [_vi("x")], [_vi("z")],
    )
    m.opset_import.append(helper.make_opsetid("elsewhere", 1))
    errors = "\n".join(lint_model(m, "axes").errors)
    assert "must be a constant" in errors and "without a local function" in errors


def test_opset_outside_tensorrt_range():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=23)
    assert any("opset 23" in e for e in lint_model(m).errors)
