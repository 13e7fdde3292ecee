"""AST, the Adaptive Sparse Transformer (Zhou et al., "Adapt or Perish", CVPR 2024).

A re-implementation of the official ``model.py`` that computes the same function and loads the
same state dicts (module names and parameter shapes are kept), with these differences:

- tokens are kept channels-last as ``[B, H, W, C]`` and H, W come from the tensor, so non-square
  inputs and batches work (each side a multiple of ``model.size_multiple``);
- the shift-window mask is built from tensor operations (region ids per token, no Python loops over
  slices), so the model exports to ONNX with dynamic H and W and no ScatterND;
- the attention core and the partial convolution go through ``ast_deploy.ops`` so that fused
  kernels or ONNX custom nodes can stand in for them;
- inference only: dropout and stochastic depth are accepted as keywords but not applied, and the
  official optional input ``mask`` is not supported.

The official quirks that change the function are kept: encoder blocks have no attention; a level
whose resolution at ``img_size`` is at most ``win_size`` uses that resolution as its window and never
shifts (decided at construction, whatever size is run later); ASSA mixes softmax and relu**2.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..ops import ASSA_IMPLS, PARTIAL_CONV_IMPLS, get_impl

NUM_LEVELS = 4  # down-samplings between the full-resolution level and the bottleneck


def window_partition(x: torch.Tensor, win: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * nW, win * win, C], windows ordered batch-major then row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // win, win, w // win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, win * win, c)


def window_reverse(windows: torch.Tensor, win: int, batch: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    c = windows.shape[-1]
    x = windows.view(batch, h // win, w // win, win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, h, w, c)


def shift_region_ids(h: int, w: int, win: int, shift: int, device=None) -> torch.Tensor:
    """Region of every token of the cyclically shifted map, in windows: [nW, win * win] float.

    The official code paints 3 x 3 slices of an [H, W] map with 0..8 ([0, H-win), [H-win, H-shift),
    [H-shift, H) along each axis); comparisons against arange give the same map without slicing.
    """
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    row_region = (rows >= h - win).to(torch.int64) + (rows >= h - shift).to(torch.int64)
    col_region = (cols >= w - win).to(torch.int64) + (cols >= w - shift).to(torch.int64)
    regions = (row_region.unsqueeze(1) * 3 + col_region.unsqueeze(0)).to(torch.float32)
    regions = regions.view(h // win, win, w // win, win).permute(0, 2, 1, 3)
    return regions.reshape(-1, win * win)


def relative_position_index(win: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(win), torch.arange(win), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (win - 1)
    return rel[:, :, 0] * (2 * win - 1) + rel[:, :, 1]


class LinearProjection(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, bias: bool = True):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.to_q = nn.Linear(dim, inner_dim, bias=bias)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_q(x), self.to_kv(x)


class WindowAttentionSparse(nn.Module):
    """Projections around the ASSA core (``ast_deploy.ops.assa``), with the official parameters."""

    def __init__(self, dim: int, win_size: int, num_heads: int, qkv_bias: bool = True,
                 qk_scale: float | None = None):
        super().__init__()
        self.dim = dim
        self.win_size = win_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * win_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(win_size))
        self.qkv = LinearProjection(dim, num_heads, dim // num_heads, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.w = nn.Parameter(torch.ones(2))
        self.ops_impl = "reference"
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        n = self.win_size * self.win_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1)

    def forward(self, windows: torch.Tensor, region_ids: torch.Tensor | None = None) -> torch.Tensor:
        q, kv = self.qkv(windows)
        assa = get_impl(ASSA_IMPLS, self.ops_impl)
        out = assa(q, kv, self.relative_position_bias(), torch.softmax(self.w, dim=0), region_ids,
                   num_heads=self.num_heads, scale=self.scale)
        return self.proj(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, win_size={self.win_size}, num_heads={self.num_heads}"


class PartialConv(nn.Conv2d):
    """3x3 convolution of the first quarter of the channels of a channels-last map; the rest pass."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, 1, 1, bias=False)
        self.ops_impl = "reference"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return get_impl(PARTIAL_CONV_IMPLS, self.ops_impl)(x, self.weight)


def _depthwise_nhwc(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class FRFN(nn.Module):
    """Feature refinement feed-forward: partial conv, linear to 2 x hidden, gated depth-wise conv."""

    def __init__(self, dim: int = 32, hidden_dim: int = 128):
        super().__init__()
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden_dim * 2), nn.GELU())
        self.dwconv = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, groups=hidden_dim, kernel_size=3, stride=1, padding=1), nn.GELU())
        self.linear2 = nn.Sequential(nn.Linear(hidden_dim, dim))
        self.partial_conv3 = PartialConv(dim // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear1(self.partial_conv3(x))
        gate, value = x.chunk(2, dim=-1)
        return self.linear2(_depthwise_nhwc(self.dwconv, gate) * value)


class LeFF(nn.Module):
    """Locally-enhanced feed-forward (Uformer): linear, depth-wise conv, linear."""

    def __init__(self, dim: int = 32, hidden_dim: int = 128):
        super().__init__()
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU())
        self.dwconv = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, groups=hidden_dim, kernel_size=3, stride=1, padding=1), nn.GELU())
        self.linear2 = nn.Sequential(nn.Linear(hidden_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(_depthwise_nhwc(self.dwconv, self.linear1(x)))


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def make_feed_forward(token_mlp: str, dim: int, hidden: int) -> nn.Module:
    if token_mlp == "frfn":
        return FRFN(dim, hidden)
    if token_mlp == "leff":
        return LeFF(dim, hidden)
    if token_mlp in ("ffn", "mlp"):
        return Mlp(dim, hidden)
    raise ValueError(f"token_mlp must be 'frfn', 'leff', 'ffn' or 'mlp', not {token_mlp!r}")


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, win_size: int = 8,
                 shift_size: int = 0, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: float | None = None, norm_layer=nn.LayerNorm, token_mlp: str = "leff",
                 att: bool = True):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.num_heads = num_heads
        self.att = att
        # Official quirk: decided by the construction-time resolution, whatever size runs later.
        if min(input_resolution) <= win_size:
            shift_size = 0
            win_size = min(input_resolution)
        if not 0 <= shift_size < win_size:
            raise ValueError(f"shift_size must be in [0, win_size), got {shift_size} for window {win_size}")
        self.win_size = win_size
        self.shift_size = shift_size
        if att:
            self.norm1 = norm_layer(dim)
            self.attn = WindowAttentionSparse(dim, win_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale)
        self.norm2 = norm_layer(dim)
        self.mlp = make_feed_forward(token_mlp, dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.att:
            x = x + self._attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        win, shift = self.win_size, self.shift_size
        region_ids = None
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            region_ids = shift_region_ids(h, w, win, shift, device=x.device)
        x = self.attn(window_partition(x, win), region_ids)
        x = window_reverse(x, win, b, h, w)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
                f"win_size={self.win_size}, shift_size={self.shift_size}, att={self.att}")


class BasicASTLayer(nn.Module):
    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int,
                 win_size: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None,
                 norm_layer=nn.LayerNorm, token_mlp: str = "ffn", shift_flag: bool = True, att: bool = False):
        super().__init__()
        self.dim = dim
        self.depth = depth
        self.blocks = nn.ModuleList([
            TransformerBlock(dim, input_resolution, num_heads, win_size,
                             shift_size=win_size // 2 if (shift_flag and i % 2 == 1) else 0,
                             mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                             norm_layer=norm_layer, token_mlp=token_mlp, att=att)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Downsample(nn.Module):
    def __init__(self, in_channel: int, out_channel: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channel, out_channel, kernel_size=4, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Upsample(nn.Module):
    def __init__(self, in_channel: int, out_channel: int):
        super().__init__()
        self.deconv = nn.Sequential(nn.ConvTranspose2d(in_channel, out_channel, kernel_size=2, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class InputProj(nn.Module):
    def __init__(self, in_channel: int = 3, out_channel: int = 64):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channel, out_channel, kernel_size=3, padding=1), nn.LeakyReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class OutputProj(nn.Module):
    def __init__(self, in_channel: int = 64, out_channel: int = 3):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channel, out_channel, kernel_size=3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 3, 1, 2))


class AST(nn.Module):
    """The official ``AST`` with its constructor keywords and defaults; see the module docstring."""

    def __init__(self, img_size: int = 256, in_chans: int = 3, dd_in: int = 3, embed_dim: int = 32,
                 depths=(2, 2, 2, 2, 2, 2, 2, 2, 2), num_heads=(1, 2, 4, 8, 16, 16, 8, 4, 2),
                 win_size: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: float | None = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, norm_layer=nn.LayerNorm, patch_norm: bool = True,
                 use_checkpoint: bool = False, token_projection: str = "linear", token_mlp: str = "leff",
                 shift_flag: bool = True, **kwargs):
        super().__init__()
        if token_projection != "linear":
            raise ValueError(f"only token_projection='linear' exists in AST, not {token_projection!r}")
        if len(depths) != 2 * NUM_LEVELS + 1 or len(num_heads) != len(depths):
            raise ValueError(f"depths and num_heads need {2 * NUM_LEVELS + 1} entries each")
        self.config = dict(img_size=img_size, in_chans=in_chans, dd_in=dd_in, embed_dim=embed_dim,
                           depths=list(depths), num_heads=list(num_heads), win_size=win_size,
                           mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                           token_mlp=token_mlp, shift_flag=shift_flag)
        self.embed_dim = embed_dim
        self.dd_in = dd_in
        self.win_size = win_size

        def layer(level: int, dim: int, index: int, att: bool) -> BasicASTLayer:
            res = img_size // 2 ** level
            return BasicASTLayer(dim, (res, res), depths[index], num_heads[index], win_size,
                                 mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                 norm_layer=norm_layer, token_mlp=token_mlp, shift_flag=shift_flag, att=att)

        self.input_proj = InputProj(dd_in, embed_dim)
        self.output_proj = OutputProj(2 * embed_dim, in_chans)
        for i in range(NUM_LEVELS):
            setattr(self, f"encoderlayer_{i}", layer(i, embed_dim * 2 ** i, i, att=False))
            setattr(self, f"dowsample_{i}", Downsample(embed_dim * 2 ** i, embed_dim * 2 ** (i + 1)))
        self.conv = layer(NUM_LEVELS, embed_dim * 2 ** NUM_LEVELS, NUM_LEVELS, att=True)
        for i in range(NUM_LEVELS):
            level = NUM_LEVELS - 1 - i
            in_dim = embed_dim * 2 ** NUM_LEVELS if i == 0 else embed_dim * 2 ** (level + 2)
            setattr(self, f"upsample_{i}", Upsample(in_dim, embed_dim * 2 ** level))
            setattr(self, f"decoderlayer_{i}", layer(level, embed_dim * 2 ** (level + 1), NUM_LEVELS + 1 + i, att=True))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @property
    def size_multiple(self) -> int:
        """Every input side must be a multiple of this (128 for the released models)."""
        multiple = 1
        for level in range(NUM_LEVELS + 1):
            layer = self.conv if level == NUM_LEVELS else getattr(self, f"encoderlayer_{level}")
            wins = [b.win_size for b in layer.blocks] or [self.win_size]
            for win in wins:
                multiple = math.lcm(multiple, 2 ** level * win)
        for i in range(NUM_LEVELS):
            level = NUM_LEVELS - 1 - i
            for b in getattr(self, f"decoderlayer_{i}").blocks:
                multiple = math.lcm(multiple, 2 ** level * b.win_size)
        return multiple

    def set_ops_impl(self, assa: str | None = None, partial_conv: str | None = None) -> "AST":
        """Choose the implementation of the two special ops (see ``ast_deploy.ops``)."""
        if assa is not None:
            get_impl(ASSA_IMPLS, assa)
        if partial_conv is not None:
            get_impl(PARTIAL_CONV_IMPLS, partial_conv)
        for m in self.modules():
            if isinstance(m, WindowAttentionSparse) and assa is not None:
                m.ops_impl = assa
            elif isinstance(m, PartialConv) and partial_conv is not None:
                m.ops_impl = partial_conv
        return self

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.dd_in:
            raise ValueError(f"AST expects [B, {self.dd_in}, H, W] input, got shape {tuple(x.shape)}")
        m = self.size_multiple
        if x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f"AST needs H and W to be multiples of {m}, got {x.shape[2]}x{x.shape[3]}: "
                             "pad the image (ast_deploy.Runner does it for you)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling() and not torch.onnx.is_in_onnx_export():
            self.check_input(x)
        y = self.input_proj(x)
        skips = []
        for i in range(NUM_LEVELS):
            y = getattr(self, f"encoderlayer_{i}")(y)
            skips.append(y)
            y = getattr(self, f"dowsample_{i}")(y)
        y = self.conv(y)
        for i in range(NUM_LEVELS):
            y = getattr(self, f"upsample_{i}")(y)
            y = getattr(self, f"decoderlayer_{i}")(torch.cat([y, skips.pop()], dim=-1))
        y = self.output_proj(y)
        return x + y if self.dd_in == 3 else y
