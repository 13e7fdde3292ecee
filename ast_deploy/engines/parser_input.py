"""The ONNX the TensorRT(-RTX) parser reads when the AST plugins are not used: the ``ast::`` local
functions inlined, one uniquely named copy per call site.

Without this, onnx-tensorrt imports every call of a local function with the body's own node names
(``getNodeName``: the node's name, or ``node_of_<first output>``), which are the same in every call,
so from the second call on it warns "A node named node_of_ast_assa_... already exists, the output
tensors of this new instance will not be queryable" and the engine's layer report cannot tell the
calls apart. A function body is shared by all its calls, so no naming inside it can be unique per
call; ONNX's own inliner (``onnx.inliner``) gives each inlined value a per-call suffix (``__K`` for
the K-th call), and each inlined node is named here ``<calling node>/<body value>``, e.g.
``node__symbolic_15/ast_pconv_Conv_8``, which the layer report maps back to the calling node.
The file on disk (and its hash, the engine cache key) is unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..ops.names import DOMAIN

_SUFFIX = re.compile(r"^(?P<local>.+)__(?P<call>\d+)$")


def _call_sites(model) -> dict[int, str]:
    """K (the inliner's per-call suffix) -> the calling node's name, for the ``ast`` calls in graph order."""
    calls = [n for n in model.graph.node if n.domain == DOMAIN]
    return {k: (node.name or f"node_of_{node.output[0]}") for k, node in enumerate(calls, start=1)}


def inline_ast_functions(model):
    """A copy of ``model`` with its ``ast`` local functions inlined and every inlined node named."""
    import onnx.inliner

    sites = _call_sites(model)
    ids = [(f.domain, f.name) for f in model.functions if f.domain == DOMAIN]
    if not ids:
        return model
    inlined = onnx.inliner.inline_selected_functions(model, ids, exclude=False)
    taken = {node.name for node in inlined.graph.node if node.name}
    for node in inlined.graph.node:
        if node.name:
            continue
        name = _inlined_name(node, sites)
        if name is None:
            continue
        unique, count = name, 1
        while unique in taken:
            count += 1
            unique = f"{name}_{count}"
        node.name = unique
        taken.add(unique)
    return inlined


def _inlined_name(node, sites: dict[int, str]) -> str | None:
    """``call/local output`` for a node inlined from call K; the call's last node (whose output is the
    call's own output) is ``call/<op type>`` (its call found from a suffixed input)."""
    for value in node.output:
        match = _SUFFIX.match(value)
        if match and int(match["call"]) in sites:
            return f"{sites[int(match['call'])]}/{match['local']}"
    for value in node.input:
        match = _SUFFIX.match(value)
        if match and int(match["call"]) in sites:
            return f"{sites[int(match['call'])]}/{node.op_type}"
    return None


def parser_input(onnx_path, inline: bool) -> bytes:
    """The bytes to hand ``IParser.parse(data, path)``: the file as it is, or its functions inlined."""
    import onnx

    path = Path(onnx_path)
    if not inline:
        return path.read_bytes()
    model = onnx.load(str(path), load_external_data=False)  # external weights stay where the path says
    if not any(f.domain == DOMAIN for f in model.functions):
        return path.read_bytes()
    return inline_ast_functions(model).SerializeToString()
