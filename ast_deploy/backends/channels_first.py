"""FRFN in channels-first layout: a rewrite of an inlined graph for runtimes that pay for layout
changes (OpenVINO's CPU plugin).

The exported FRFN keeps tokens channels-last (N, H, W, C) and wraps its depth-wise convolution in
two Transposes::

    x -> MatMul W0 -> Add -> Gelu -> Transpose(0,3,1,2) -> Conv dw -> Gelu -> Transpose(0,2,3,1) -+
    x -> MatMul W1 -> Add -> Gelu ------------------------------------------------------------ Mul -> MatMul W2 -> Add

Both transposes move the widest activations of the block (the hidden width, 4x the block's), and
OpenVINO's CPU plugin turns them into a Transpose plus a Reorder each way (AST-B FP32 at 256x256:
0.8 s of its 1.9 s). Rewritten, the block runs channels-first from one Transpose of its narrow input
to one Transpose of its narrow output, its three linear layers as 1x1 convolutions (the same
arithmetic, summed in another order)::

    x -> Transpose(0,3,1,2) -> Conv1x1 W0 -> Gelu -> Conv dw -> Gelu -+
                            -> Conv1x1 W1 -> Gelu ------------------ Mul -> Conv1x1 W2 -> Transpose(0,2,3,1)

When ``x`` comes from FRFN's partial convolution (inlined: Split the channels, Transpose, 3x3 Conv on
the first part, Transpose back, Concat), that runs channels-first too: the block's input Transpose
moves before the Split, and the two Transposes around the partial Conv go (AST-B FP32: 0.95x again).

In an INT8 (Q/DQ) graph the QuantizeLinear -> DequantizeLinear pairs on the activations and weights
come along: per-tensor pairs do not care about layout, so the input's pair moves after the new
Transpose and each weight's pair quantizes the transposed weight with the same scale.

The match is exact or the block is left alone: the chain must read one ``x``, take its weights and
biases from initializers, use per-tensor Q/DQ only, and have no other reader (graph outputs count)
of any tensor it changes. FRFN's GELU must be one ``Gelu`` node (opset >= 20, the export's default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

TO_CHANNELS_FIRST = [0, 3, 1, 2]
TO_CHANNELS_LAST = [0, 2, 3, 1]


@dataclass
class _Linear:
    matmul: onnx.NodeProto
    add: onnx.NodeProto
    weight: str                # the (in, out) initializer
    bias: str                  # the (out,) initializer
    weight_qdq: tuple | None   # (Q, DQ) quantizing the weight, per tensor


@dataclass
class _Block:
    x: str                     # the block's input (channels-last), before any Q/DQ
    x_qdq: tuple | None        # (Q, DQ) between x and the first two MatMuls
    first: _Linear
    second: _Linear
    last: _Linear
    gelu0: onnx.NodeProto
    to_first: onnx.NodeProto
    dw_reader: onnx.NodeProto  # what reads to_first's output: the dw Conv, or its QuantizeLinear
    to_last: onnx.NodeProto
    mul: onnx.NodeProto
    changed: list              # tensors whose layout becomes channels-first
    pconv: tuple | None = None  # (Split, Conv) of the partial convolution that computes x, if it does


def frfn_channels_first(model: onnx.ModelProto) -> int:
    """Rewrite every FRFN of ``model`` (local functions already inlined) to run channels-first; in
    place. Returns the number of blocks rewritten."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for value in graph.output:  # a graph output is a reader too: its layout must not change
        consumers.setdefault(value.name, []).append(None)
    inits = {t.name: t for t in graph.initializer}
    blocks = [b for b in (_match(n, producers, consumers, inits) for n in graph.node) if b is not None]
    if not blocks:
        return 0
    changed: set[str] = set()
    position = {id(n): i for i, n in enumerate(graph.node)}
    new_nodes: dict[int, list] = {}  # id of a node -> what takes its place
    for block in blocks:
        new_nodes.update(_rewrite(block, inits, graph, position))
        changed.update(block.changed)
    kept = []
    for node in graph.node:
        kept.extend(new_nodes.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(_without_dead_nodes(kept, {v.name for v in graph.output}))
    used = {name for node in graph.node for name in node.input}
    for i in reversed(range(len(graph.initializer))):  # by index: no copies of the kept weights
        if graph.initializer[i].name not in used:
            del graph.initializer[i]
    for i in reversed(range(len(graph.value_info))):  # shapes that are now channels-first, or gone
        if graph.value_info[i].name in changed:
            del graph.value_info[i]
    return len(blocks)


def _without_dead_nodes(nodes: list, outputs: set) -> list:
    """``nodes`` less those nothing reads (the Q/DQ pairs the rewrite left behind), repeatedly."""
    while True:
        used = outputs | {name for node in nodes for name in node.input}
        alive = [n for n in nodes if any(o in used for o in n.output)]
        if len(alive) == len(nodes):
            return nodes
        nodes = alive


def _op(producers, name, op_type, perm=None):
    node = producers.get(name)
    if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx"):
        return None
    if perm is not None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if list(attrs.get("perm", [])) != perm:
            return None
    return node


def _per_tensor(inits, node) -> bool:
    """A Q or DQ node whose scale and zero point are scalar initializers."""
    return all(name in inits and len(inits[name].dims) == 0 for name in node.input[1:])


def _through_qdq(producers, inits, name):
    """(source, (Q, DQ)) where ``name`` = DQ(Q(source)) with per-tensor parameters, else (name, None)."""
    dq = _op(producers, name, "DequantizeLinear")
    q = _op(producers, dq.input[0], "QuantizeLinear") if dq is not None else None
    if q is None or not (_per_tensor(inits, q) and _per_tensor(inits, dq)):
        return name, None
    return q.input[0], (q, dq)


def _linear(producers, inits, name) -> _Linear | None:
    """``name`` = x @ W + b with W (2-D) and b (1-D) initializers, W maybe through a per-tensor Q/DQ."""
    add = _op(producers, name, "Add")
    if add is None:
        return None
    bias = next((i for i in add.input if i in inits and len(inits[i].dims) == 1), None)
    mm = _op(producers, next((i for i in add.input if i != bias), ""), "MatMul") if bias else None
    if mm is None:
        return None
    weight, weight_qdq = _through_qdq(producers, inits, mm.input[1])
    if weight not in inits or len(inits[weight].dims) != 2 or inits[weight].dims[1] != inits[bias].dims[0]:
        return None
    return _Linear(mm, add, weight, bias, weight_qdq)


def _match(mul, producers, consumers, inits) -> _Block | None:
    if mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or len(mul.input) != 2:
        return None

    def readers(name):
        return consumers.get(name, [])

    for gated, other in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
        to_last = _op(producers, gated, "Transpose", TO_CHANNELS_LAST)
        gelu1 = _op(producers, other, "Gelu")
        if to_last is None or gelu1 is None:
            continue
        gelu_dw = _op(producers, to_last.input[0], "Gelu")
        dwconv = _op(producers, gelu_dw.input[0], "Conv") if gelu_dw is not None else None
        dw_source, dw_qdq = _through_qdq(producers, inits, dwconv.input[0]) if dwconv is not None else ("", None)
        to_first = _op(producers, dw_source, "Transpose", TO_CHANNELS_FIRST)
        gelu0 = _op(producers, to_first.input[0], "Gelu") if to_first is not None else None
        first = _linear(producers, inits, gelu0.input[0]) if gelu0 is not None else None
        second = _linear(producers, inits, gelu1.input[0])
        after_mul = readers(mul.output[0])
        if len(after_mul) != 1 or after_mul[0] is None:
            return None
        mm2_input = mul.output[0]
        if after_mul[0].op_type == "QuantizeLinear":
            dq = readers(after_mul[0].output[0])
            if len(dq) != 1 or dq[0] is None or _through_qdq(producers, inits, dq[0].output[0])[1] is None:
                return None
            mm2_input = dq[0].output[0]
        mm2 = readers(mm2_input)
        adds = readers(mm2[0].output[0]) if len(mm2) == 1 and mm2[0] is not None else []
        last = _linear(producers, inits, adds[0].output[0]) if len(adds) == 1 and adds[0] is not None else None
        if first is None or second is None or last is None or last.matmul is not mm2[0]:
            return None
        if first.matmul.input[0] != second.matmul.input[0] or last.matmul.input[0] != mm2_input:
            return None
        x, x_qdq = _through_qdq(producers, inits, first.matmul.input[0])
        dw_pair = list(dw_qdq or ())
        mm2_pair = [after_mul[0], producers[mm2_input]] if mm2_input != mul.output[0] else []
        # everything whose layout changes must have one reader, the next node of the chain
        single = [first.matmul, first.add, gelu0, to_first, gelu_dw, dwconv, to_last, second.matmul, second.add,
                  gelu1, last.matmul] + dw_pair + mm2_pair
        if any(len(readers(n.output[0])) != 1 for n in single):
            return None
        dw_reader = readers(to_first.output[0])[0]
        changed = [n.output[0] for n in [first.matmul, first.add, gelu0, to_first, to_last, second.matmul,
                                         second.add, gelu1, mul, last.matmul] + dw_pair + mm2_pair]
        return _Block(x, x_qdq, first, second, last, gelu0, to_first, dw_reader, to_last, mul, changed,
                      _partial_conv(producers, x))
    return None


def _axis(node, default=0) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), default)


def _partial_conv(producers, x: str):
    """(Split, Conv) when ``x`` = Concat(Transpose(Conv(Transpose(Split(t)[0]))), Split(t)[1]) along
    the last axis of a 4-D ``t`` (the exported partial convolution, inlined), else None."""
    concat = _op(producers, x, "Concat")
    if concat is None or len(concat.input) != 2 or _axis(concat) not in (3, -1):
        return None
    back = _op(producers, concat.input[0], "Transpose", TO_CHANNELS_LAST)
    conv = _op(producers, back.input[0], "Conv") if back is not None else None
    into = _op(producers, conv.input[0], "Transpose", TO_CHANNELS_FIRST) if conv is not None else None
    split = _op(producers, into.input[0], "Split") if into is not None else None
    if split is None or len(split.output) != 2 or _axis(split) not in (3, -1):
        return None
    if into.input[0] != split.output[0] or concat.input[1] != split.output[1]:
        return None
    return split, conv


def _rewrite(block: _Block, inits, graph, position: dict) -> dict[int, list]:
    tag = block.mul.name or block.mul.output[0]
    x_first, y_first = f"{tag}_x_channels_first", f"{tag}_y_channels_first"
    if block.pconv is None:
        head = [helper.make_node("Transpose", [block.x], [x_first], name=f"{tag}_to_channels_first",
                                 perm=TO_CHANNELS_FIRST)]
    else:  # the partial convolution channels-first as well: one Transpose of its input, none around its Conv
        head = _partial_conv_channels_first(*block.pconv, x_first, tag)
    if block.x_qdq is not None:
        head += _requantized(block.x_qdq, x_first, f"{x_first}_q", f"{x_first}_dq")
        x_first = f"{x_first}_dq"

    def conv1x1(linear: _Linear, source: str, out: str) -> list:
        weight = f"{linear.weight}_1x1"
        if weight not in inits:
            w = numpy_helper.to_array(inits[linear.weight])
            tensor = numpy_helper.from_array(np.ascontiguousarray(w.T[:, :, None, None]), weight)
            graph.initializer.append(tensor)
            inits[weight] = tensor
        nodes = []
        if linear.weight_qdq is not None:
            nodes = _requantized(linear.weight_qdq, weight, f"{weight}_q", f"{weight}_dq")
            weight = f"{weight}_dq"
        return nodes + [helper.make_node("Conv", [source, weight, linear.bias], [out],
                                         name=f"{linear.matmul.name or out}_1x1", kernel_shape=[1, 1])]

    # the dw conv (or its QuantizeLinear) reads Gelu's output, channels-first now; so does the Mul
    reader = block.dw_reader
    reader.input[list(reader.input).index(block.to_first.output[0])] = block.gelu0.output[0]
    block.mul.input[list(block.mul.input).index(block.to_last.output[0])] = block.to_last.input[0]
    conv0 = conv1x1(block.first, x_first, block.first.add.output[0])
    conv1 = conv1x1(block.second, x_first, block.second.add.output[0])
    # each new node takes the place of one it replaces, so the graph stays in topological order
    # (the input Transpose goes before whichever of the two first linears comes first: both read x)
    if position[id(block.first.matmul)] < position[id(block.second.matmul)]:
        new = {id(block.first.matmul): head + conv0, id(block.second.matmul): conv1}
    else:
        new = {id(block.second.matmul): head + conv1, id(block.first.matmul): conv0}
    last = block.last
    new.update({id(block.first.add): [], id(block.second.add): [], id(block.to_first): [], id(block.to_last): [],
                id(last.matmul): conv1x1(last, last.matmul.input[0], y_first),
                id(last.add): [helper.make_node("Transpose", [y_first], [last.add.output[0]],
                                                name=f"{tag}_to_channels_last", perm=TO_CHANNELS_LAST)]})
    return new


def _partial_conv_channels_first(split, conv, out: str, tag: str) -> list:
    """Transpose(t) -> Split(channels) -> Conv on the first part -> Concat(channels), writing ``out``."""
    t, head, rest, done = (f"{tag}_pconv_{part}" for part in ("input", "head", "rest", "conv"))

    def attrs(node, **override):
        return {**{a.name: helper.get_attribute_value(a) for a in node.attribute}, **override}

    return [helper.make_node("Transpose", [split.input[0]], [t], name=f"{tag}_to_channels_first",
                             perm=TO_CHANNELS_FIRST),
            helper.make_node("Split", [t, *split.input[1:]], [head, rest], name=f"{tag}_pconv_split",
                             **attrs(split, axis=1)),
            helper.make_node("Conv", [head, *conv.input[1:]], [done], name=f"{tag}_pconv_conv", **attrs(conv)),
            helper.make_node("Concat", [done, rest], [out], name=f"{tag}_pconv_concat", axis=1)]


def _requantized(pair: tuple, source: str, quantized: str, out: str) -> list:
    """A copy of the per-tensor Q -> DQ ``pair`` applied to ``source``."""
    q, dq = pair
    return [helper.make_node("QuantizeLinear", [source, *q.input[1:]], [quantized], name=quantized,
                             **{a.name: helper.get_attribute_value(a) for a in q.attribute}),
            helper.make_node("DequantizeLinear", [quantized, *dq.input[1:]], [out], name=out,
                             **{a.name: helper.get_attribute_value(a) for a in dq.attribute})]
