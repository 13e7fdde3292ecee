"""The fused kernels as PyTorch custom ops, and the ``"triton"`` implementation of AST's two ops.

``torch.ops.ast.adaptive_sparse_attention`` / ``torch.ops.ast.partial_conv`` run the Triton kernel on
CUDA tensors, the kernel under Triton's interpreter on CPU tensors when Triton runs in interpreter
mode (``TRITON_INTERPRET=1`` before its import), and the reference otherwise. Their fake
implementations let ``torch.compile`` and ``torch.export`` trace through them as single nodes.

The ``"triton"`` entries of ``ASSA_IMPLS`` / ``PARTIAL_CONV_IMPLS`` (what ``AST.set_ops_impl("triton")``
selects) refuse to fall back silently: on a CPU tensor without the interpreter they raise.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import ASSA_IMPLS, PARTIAL_CONV_IMPLS
from .assa import assa_reference
from .partial_conv import partial_conv_reference
from .triton_runtime import INTERPRET_ENV, interpreter_enabled, require_triton

require_triton()  # before anything is registered, so a failed import leaves no half-registered ops


def _use_kernel(t: torch.Tensor) -> bool:
    return t.device.type == "cuda" or interpreter_enabled()


@torch.library.custom_op("ast::adaptive_sparse_attention", mutates_args=())
def adaptive_sparse_attention(q: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor, mix: torch.Tensor,
                              region_ids: Optional[torch.Tensor], num_heads: int, scale: float) -> torch.Tensor:
    if _use_kernel(q):
        from .triton_assa import assa_triton_launch

        return assa_triton_launch(q, kv, bias, mix, region_ids, num_heads, scale)
    return assa_reference(q, kv, bias, mix, region_ids, num_heads=num_heads, scale=scale)


@adaptive_sparse_attention.register_fake
def _(q, kv, bias, mix, region_ids, num_heads, scale):
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.custom_op("ast::partial_conv", mutates_args=())
def partial_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if _use_kernel(x):
        from .triton_partial_conv import partial_conv_triton_launch

        return partial_conv_triton_launch(x, weight)
    return partial_conv_reference(x, weight)


@partial_conv.register_fake
def _(x, weight):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _check_device(t: torch.Tensor, op: str) -> None:
    if not _use_kernel(t):
        raise RuntimeError(
            f"ops implementation 'triton' ({op}) got a tensor on {t.device}: the Triton kernels run on CUDA, or "
            f"on the CPU under Triton's interpreter (slow, for testing), which needs {INTERPRET_ENV}=1 in the "
            f"environment before triton is imported (e.g. when the process starts). Move the model to a GPU, "
            f"start with {INTERPRET_ENV}=1, or use set_ops_impl('reference').")


def assa_triton(q, kv, bias, mix, region_ids=None, *, num_heads: int, scale: float) -> torch.Tensor:
    _check_device(q, "adaptive sparse attention")
    return torch.ops.ast.adaptive_sparse_attention(q, kv, bias, mix, region_ids, num_heads, float(scale))


def partial_conv_triton(x, weight) -> torch.Tensor:
    _check_device(x, "partial convolution")
    return torch.ops.ast.partial_conv(x, weight)


ASSA_IMPLS["triton"] = assa_triton
PARTIAL_CONV_IMPLS["triton"] = partial_conv_triton
