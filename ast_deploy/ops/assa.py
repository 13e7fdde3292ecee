"""Adaptive sparse self-attention (ASSA): the attention core of AST's bottleneck and decoder blocks.

Op contract (what ``ast::AdaptiveSparseAttention`` computes, in the PyTorch reference, the ONNX
local function and every kernel that replaces it)::

    out = AdaptiveSparseAttention(q, kv, bias, mix[, region_ids]; num_heads, scale)

    q           [Bw, N, C]   queries of Bw windows of N tokens, heads packed as C = num_heads * d
                             (exactly what the ``to_q`` linear layer produces)
    kv          [Bw, N, 2C]  keys then values, each num_heads * d (what ``to_kv`` produces)
    bias        [num_heads, N, N]  relative-position bias, already gathered from its table
    mix         [2]          (w1, w2) = softmax(w), the learned branch weights
    region_ids  [nW, N]      optional shift-window region of each token; window b uses row b % nW
                             (windows are ordered batch-major), tokens of different regions get
                             -100 added to their logit, as the official shift mask does
    out         [Bw, N, C]   heads packed again, ready for the output projection

    s   = (q_h * scale) @ k_h^T + bias_h (+ mask)
    out = (w1 * softmax(s) + w2 * relu(s) ** 2) @ v_h         for every window and head h

Taking q and kv straight from the projections and returning heads packed means no transpose on
either side of the op; passing region ids instead of an [nW, N, N] mask keeps the mask's memory at
nW * N instead of nW * N * N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SHIFT_MASK_VALUE = -100.0


def mask_from_regions(region_ids: torch.Tensor) -> torch.Tensor:
    """[nW, N] region ids -> [nW, N, N] additive mask (0 within a region, -100 across)."""
    different = region_ids.unsqueeze(1) != region_ids.unsqueeze(2)
    return torch.where(different, SHIFT_MASK_VALUE, 0.0).to(torch.float32)


def assa_reference(
    q: torch.Tensor,
    kv: torch.Tensor,
    bias: torch.Tensor,
    mix: torch.Tensor,
    region_ids: torch.Tensor | None = None,
    *,
    num_heads: int,
    scale: float,
) -> torch.Tensor:
    """The op in plain PyTorch, operation for operation as the official implementation."""
    windows, tokens, channels = q.shape
    head_dim = channels // num_heads
    q = q.reshape(windows, tokens, num_heads, head_dim).transpose(1, 2)
    kv = kv.reshape(windows, tokens, 2, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    logits = (q * scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)
    if region_ids is not None:
        mask = mask_from_regions(region_ids).to(logits.dtype)
        num_windows = region_ids.shape[0]
        logits = logits.view(-1, num_windows, num_heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
        logits = logits.view(-1, num_heads, tokens, tokens)
    attn = F.softmax(logits, dim=-1) * mix[0] + F.relu(logits) ** 2 * mix[1]
    return (attn @ v).transpose(1, 2).reshape(windows, tokens, channels)
