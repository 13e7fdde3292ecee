"""Graph-level rewrites that make the exported graph cheaper for runtimes, without changing its function.

``split_gated_linear``: FRFN computes ``gelu(x @ W + b)`` and then ``chunk(2)`` along channels, which
exports as MatMul -> Add -> Gelu -> Split: the Split copies the largest activation of the block
(2 x hidden channels). Two half-width MatMul -> Add -> Gelu chains give the same two tensors
without that copy (ONNX Runtime then fuses each Add + Gelu into BiasGelu).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _split_halves(node: onnx.NodeProto, graph_inits: dict, rank: int, width: int) -> bool:
    """Whether a Split node cuts the last axis into two equal halves."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("axis", 0) not in (rank - 1, -1) or len(node.output) != 2:
        return False
    if len(node.input) > 1 and node.input[1]:
        sizes = graph_inits.get(node.input[1])
        return sizes is not None and list(numpy_helper.to_array(sizes)) == [width // 2, width // 2]
    return attrs.get("num_outputs", 2) == 2 and width % 2 == 0


def split_gated_linear(model: onnx.ModelProto) -> int:
    """Rewrite MatMul(W[C, 2H]) -> Add(b) -> Gelu -> Split(last axis, 2) into two chains; in place.

    Returns the number of rewrites.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(graph.value_info) + list(graph.input)}
    index = {id(n): i for i, n in enumerate(graph.node)}
    replace: dict[int, list[onnx.NodeProto]] = {}
    remove: set[int] = set()
    new_inits = []
    for split in graph.node:
        chain = _gated_chain(split, producers, consumers, inits)
        if chain is None:
            continue
        matmul, add, gelu, bias_name = chain
        weight = numpy_helper.to_array(inits[matmul.input[1]])
        bias = numpy_helper.to_array(inits[bias_name])
        rank = ranks.get(split.input[0]) or ranks.get(matmul.input[0])
        if weight.ndim != 2 or bias.shape != (weight.shape[1],) or rank is None:
            continue
        if not _split_halves(split, inits, rank, weight.shape[1]):
            continue
        nodes, tensors = _two_half_chains(split, matmul, gelu, weight, bias)
        new_inits += tensors
        remove.update(index[id(n)] for n in (matmul, add, gelu))
        replace[index[id(split)]] = nodes
    if replace:
        _rewrite_nodes(graph, replace, remove, new_inits)
    return len(replace)


def _gated_chain(split, producers, consumers, inits):
    """(MatMul, Add, Gelu, bias name) feeding ``split`` with nothing else reading them, else None."""
    if split.op_type != "Split":
        return None
    gelu = producers.get(split.input[0])
    add = producers.get(gelu.input[0]) if gelu is not None and gelu.op_type == "Gelu" else None
    if add is None or add.op_type != "Add":
        return None
    bias_name = next((i for i in add.input if i in inits), None)
    other = next((i for i in add.input if i != bias_name), None)
    matmul = producers.get(other) if bias_name else None
    if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in inits:
        return None
    if any(len(consumers.get(n.output[0], [])) != 1 for n in (matmul, add, gelu)):
        return None
    return matmul, add, gelu, bias_name


def _two_half_chains(split, matmul, gelu, weight: np.ndarray, bias: np.ndarray):
    """MatMul -> Add -> Gelu per half of the weight's columns, writing the split's two outputs."""
    half = weight.shape[1] // 2
    nodes, tensors = [], []
    for part, (out_name, cols) in enumerate(zip(split.output, (slice(0, half), slice(half, None)))):
        tag = f"{matmul.name or matmul.output[0]}_half{part}"
        w_name, b_name = f"{tag}_weight", f"{tag}_bias"
        tensors += [numpy_helper.from_array(np.ascontiguousarray(weight[:, cols]), w_name),
                    numpy_helper.from_array(np.ascontiguousarray(bias[cols]), b_name)]
        nodes += [helper.make_node("MatMul", [matmul.input[0], w_name], [f"{tag}_mm"], name=f"{tag}_MatMul"),
                  helper.make_node("Add", [f"{tag}_mm", b_name], [f"{tag}_add"], name=f"{tag}_Add"),
                  helper.make_node("Gelu", [f"{tag}_add"], [out_name], name=f"{tag}_Gelu",
                                   **{a.name: helper.get_attribute_value(a) for a in gelu.attribute})]
    return nodes, tensors


def _rewrite_nodes(graph, replace: dict, remove: set, new_inits: list) -> None:
    """Put ``replace[i]`` where node i was, drop the ``remove`` indices, and drop initializers and
    value infos nothing uses any more."""
    kept = []
    for i, node in enumerate(graph.node):
        if i in replace:
            kept.extend(replace[i])
        elif i not in remove:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    used = {name for node in graph.node for name in node.input}
    produced = {name for node in graph.node for name in node.output}
    for field, keep in ((graph.initializer, used), (graph.value_info, produced)):
        for i in reversed(range(len(field))):  # by index: no copies of the (large) kept tensors
            if field[i].name not in keep:
                del field[i]


def legalize_split_for_opset17(model: onnx.ModelProto) -> int:
    """Give ``Split`` nodes explicit sizes below opset 18; in place, returns how many were changed.

    torch 2.13's exporter converts down to opset 17 but leaves ``Split(num_outputs=n)`` (an opset-18
    attribute), which the ONNX checker rejects. The sizes come from the inferred input shape.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= 18:
        return 0
    graph = model.graph
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in list(graph.value_info) + list(graph.input)}
    changed = 0
    for node in graph.node:
        if node.op_type != "Split" or node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: a for a in node.attribute}
        if "num_outputs" not in attrs:
            continue
        parts = attrs["num_outputs"].i
        axis = attrs["axis"].i if "axis" in attrs else 0
        shape = shapes.get(node.input[0])
        size = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
        if size is None:
            raise ValueError(f"Split {node.name!r} has num_outputs but no static size on axis {axis}; "
                             "export with opset >= 18")
        chunk = -(-size // parts)  # ONNX: equal chunks, the last one smaller
        sizes = np.array([chunk] * (parts - 1) + [size - chunk * (parts - 1)], dtype=np.int64)
        sizes_name = f"{node.name or node.output[0]}_split_sizes"
        graph.initializer.append(numpy_helper.from_array(sizes, sizes_name))
        node.attribute.remove(attrs["num_outputs"])
        del node.input[1:]
        node.input.append(sizes_name)
        changed += 1
    return changed
