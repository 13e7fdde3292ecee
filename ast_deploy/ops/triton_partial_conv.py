"""Partial convolution (``ast::PartialConv``) directly on the channels-last map, as one Triton kernel.

Program (pixel tile, output-channel block): the 3x3 convolution is nine shifted [pixels, Cp_in] x
[Cp_in, Cp_out] products accumulated in FP32 (zero padding by masking the shifted loads; channel
blocks padded to 16 so ``tl.dot`` applies to Cp = 2 as well). The programs of the first channel block
also copy the untouched channels Cp..C, so the op is one launch with no transpose and no concat.
Pixels are flattened over batch, rows and columns, so any B, H, W use the same compiled kernel.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import triton.language as tl

from .kernel_specs import PartialConvSpec, partial_conv_spec_for
from .triton_runtime import TritonKernel


def _partial_conv_fwd(x_ptr, w_ptr, num_pixels, height, width, y_ptr,
                      C: tl.constexpr, CP: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr,
                      BLOCK_CO: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_co = tl.program_id(1)

    pix = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    pix_ok = pix < num_pixels
    col = pix % width
    row = (pix // width) % height

    co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_ok = co < CP
    ci_base = tl.arange(0, BLOCK_CI)
    acc = tl.zeros([BLOCK_P, BLOCK_CO], dtype=tl.float32)
    for tap in tl.static_range(9):
        dy = tap // 3 - 1
        dx = tap % 3 - 1
        nb_ok = pix_ok & (row + dy >= 0) & (row + dy < height) & (col + dx >= 0) & (col + dx < width)
        nb = pix + dy * width + dx  # same image: the bounds check above keeps rows inside it
        for ci0 in range(0, CP, BLOCK_CI):
            ci = ci0 + ci_base
            ci_ok = ci < CP
            xs = tl.load(x_ptr + nb[:, None] * C + ci[None, :], mask=nb_ok[:, None] & ci_ok[None, :], other=0.0)
            # weight[co, ci, ky, kx] read as a [ci, co] tile
            ws = tl.load(w_ptr + co[None, :] * (CP * 9) + ci[:, None] * 9 + tap,
                         mask=ci_ok[:, None] & co_ok[None, :], other=0.0)
            acc = tl.dot(xs, ws.to(xs.dtype), acc, input_precision="ieee")
    tl.store(y_ptr + pix[:, None] * C + co[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=pix_ok[:, None] & co_ok[None, :])

    if pid_co == 0:
        for c0 in range(CP, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            offs = pix[:, None] * C + c[None, :]
            keep = pix_ok[:, None] & (c < C)[None, :]
            tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=keep), mask=keep)


partial_conv_kernel = TritonKernel(_partial_conv_fwd)
INTERPRETER_BLOCK_PIXELS = 1024


def partial_conv_triton_launch(x: torch.Tensor, weight: torch.Tensor, block_pixels: int | None = None) -> torch.Tensor:
    """Run the kernel on tensors of one device (CUDA, or CPU under TRITON_INTERPRET=1)."""
    spec: PartialConvSpec = partial_conv_spec_for(x, weight)
    kernel = partial_conv_kernel.for_device(x.device)
    if block_pixels is None and x.device.type != "cuda":
        # The interpreter pays per program, not per pixel: the same kernel over fewer, larger tiles.
        block_pixels = INTERPRETER_BLOCK_PIXELS
    if block_pixels is not None:
        spec = replace(spec, block_pixels=block_pixels)
    x, weight = x.contiguous(), weight.contiguous()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    b, h, w, _ = x.shape
    num_pixels = b * h * w
    if num_pixels == 0:
        return y
    if num_pixels >= 2**31:
        raise ValueError(f"partial_conv: {num_pixels} pixels do not fit the kernel's int32 count; split the batch")
    kernel[spec.grid(num_pixels)](x, weight, num_pixels, h, w, y, num_warps=spec.num_warps, **spec.constexprs())
    return y
