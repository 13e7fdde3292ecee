"""The AST plugins and TensorRT-RTX: an RTX engine runs the ``ast::`` nodes as their local-function
bodies (inlined, see :mod:`.parser_input`).

The plugins are quickly deployable plugins (``tensorrt.plugin``, :mod:`.trt_plugins`) with
ahead-of-time Triton kernels. TensorRT-RTX 1.7's Python bindings have no ``tensorrt.plugin`` package
and no ``IPluginV3QuickAOTBuild``; NVIDIA's QDP package from the ``tensorrt-cu12-bindings`` wheels
fails to import on top of them (``_tensor.py`` subclasses ``trt.ISymExpr``, which they lack). What
happens with class-based ``IPluginV3`` plugins is recorded in :data:`RTX_PLUGIN_STATUS`.
"""

from __future__ import annotations

from .plugins import PLUGIN_MODES, PluginError

RTX_PLUGIN_STATUS = ("TensorRT-RTX 1.7 cannot take the AST plugins: its bindings have no tensorrt.plugin "
                     "(ahead-of-time Python plugins)")


def resolve_rtx_plugins(mode: str, plugin_ops) -> dict:
    """The sidecar's plugin record for an RTX build; ``on`` raises PluginError (see the module docstring)."""
    if mode not in PLUGIN_MODES:
        raise ValueError(f"plugins must be one of {', '.join(PLUGIN_MODES)}, not {mode!r}")
    record = {"requested": mode, "used": False, "ops": list(plugin_ops)}
    if not plugin_ops:
        if mode == "on":
            raise PluginError("--plugins on, but the ONNX has no AST plugin nodes (ast::AdaptiveSparseAttention, "
                              "ast::PartialConv): export it with the custom nodes, or build with --plugins auto/off")
        return record | {"detail": "the ONNX has no AST plugin nodes"}
    if mode == "on":
        raise PluginError(f"--plugins on: {RTX_PLUGIN_STATUS}. Build with --plugins auto or off: the ast:: nodes "
                          "then run as their ONNX local functions.")
    why = "not requested" if mode == "off" else RTX_PLUGIN_STATUS
    return record | {"detail": f"not registered ({why}): TensorRT-RTX imports the ONNX local functions, inlined"}
