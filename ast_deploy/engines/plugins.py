"""Whether an engine build uses the AST TensorRT plugins or the ONNX local functions.

Each custom node in the exported ONNX (``ast::AdaptiveSparseAttention``, ``ast::PartialConv``) has
``plugin_namespace="ast"`` and a local function of the same name: onnx-tensorrt imports it as the
plugin when one is registered and as the function body otherwise (onnx-tensorrt
``ModelImporter.cpp``: a node with ``plugin_namespace`` whose plugin creator is registered is imported
as the plugin, otherwise its local function is). So "off" only means: do not register.
"""

from __future__ import annotations

from typing import Callable

PLUGIN_MODES = ("auto", "on", "off")


class PluginError(RuntimeError):
    pass


def _register_ast_plugins() -> bool:
    from .trt_plugins import register_plugins

    return bool(register_plugins())


def resolve_plugins(mode: str, plugin_ops, register: Callable[[], bool] | None = None) -> dict:
    """Register the plugins as ``mode`` asks; return what the sidecar records:
    ``{"requested", "used", "ops", "detail"}``. ``on`` raises PluginError when they cannot be used."""
    if mode not in PLUGIN_MODES:
        raise ValueError(f"plugins must be one of {', '.join(PLUGIN_MODES)}, not {mode!r}")
    record = {"requested": mode, "used": False, "ops": list(plugin_ops)}
    if mode == "off":
        return record | {"detail": "not registered: TensorRT imports the ONNX local functions"}
    if not plugin_ops:
        if mode == "on":
            raise PluginError("--plugins on, but the ONNX has no AST plugin nodes (ast::AdaptiveSparseAttention, "
                              "ast::PartialConv): export it with the custom nodes, or build with --plugins auto/off")
        return record | {"detail": "the ONNX has no AST plugin nodes"}
    try:
        ok = (register or _register_ast_plugins)()
        why = "" if ok else "tensorrt.plugin with ahead-of-time plugins is unavailable (TensorRT >= 10.9; JetPack 6 ships 10.3)"
    except ImportError as e:
        ok, why = False, f"the plugin module cannot be imported ({e})"
    except Exception as e:
        ok, why = False, f"registering them failed ({type(e).__name__}: {e})"
    if ok:
        return record | {"used": True, "detail": "registered: TensorRT uses the AST plugins"}
    if mode == "on":
        raise PluginError(f"--plugins on, but the AST plugins cannot be registered: {why}. "
                          "Build with --plugins auto or off to use the ONNX local functions instead.")
    return record | {"detail": f"not registered, {why}: TensorRT imports the ONNX local functions"}
