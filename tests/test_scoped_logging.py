"""Library code leaves Polygraphy's logger as the caller set it."""

import onnx
from onnx import TensorProto, helper
from polygraphy.logger import G_LOGGER

from ast_deploy.export.cleanup import clean_graph


def test_clean_graph_does_not_change_polygraphy_severity():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = G_LOGGER.module_severity.get()
    cleaned = clean_graph(model)
    assert [n.op_type for n in cleaned.graph.node] == ["Relu"]
    assert G_LOGGER.module_severity.get() == before == G_LOGGER.INFO  # not ERROR: no global change
    onnx.checker.check_model(cleaned)
