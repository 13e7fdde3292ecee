"""Graph helpers shared by the precision passes: node names, dtypes, and an inliner that keeps
track of which call node every function-internal tensor belongs to."""

from __future__ import annotations

import hashlib

import onnx
from onnx import AttributeProto, NodeProto, TensorProto, helper

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
INTERNAL_SEP = "::"  # "<call node name>::<tensor name inside the function body>"


def ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every top-level node a unique name (reports and exclusion lists refer to nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
    return model


def model_hash(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()[:16]


def local_functions(model: onnx.ModelProto) -> dict[tuple[str, str], onnx.FunctionProto]:
    return {(f.domain, f.name): f for f in model.functions}


def is_function_call(node: NodeProto, functions: dict) -> bool:
    return (node.domain, node.op_type) in functions


def _bind_attributes(body_node: NodeProto, call: NodeProto, function: onnx.FunctionProto) -> NodeProto:
    """Copy of ``body_node`` with attribute references (``ref_attr_name``) resolved against the call
    node's attributes, falling back to the function's defaults; unresolved ones are dropped."""
    given = {a.name: a for a in call.attribute}
    defaults = {a.name: a for a in function.attribute_proto}
    node = NodeProto()
    node.CopyFrom(body_node)
    del node.attribute[:]
    for attr in body_node.attribute:
        if attr.ref_attr_name:
            source = given.get(attr.ref_attr_name) or defaults.get(attr.ref_attr_name)
            if source is None:
                continue
            bound = AttributeProto()
            bound.CopyFrom(source)
            bound.name = attr.name
            node.attribute.append(bound)
        else:
            node.attribute.append(attr)
    return node


def inline_with_owners(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Inline every call of a model-local function (recursively).

    Internal tensors are renamed ``"<call>::<name>"`` so they can be exposed as outputs and traced
    back: the second result maps each internal tensor to the top-level call node that owns it."""
    functions = local_functions(model)
    owners: dict[str, str] = {}

    def expand(node: NodeProto, prefix: str, owner: str | None, depth: int) -> list[NodeProto]:
        if not is_function_call(node, functions):
            return [node]
        if depth > 16:
            raise ValueError(f"function nesting deeper than 16 at {node.op_type}")
        function = functions[(node.domain, node.op_type)]
        top = owner or node.name
        rename = dict(zip(function.input, node.input))
        rename.update(zip(function.output, node.output))
        call_prefix = f"{prefix}{node.name}{INTERNAL_SEP}"
        out: list[NodeProto] = []
        for j, inner in enumerate(function.node):
            bound = _bind_attributes(inner, node, function)
            for k, name in enumerate(bound.input):
                if name and name not in rename:
                    rename[name] = call_prefix + name
                bound.input[k] = rename.get(name, name) if name else name
            for k, name in enumerate(bound.output):
                if name and name not in rename:
                    rename[name] = call_prefix + name
                    owners[call_prefix + name] = top
                bound.output[k] = rename.get(name, name) if name else name
            bound.name = call_prefix + (inner.name or f"{inner.op_type}_{j}")
            out.extend(expand(bound, call_prefix, top, depth + 1))
        return out

    inlined = onnx.ModelProto()
    inlined.CopyFrom(model)
    del inlined.graph.node[:]
    for node in model.graph.node:
        inlined.graph.node.extend(expand(node, "", None, 0))
    del inlined.functions[:]
    return inlined, owners


def tensor_producers(graph: onnx.GraphProto) -> dict[str, NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def tensor_consumers(graph: onnx.GraphProto) -> dict[str, list[NodeProto]]:
    consumers: dict[str, list[NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(node)
    return consumers


def attribute(node: NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default
