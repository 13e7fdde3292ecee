"""AST's two special ops as ONNX custom nodes, plus the local functions that define them.

During ``torch.onnx.export`` the ``"onnx"`` implementations registered here emit one node per op in
domain ``ast`` (``torch.onnx.ops.symbolic``); outside an export they run the PyTorch reference, so a
model switched to them still computes the same function eagerly. After export,
:func:`attach_functions` adds a FunctionProto for every op type used: its body is the standard-op
decomposition, so ONNX Runtime (which inlines local functions) and TensorRT without the plugin
(onnx-tensorrt's ``LocalFunctionImporter``) run the same file a plugin-equipped TensorRT runs.

Design decisions, forced by what the consumers accept:

* **region_ids optional -> two op types.** onnx-tensorrt imports a local function only when the
  node has exactly as many inputs as the function declares, and an empty optional input name
  fails its tensor lookup; a TensorRT Python plugin (``trtp.register``) has a fixed tensor
  signature too. So a node never carries an empty or missing ``region_ids``: unshifted blocks use
  ``ast::AdaptiveSparseAttention(q, kv, bias, mix)`` and shifted blocks
  ``ast::AdaptiveSparseAttentionShifted(q, kv, bias, mix, region_ids)``. Both compute the contract
  of ``ast_deploy.ops.assa`` (the first with ``region_ids`` absent); a plugin registers both names.
* **Attributes.** ``num_heads`` (int) and ``scale`` (float) are attributes of the node and of the
  function; the body reads them through attribute references (``Constant`` with
  ``ref_attr_name``), which ONNX Runtime and onnx-tensorrt both resolve, so one function serves
  every block whatever its head count. ``plugin_namespace="ast"``, ``plugin_version="1"`` and
  ``aot=1`` (use the plugin's ahead-of-time implementation) are declared function attributes with
  defaults so they are legal on the call and unused by the body.
* The bodies cast their constants with ``CastLike`` so a graph converted to FP16 keeps type-checking.
* Function-local value names start with ``ast_assa_`` / ``ast_pconv_``: onnx-tensorrt resolves them
  in the graph's own name table, so :func:`attach_functions` refuses a graph that uses such a name.
"""

from __future__ import annotations

import torch
import onnx
from onnx import AttributeProto, FunctionProto, NodeProto, TensorProto, helper

from ..ops import ASSA_IMPLS, PARTIAL_CONV_IMPLS, assa_reference, partial_conv_reference

from ..ops.names import (ASSA_OP, ASSA_SHIFTED_OP, DOMAIN, OP_TYPES, PARTIAL_CONV_OP, PLUGIN_NAMESPACE,
                         PLUGIN_VERSION)

FUNCTION_VERSION = 1  # opset version of domain "ast" that the model imports

IMPL_NAME = "onnx"

# aot=1: onnx-tensorrt asks the plugin creator for its ahead-of-time implementation (STRICT_AOT), the
# only one the AST plugins define; without it a parser or network flag preferring JIT would fail with
# "JIT implementation requested, but not defined" (onnx-tensorrt importerUtils.cpp, createPlugin).
_PLUGIN_ATTRS = {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION, "aot": 1}


# --------------------------------------------------------------------------------------------
# Emitters (registered in ast_deploy.ops under IMPL_NAME)
# --------------------------------------------------------------------------------------------

def assa_onnx(q: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor, mix: torch.Tensor,
              region_ids: torch.Tensor | None = None, *, num_heads: int, scale: float) -> torch.Tensor:
    if not torch.onnx.is_in_onnx_export():
        return assa_reference(q, kv, bias, mix, region_ids, num_heads=num_heads, scale=scale)
    op, inputs = (ASSA_OP, (q, kv, bias, mix)) if region_ids is None else \
        (ASSA_SHIFTED_OP, (q, kv, bias, mix, region_ids))
    attrs = {"num_heads": int(num_heads), "scale": float(scale), **_PLUGIN_ATTRS}
    return torch.onnx.ops.symbolic(f"{DOMAIN}::{op}", inputs, attrs, dtype=q.dtype, shape=q.shape,
                                   version=FUNCTION_VERSION)


def partial_conv_onnx(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if not torch.onnx.is_in_onnx_export():
        return partial_conv_reference(x, weight)
    return torch.onnx.ops.symbolic(f"{DOMAIN}::{PARTIAL_CONV_OP}", (x, weight), dict(_PLUGIN_ATTRS),
                                   dtype=x.dtype, shape=x.shape, version=FUNCTION_VERSION)


ASSA_IMPLS.setdefault(IMPL_NAME, assa_onnx)
PARTIAL_CONV_IMPLS.setdefault(IMPL_NAME, partial_conv_onnx)


# --------------------------------------------------------------------------------------------
# FunctionProto builders
# --------------------------------------------------------------------------------------------

class _Body:
    """Collects the nodes of a function body with short unique value names."""

    def __init__(self, prefix: str):
        # Local names are unique per function; the prefix keeps them apart from the graph's names.
        self.nodes: list[NodeProto] = []
        self._prefix = prefix
        self._count = 0

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs) -> str | list[str]:
        names = [self._name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value, dtype=TensorProto.INT64) -> str:
        name = self._name("const")
        tensor = helper.make_tensor(name, dtype, [len(value)] if isinstance(value, (list, tuple)) else [],
                                    value if isinstance(value, (list, tuple)) else [value])
        self.nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        return name

    def attr_const(self, attr: str, kind: str) -> str:
        """A Constant whose value is the calling node's attribute ``attr`` (``value_int``/``value_float``)."""
        name = self._name(attr)
        node = helper.make_node("Constant", [], [name])
        ref = AttributeProto()
        ref.name = f"value_{kind}"
        ref.ref_attr_name = attr
        ref.type = AttributeProto.INT if kind == "int" else AttributeProto.FLOAT
        node.attribute.append(ref)
        self.nodes.append(node)
        return name

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self._prefix}_{hint}_{self._count}"


def _plugin_attribute_defaults() -> list[AttributeProto]:
    return [helper.make_attribute(k, v) for k, v in _PLUGIN_ATTRS.items()]


def assa_function(shifted: bool, opset: int) -> FunctionProto:
    """Body of ``AdaptiveSparseAttention[Shifted]``: the contract in ``ast_deploy.ops.assa``."""
    b = _Body("ast_assa")
    q, kv, bias, mix, ids, out = (f"ast_assa_{n}" for n in ("q", "kv", "bias", "mix", "region_ids", "out"))
    heads = b.op("Unsqueeze", b.attr_const("num_heads", "int"), b.const([0]))            # [1]
    scale = b.op("CastLike", b.attr_const("scale", "float"), q)
    zero_zero, minus_one = b.const([0, 0]), b.const([-1])
    split_heads = b.op("Concat", zero_zero, heads, minus_one, axis=0)                     # [0, 0, h, -1]
    channels = b.op("Shape", q, start=2, end=3)                                           # [C]
    k, v = b.op("Split", kv, b.op("Concat", channels, channels, axis=0), axis=2, outputs=2)
    # [Bw, N, C] -> [Bw, h, N, d] (q, v) or [Bw, h, d, N] (k, already transposed for q @ k^T)
    q_h = b.op("Transpose", b.op("Reshape", b.op("Mul", q, scale), split_heads), perm=[0, 2, 1, 3])
    k_t = b.op("Transpose", b.op("Reshape", k, split_heads), perm=[0, 2, 3, 1])
    v_h = b.op("Transpose", b.op("Reshape", v, split_heads), perm=[0, 2, 1, 3])
    logits = b.op("MatMul", q_h, k_t)                                                     # [Bw, h, N, N]
    if shifted:
        # mask[w, i, j] = -100 where tokens i and j of window w lie in different regions. Folding
        # it into the (small) bias first keeps a single Add on the big logits tensor.
        same = b.op("Equal", b.op("Unsqueeze", ids, b.const([2])), b.op("Unsqueeze", ids, b.const([1])))
        mask = b.op("Where", same, b.op("CastLike", b.const(0.0, TensorProto.FLOAT), q),
                    b.op("CastLike", b.const(-100.0, TensorProto.FLOAT), q))              # [nW, N, N]
        bias_mask = b.op("Add", bias, b.op("Unsqueeze", mask, b.const([1])))               # [nW, h, N, N]
        windows = b.op("Shape", ids, start=0, end=1)                                      # [nW]
        tokens = b.op("Shape", q, start=1, end=2)                                         # [N]
        per_image = b.op("Concat", minus_one, windows, heads, tokens, tokens, axis=0)
        logits = b.op("Add", b.op("Reshape", logits, per_image), bias_mask)               # [B, nW, h, N, N]
        logits = b.op("Reshape", logits, b.op("Concat", minus_one, heads, tokens, tokens, axis=0))
    else:
        logits = b.op("Add", logits, bias)
    w1 = b.op("Gather", mix, b.const(0), axis=0)
    w2 = b.op("Gather", mix, b.const(1), axis=0)
    relu = b.op("Relu", logits)
    attn = b.op("Add", b.op("Mul", b.op("Softmax", logits, axis=-1), w1), b.op("Mul", b.op("Mul", relu, relu), w2))
    merged = b.op("Transpose", b.op("MatMul", attn, v_h), perm=[0, 2, 1, 3])              # [Bw, N, h, d]
    b.op("Reshape", merged, b.const([0, 0, -1]))
    b.nodes[-1].output[0] = out
    return helper.make_function(
        DOMAIN, ASSA_SHIFTED_OP if shifted else ASSA_OP, [q, kv, bias, mix] + ([ids] if shifted else []), [out],
        b.nodes, [helper.make_opsetid("", opset)], attributes=["num_heads", "scale"],
        attribute_protos=_plugin_attribute_defaults(),
        doc_string="Adaptive sparse attention (see ast_deploy.ops.assa for the contract).")


def partial_conv_function(opset: int) -> FunctionProto:
    """Body of ``PartialConv``: 3x3 conv of the first Cp channels of a channels-last map."""
    b = _Body("ast_pconv")
    x, weight, y = "ast_pconv_x", "ast_pconv_weight", "ast_pconv_y"
    conv_channels = b.op("Shape", weight, start=0, end=1)                                 # [Cp]
    channels = b.op("Shape", x, start=3, end=4)                                           # [C]
    sizes = b.op("Concat", conv_channels, b.op("Sub", channels, conv_channels), axis=0)
    head, tail = b.op("Split", x, sizes, axis=3, outputs=2)
    conv = b.op("Conv", b.op("Transpose", head, perm=[0, 3, 1, 2]), weight,
                kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1)
    b.op("Concat", b.op("Transpose", conv, perm=[0, 2, 3, 1]), tail, axis=3)
    b.nodes[-1].output[0] = y
    return helper.make_function(
        DOMAIN, PARTIAL_CONV_OP, [x, weight], [y], b.nodes, [helper.make_opsetid("", opset)],
        attributes=[], attribute_protos=_plugin_attribute_defaults(),
        doc_string="Partial convolution (see ast_deploy.ops.partial_conv for the contract).")


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ValueError("model imports no default ONNX opset")


def attach_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add (or replace) the local function of every ``ast`` op type the graph uses; in place."""
    used = {n.op_type for n in model.graph.node if n.domain == DOMAIN}
    unknown = used - set(OP_TYPES)
    if unknown:
        raise ValueError(f"graph has ast-domain nodes without a known decomposition: {sorted(unknown)}")
    opset = _default_opset(model)
    builders = {ASSA_OP: lambda: assa_function(False, opset), ASSA_SHIFTED_OP: lambda: assa_function(True, opset),
                PARTIAL_CONV_OP: lambda: partial_conv_function(opset)}
    kept = [f for f in model.functions if not (f.domain == DOMAIN and f.name in used)]
    added = [builders[name]() for name in sorted(used)]
    # onnx-tensorrt resolves function-local names in the graph's name table: a clash would bind the
    # wrong tensor, so refuse rather than risk it (local names all start with "ast_assa_"/"ast_pconv_").
    graph_names = {v for n in model.graph.node for v in (*n.input, *n.output)}
    graph_names |= {t.name for t in model.graph.initializer} | {v.name for v in model.graph.input}
    local_names = {v for f in added for v in (*f.input, *f.output, *(o for n in f.node for o in n.output))}
    if graph_names & local_names:
        raise ValueError(f"graph values clash with local-function names: {sorted(graph_names & local_names)[:5]}")
    del model.functions[:]
    model.functions.extend(kept + added)
    if used and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, FUNCTION_VERSION))
    return model


def custom_nodes(model: onnx.ModelProto) -> list[NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN]
