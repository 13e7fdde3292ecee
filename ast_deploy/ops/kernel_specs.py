"""What the fused kernels are compiled and launched with, as plain data (no triton, no TensorRT).

A *spec* pins everything a compiled kernel is specialised on: sizes that must be build-time
constants, dtypes of every pointer and the attributes. From it follow the Triton signature and
constexprs, the launch grid, the PTX entry name and the scalar arguments. The PyTorch launcher,
the PTX builder and the TensorRT plugins all derive their launches from here, so they cannot drift.

Kernel argument order is TensorRT's AOT-plugin order: input pointers, int32 scalars, output pointers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

MIN_DOT_DIM = 16  # tl.dot needs every dimension >= 16: smaller head dims / channel counts are zero-padded
MAX_TOKENS = 64  # one window's whole N x N logits tile lives in registers

TORCH_TO_TRITON = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int32: "i32",
                   torch.int64: "i64"}
FLOAT_IO = ("fp32", "fp16")


def next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def dot_block(size: int) -> int:
    return max(MIN_DOT_DIM, next_pow2(size))


def _short_hash(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class AssaSpec:
    """One compiled variant of ``ast::AdaptiveSparseAttention``."""

    tokens: int  # N, tokens per window
    channels: int  # C = num_heads * head_dim
    num_heads: int
    scale: float
    io_dtype: str = "fp32"  # q, kv and out
    bias_dtype: str = "fp32"
    mix_dtype: str = "fp32"
    region_dtype: str | None = None  # None: the unmasked variant

    def __post_init__(self):
        if self.io_dtype not in FLOAT_IO + ("bf16",):
            raise ValueError(f"q/kv/out must be fp32 or fp16, got {self.io_dtype}")
        if self.num_heads < 1 or self.channels % self.num_heads:
            raise ValueError(f"channels {self.channels} is not a multiple of num_heads {self.num_heads}")
        if not 1 <= self.tokens <= MAX_TOKENS:
            raise ValueError(f"the fused attention keeps a window in registers: N must be 1..{MAX_TOKENS}, "
                             f"got {self.tokens}")
        if self.head_dim > 128:
            raise ValueError(f"head_dim {self.head_dim} > 128 is not supported by the fused attention")

    @property
    def head_dim(self) -> int:
        return self.channels // self.num_heads

    @property
    def masked(self) -> bool:
        return self.region_dtype is not None

    @property
    def block_n(self) -> int:
        return dot_block(self.tokens)

    @property
    def block_d(self) -> int:
        return dot_block(self.head_dim)

    @property
    def num_warps(self) -> int:
        return 4

    def constexprs(self) -> dict:
        c = dict(N=self.tokens, NUM_HEADS=self.num_heads, HEAD_DIM=self.head_dim, SCALE=float(self.scale),
                 BLOCK_N=self.block_n, BLOCK_D=self.block_d)
        if not self.masked:
            c["region_ptr"] = None
        return c

    def signature(self) -> dict:
        """Triton signature in kernel-argument order (constexprs included, as Triton wants them)."""
        sig = {"q_ptr": f"*{self.io_dtype}", "kv_ptr": f"*{self.io_dtype}", "bias_ptr": f"*{self.bias_dtype}",
               "mix_ptr": f"*{self.mix_dtype}",
               "region_ptr": f"*{self.region_dtype}" if self.masked else "constexpr",
               "num_windows": "i32", "out_ptr": f"*{self.io_dtype}"}
        sig.update({k: "constexpr" for k in self.constexprs() if k != "region_ptr"})
        return sig

    def runtime_params(self) -> list[str]:
        """Names of the kernel's parameters as they appear in the PTX entry (constexprs are folded away)."""
        return [k for k, v in self.signature().items() if v != "constexpr"]

    def grid(self, windows):
        return (windows, self.num_heads, 1)

    def kernel_name(self) -> str:
        parts = [f"ast_assa_{self.io_dtype}", f"b{self.bias_dtype}", f"m{self.mix_dtype}"]
        if self.masked:
            parts.append(f"r{self.region_dtype}")
        parts += [f"n{self.tokens}", f"h{self.num_heads}", f"d{self.head_dim}", _short_hash(self)]
        return "_".join(parts)


@dataclass(frozen=True)
class PartialConvSpec:
    """One compiled variant of ``ast::PartialConv``."""

    channels: int  # C of the channels-last map
    conv_channels: int  # Cp, from the weight
    io_dtype: str = "fp32"
    weight_dtype: str = "fp32"
    block_pixels: int = 64

    def __post_init__(self):
        if self.io_dtype not in FLOAT_IO + ("bf16",):
            raise ValueError(f"x/y must be fp32 or fp16, got {self.io_dtype}")
        if not 0 < self.conv_channels <= self.channels:
            raise ValueError(f"the weight's {self.conv_channels} channels do not fit in C = {self.channels}")

    @property
    def block_co(self) -> int:
        return min(64, dot_block(self.conv_channels))

    @property
    def block_ci(self) -> int:
        return min(32, dot_block(self.conv_channels))

    @property
    def block_c(self) -> int:
        """Channel chunk of the pass-through copy."""
        return min(64, next_pow2(max(1, self.channels - self.conv_channels)))

    @property
    def num_warps(self) -> int:
        return 4

    def constexprs(self) -> dict:
        return dict(C=self.channels, CP=self.conv_channels, BLOCK_P=self.block_pixels, BLOCK_CI=self.block_ci,
                    BLOCK_CO=self.block_co, BLOCK_C=self.block_c)

    def signature(self) -> dict:
        sig = {"x_ptr": f"*{self.io_dtype}", "w_ptr": f"*{self.weight_dtype}", "num_pixels": "i32",
               "height": "i32", "width": "i32", "y_ptr": f"*{self.io_dtype}"}
        sig.update({k: "constexpr" for k in self.constexprs()})
        return sig

    def runtime_params(self) -> list[str]:
        return [k for k, v in self.signature().items() if v != "constexpr"]

    def grid(self, num_pixels):
        """``num_pixels`` may be an int or a symbolic expression supporting ``+`` and ``//``."""
        return ((num_pixels + (self.block_pixels - 1)) // self.block_pixels,
                -(-self.conv_channels // self.block_co), 1)

    def kernel_name(self) -> str:
        return (f"ast_pconv_{self.io_dtype}_w{self.weight_dtype}_c{self.channels}_p{self.conv_channels}_"
                f"{_short_hash(self)}")


def assa_spec_for(q: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor, mix: torch.Tensor,
                  region_ids: torch.Tensor | None, num_heads: int, scale: float) -> AssaSpec:
    windows, tokens, channels = q.shape
    if kv.shape != (windows, tokens, 2 * channels):
        raise ValueError(f"kv must be [{windows}, {tokens}, {2 * channels}], got {tuple(kv.shape)}")
    if bias.shape != (num_heads, tokens, tokens):
        raise ValueError(f"bias must be [{num_heads}, {tokens}, {tokens}], got {tuple(bias.shape)}")
    if mix.numel() != 2:
        raise ValueError(f"mix must hold 2 weights, got shape {tuple(mix.shape)}")
    if region_ids is not None:
        if region_ids.dim() != 2 or region_ids.shape[1] != tokens or windows % region_ids.shape[0]:
            raise ValueError(f"region_ids must be [nW, {tokens}] with nW dividing {windows} windows, "
                             f"got {tuple(region_ids.shape)}")
    return AssaSpec(tokens, channels, num_heads, float(scale), TORCH_TO_TRITON[q.dtype],
                    TORCH_TO_TRITON[bias.dtype], TORCH_TO_TRITON[mix.dtype],
                    None if region_ids is None else TORCH_TO_TRITON[region_ids.dtype])


def partial_conv_spec_for(x: torch.Tensor, weight: torch.Tensor) -> PartialConvSpec:
    if x.dim() != 4:
        raise ValueError(f"x must be channels-last [B, H, W, C], got shape {tuple(x.shape)}")
    cp = weight.shape[0]
    if weight.shape != (cp, cp, 3, 3):
        raise ValueError(f"weight must be [Cp, Cp, 3, 3], got {tuple(weight.shape)}")
    return PartialConvSpec(x.shape[-1], cp, TORCH_TO_TRITON[x.dtype], TORCH_TO_TRITON[weight.dtype])
