"""The AST plugins and TensorRT-RTX: an RTX engine runs the ``ast::`` nodes as their local-function
bodies (inlined, see :mod:`.parser_input`).

The plugins are quickly deployable plugins (``tensorrt.plugin``, :mod:`.trt_plugins`) with
ahead-of-time Triton kernels. TensorRT-RTX 1.7's Python bindings have no ``tensorrt.plugin`` package
and no ``IPluginV3QuickAOTBuild``; NVIDIA's QDP package from the ``tensorrt-cu12-bindings`` wheels
fails to import on top of them (``_tensor.py`` subclasses ``trt.ISymExpr``, which they lack).
Class-based ``IPluginV3`` plugins register (``get_plugin_registry().register_creator(creator, "ast")``
returns True) and the ONNX parser finds them ("Found registered plugin: PartialConv. Importing this
node as a plugin", "Successfully created plugin: PartialConv"), but TensorRT-RTX 1.7.1 has no plugin
layer: its ``INetworkDefinition`` has no ``add_plugin_v3`` (nor ``add_plugin_v2``), and the parser then
aborts the whole process (``std::terminate`` in ``libtensorrt_onnxparser_rtx.so.1``: "terminate called
without an active exception") before any of the plugin's shape, type or format functions is called.
``tests/test_rtx.py`` runs that probe in a subprocess, so a TensorRT-RTX that gains plugins is noticed.
So nothing is ever registered in-process here, and ``--plugins on`` is refused.
"""

from __future__ import annotations

from .plugins import PLUGIN_MODES, PluginError

RTX_PLUGIN_STATUS = ("TensorRT-RTX has no plugin layers (its network API has no add_plugin_v3, its bindings no "
                     "tensorrt.plugin, and its ONNX parser aborts the process after creating a registered plugin)")


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
