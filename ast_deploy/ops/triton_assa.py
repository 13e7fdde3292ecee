"""Fused adaptive sparse attention (``ast::AdaptiveSparseAttention``) as one Triton kernel.

One program per (window, head). The window's q, k and v tiles ([N, d], zero-padded to powers of two
of at least 16 so ``tl.dot`` applies to head dims of 8 as well), the N x N logits, both branches and
their mix stay in registers; only the [N, d] output is written. Everything after the loads is FP32.

FP16: relu(s)**2 passes 65504 once a logit passes 256, so the FP32 attention weights cannot be cast
to FP16 for the tensor-core product with V. Each row is divided by its largest |weight| first (the
row then lies in [-1, 1]) and the FP32 accumulator is multiplied back, as flash attention does with
its running max. FP32 inputs use IEEE FP32 products (no TF32) so the kernel matches the reference.
"""

from __future__ import annotations

import torch
import triton.language as tl

from .kernel_specs import AssaSpec, assa_spec_for
from .assa import SHIFT_MASK_VALUE
from .triton_runtime import TritonKernel

MASK_VALUE = tl.constexpr(SHIFT_MASK_VALUE)


def _assa_fwd(q_ptr, kv_ptr, bias_ptr, mix_ptr, region_ptr, num_windows, out_ptr,
              N: tl.constexpr, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, SCALE: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    window = tl.program_id(0)
    head = tl.program_id(1)
    C: tl.constexpr = NUM_HEADS * HEAD_DIM

    tok = tl.arange(0, BLOCK_N)
    dim = tl.arange(0, BLOCK_D)
    tok_ok = tok < N
    tile_ok = tok_ok[:, None] & (dim < HEAD_DIM)[None, :]

    q_rows = q_ptr + window.to(tl.int64) * (N * C) + head * HEAD_DIM
    kv_rows = kv_ptr + window.to(tl.int64) * (N * 2 * C) + head * HEAD_DIM
    q = tl.load(q_rows + tok[:, None] * C + dim[None, :], mask=tile_ok, other=0.0)
    k = tl.load(kv_rows + tok[:, None] * (2 * C) + dim[None, :], mask=tile_ok, other=0.0)
    v = tl.load(kv_rows + C + tok[:, None] * (2 * C) + dim[None, :], mask=tile_ok, other=0.0)

    s = tl.dot(q, tl.trans(k), input_precision="ieee", out_dtype=tl.float32) * SCALE
    pair_ok = tok_ok[:, None] & tok_ok[None, :]
    bias = tl.load(bias_ptr + head * (N * N) + tok[:, None] * N + tok[None, :], mask=pair_ok, other=0.0)
    s += bias.to(tl.float32)
    if region_ptr is not None:
        regions = region_ptr + (window % num_windows) * N
        rid = tl.load(regions + tok, mask=tok_ok, other=0)
        s += tl.where(rid[:, None] != rid[None, :], MASK_VALUE, 0.0)

    # Padded key columns must vanish from both branches.
    key_ok = tok_ok[None, :]
    s_soft = tl.where(key_ok, s, float("-inf"))
    p = tl.exp(s_soft - tl.max(s_soft, axis=1)[:, None])
    p = p / tl.sum(p, axis=1)[:, None]
    r = tl.where(key_ok, tl.maximum(s, 0.0), 0.0)
    w1 = tl.load(mix_ptr).to(tl.float32)
    w2 = tl.load(mix_ptr + 1).to(tl.float32)
    attn = w1 * p + w2 * (r * r)

    if q.dtype == tl.float32:
        out = tl.dot(attn, v.to(tl.float32), input_precision="ieee", out_dtype=tl.float32)
    else:
        row_max = tl.maximum(tl.max(tl.abs(attn), axis=1), 1e-30)
        out = tl.dot((attn / row_max[:, None]).to(q.dtype), v, out_dtype=tl.float32) * row_max[:, None]

    out_rows = out_ptr + window.to(tl.int64) * (N * C) + head * HEAD_DIM
    tl.store(out_rows + tok[:, None] * C + dim[None, :], out.to(out_ptr.dtype.element_ty), mask=tile_ok)


assa_kernel = TritonKernel(_assa_fwd)


def assa_triton_launch(q: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor, mix: torch.Tensor,
                       region_ids: torch.Tensor | None, num_heads: int, scale: float) -> torch.Tensor:
    """Run the kernel on tensors of one device (CUDA, or CPU under TRITON_INTERPRET=1)."""
    spec: AssaSpec = assa_spec_for(q, kv, bias, mix, region_ids, num_heads, scale)
    kernel = assa_kernel.for_device(q.device)
    q, kv, bias, mix = (t.contiguous() for t in (q, kv, bias, mix))
    if region_ids is not None:
        region_ids = region_ids.contiguous()
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    windows = q.shape[0]
    if windows == 0:
        return out
    kernel[spec.grid(windows)](q, kv, bias, mix.reshape(2), region_ids,
                               1 if region_ids is None else region_ids.shape[0], out,
                               num_warps=spec.num_warps, **{k: v for k, v in spec.constexprs().items()
                                                            if k != "region_ptr"})
    return out
