"""AST's two special operations, each behind one function with interchangeable implementations.

``reference`` is plain PyTorch (the ground truth and the ONNX decomposition). Other
implementations (fused kernels, the ONNX custom-node emitter) register themselves in
``ASSA_IMPLS`` / ``PARTIAL_CONV_IMPLS`` (``registry.py``) and are picked per module with
``AST.set_ops_impl``. The registry imports torch, so it is loaded on first use: ``ops.names`` (the
op and plugin names) and the plugin rules stay importable where only an ONNX or an engine runs.
"""

from __future__ import annotations

import importlib

_REGISTRY = ("ASSA_IMPLS", "LAZY_IMPLS", "PARTIAL_CONV_IMPLS", "assa_reference", "get_impl", "mask_from_regions",
             "partial_conv_reference")


def __getattr__(name):
    if name in _REGISTRY:
        return getattr(importlib.import_module(".registry", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_REGISTRY)
