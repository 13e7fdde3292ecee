"""The implementation registry of AST's two special operations (imports torch).

``reference`` is plain PyTorch (the ground truth and the ONNX decomposition). Other
implementations (fused kernels, the ONNX custom-node emitter) register themselves in
``ASSA_IMPLS`` / ``PARTIAL_CONV_IMPLS`` and are picked per module with ``AST.set_ops_impl``.
Implementations with heavy dependencies are imported on first request (``LAZY_IMPLS``).
"""

from __future__ import annotations

import importlib
from typing import Callable

from .assa import assa_reference, mask_from_regions
from .partial_conv import partial_conv_reference

ASSA_IMPLS: dict[str, Callable] = {"reference": assa_reference}
PARTIAL_CONV_IMPLS: dict[str, Callable] = {"reference": partial_conv_reference}

# implementation name -> module that registers it in both tables when imported
LAZY_IMPLS: dict[str, str] = {"triton": "ast_deploy.ops.triton_ops"}


def get_impl(table: dict[str, Callable], name: str) -> Callable:
    if name not in table and name in LAZY_IMPLS:
        importlib.import_module(LAZY_IMPLS[name])
    if name not in table:
        raise ValueError(f"unknown op implementation {name!r}; available: {sorted(set(table) | set(LAZY_IMPLS))}")
    return table[name]


__all__ = [
    "ASSA_IMPLS",
    "LAZY_IMPLS",
    "PARTIAL_CONV_IMPLS",
    "assa_reference",
    "get_impl",
    "mask_from_regions",
    "partial_conv_reference",
]
