"""Whether an engine build uses the AST TensorRT plugins or the ONNX local functions.

Each custom node in the exported ONNX (``ast::AdaptiveSparseAttention``, ``ast::PartialConv``) has
``plugin_namespace="ast"`` and a local function of the same name: onnx-tensorrt imports it as the
plugin when one is registered and as the function body otherwise (onnx-tensorrt
``ModelImporter.cpp``: a node with ``plugin_namespace`` whose plugin creator is registered is imported
as the plugin, otherwise its local function is). So "off" only means: do not register; and since
TensorRT's Python plugin layer cannot take a registration back, "off" is refused in a process that
has already registered them (the engine would silently contain the plugins).

``auto`` registers only where the plugins can be built: ``tensorrt.plugin`` with AOT support
(>= 10.9), Triton (the ``kernels`` extra) and a PTX target (a visible GPU, or ``AST_PTX_ARCH``).
Otherwise it falls back to the local functions with a one-line note.

Hardware-compatible engines (``--hardware-compat``) run on any Ampere or newer GPU, but the plugins
embed PTX compiled for the build GPU (``sm_90a`` and the like are not forward-compatible): the
combination is refused with ``on``, and ``auto`` uses the local functions.
"""

from __future__ import annotations

from typing import Callable

PLUGIN_MODES = ("auto", "on", "off")

HARDWARE_COMPAT_NOTE = ("a hardware-compatible engine runs on other GPUs than the build GPU, and the plugins "
                        "embed PTX compiled for the build GPU only")


class PluginError(RuntimeError):
    pass


def _register_ast_plugins() -> bool:
    from .trt_plugins import register_plugins

    return bool(register_plugins())


def _prerequisites():
    from .trt_plugins import kernel_prerequisites

    return kernel_prerequisites()


def _registered() -> bool:
    from .trt_plugins import registered_in_process

    return registered_in_process()


def resolve_plugins(mode: str, plugin_ops, register: Callable[[], bool] | None = None, *,
                    hardware_compat: bool = False, prerequisites: Callable | None = None,
                    already_registered: Callable[[], bool] | None = None) -> dict:
    """Register the plugins as ``mode`` asks; return what the sidecar records:
    ``{"requested", "used", "ops", "detail"}`` (and ``"target"``, the PTX (sm, ISA), when used).
    ``on`` raises PluginError when they cannot be used; ``off`` when they are already registered."""
    if mode not in PLUGIN_MODES:
        raise ValueError(f"plugins must be one of {', '.join(PLUGIN_MODES)}, not {mode!r}")
    record = {"requested": mode, "used": False, "ops": list(plugin_ops)}
    was_registered = (already_registered or _registered)()
    if was_registered and plugin_ops and (mode == "off" or hardware_compat):
        why = "--plugins off" if mode == "off" else f"--hardware-compat ({HARDWARE_COMPAT_NOTE})"
        raise PluginError(f"{why}, but the AST plugins were already registered in this process and TensorRT "
                          "cannot unregister them, so the engine would contain them anyway: build in a new "
                          "process (a fresh ast-build command)")
    if mode == "off":
        return record | {"detail": "not registered: TensorRT imports the ONNX local functions"}
    if not plugin_ops:
        if mode == "on":
            raise PluginError("--plugins on, but the ONNX has no AST plugin nodes (ast::AdaptiveSparseAttention, "
                              "ast::PartialConv): export it with the custom nodes, or build with --plugins auto/off")
        return record | {"detail": "the ONNX has no AST plugin nodes"}
    if hardware_compat:
        if mode == "on":
            raise PluginError(f"--plugins on cannot be combined with --hardware-compat: {HARDWARE_COMPAT_NOTE}. "
                              "Build without --hardware-compat on each GPU model, or with --plugins auto/off.")
        return record | {"detail": f"not registered ({HARDWARE_COMPAT_NOTE}): TensorRT imports the ONNX local "
                                   "functions"}
    target = None
    try:
        target = (prerequisites or _prerequisites)()
        ok = (register or _register_ast_plugins)()
        why = "" if ok else "tensorrt.plugin with ahead-of-time plugins is unavailable (TensorRT >= 10.9; JetPack 6 ships 10.3)"
    except ImportError as e:
        ok, why = False, f"the plugin module cannot be imported ({e})"
    except Exception as e:  # PluginUnavailable (no Triton, no PTX target) or a failed registration
        ok, why = False, str(e) if type(e).__name__ == "PluginUnavailable" else \
            f"registering them failed ({type(e).__name__}: {e})"
    if ok:
        return record | {"used": True, "target": list(target) if target else None,
                         "detail": "registered: TensorRT uses the AST plugins"}
    if mode == "on":
        raise PluginError(f"--plugins on, but the AST plugins cannot be registered: {why}. "
                          "Build with --plugins auto or off to use the ONNX local functions instead.")
    return record | {"detail": f"not registered, {why}: TensorRT imports the ONNX local functions"}
