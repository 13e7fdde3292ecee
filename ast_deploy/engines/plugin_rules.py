"""The TensorRT plugins' rules as plain functions, testable without TensorRT.

``trt_plugins`` only translates between ``tensorrt.plugin`` objects and these: plugin names, the
output descriptor rule, the type combinations offered to the autotuner, the spec a node compiles to,
the launch grid and the int32 scalar arguments (TensorRT passes those between the input and output
pointers, matching the kernels' argument order).

``tensorrt.plugin`` takes a fixed number of input tensors per plugin (no optional inputs, no
defaults), so the attention is two plugins: ``AdaptiveSparseAttention`` with 4 inputs and
``AdaptiveSparseAttentionShifted`` with region_ids as a 5th.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

from ..ops.names import ASSA_OP as ASSA, ASSA_SHIFTED_OP as ASSA_SHIFTED, PARTIAL_CONV_OP as PARTIAL_CONV, PLUGIN_NAMESPACE as NAMESPACE, PLUGIN_VERSION  # noqa: E501, F401

if TYPE_CHECKING:  # kernel_specs imports torch
    from ..ops.kernel_specs import AssaSpec, PartialConvSpec


def plugin_id(name: str) -> str:
    return f"{NAMESPACE}::{name}"


# TensorRT DataType enum names -> Triton element types
TRT_DTYPE_TO_TRITON = {"FLOAT": "fp32", "HALF": "fp16", "INT32": "i32", "BF16": "bf16"}


def triton_dtype(trt_dtype_name: str) -> str:
    try:
        return TRT_DTYPE_TO_TRITON[trt_dtype_name]
    except KeyError:
        raise ValueError(f"the AST plugins do not take TensorRT {trt_dtype_name} tensors") from None


def type_combinations(name: str) -> list[str]:
    """``AutoTuneCombination`` type strings, one entry per I/O in order (inputs, then the output).

    '|' ties positions together (q, kv and the output share FP32 or FP16), '*' lets a position vary
    alone (bias, mix, region ids and the conv weight may stay FP32 in an FP16 graph).
    """
    io, aux = "FP32|FP16", "FP32*FP16"
    if name == ASSA:
        return [", ".join([io, io, aux, aux, io])]
    if name == ASSA_SHIFTED:
        return [", ".join([io, io, aux, aux, "FP32*FP16*INT32", io])]
    if name == PARTIAL_CONV:
        return [", ".join([io, aux, io])]
    raise ValueError(f"unknown plugin {name}")


def expand_combinations(types: str) -> list[list[str]]:
    """What ``AutoTuneCombination`` makes of a type string (same rules), to check what is offered."""
    positions = [p.strip() for p in types.split(",")]
    dependent = max((len(p.split("|")) for p in positions), default=1)
    combos = [[p.split("|")[k] if "|" in p else p.split("*")[0] for p in positions] for k in range(dependent)]
    for j, p in enumerate(positions):
        if "*" in p:
            combos = [c[:j] + [alt] + c[j + 1:] for alt in p.split("*") for c in combos]
    return combos


def _static(dims) -> list[int | None]:
    return [int(d) if isinstance(d, numbers.Integral) and d >= 0 else None for d in dims]


def check_assa_shapes(q, kv, bias, mix, region_ids, num_heads: int) -> None:
    """Shapes as tuples of ints, ``None`` (or -1) where not known yet (run-time sizes, or TensorRT's
    placeholder dims on its first call): only known dims are checked, ranks always."""
    q, kv, bias, mix = _static(q), _static(kv), _static(bias), _static(mix)
    if len(q) != 3 or len(kv) != 3 or len(bias) != 3:
        raise ValueError(f"q, kv must be [Bw, N, C] and [Bw, N, 2C], bias [heads, N, N]; got ranks "
                         f"{len(q)}, {len(kv)}, {len(bias)}")
    _, n, c = q
    if c is not None and c % num_heads:
        raise ValueError(f"C = {c} is not a multiple of num_heads = {num_heads}")
    if c is not None and kv[2] is not None and kv[2] != 2 * c:
        raise ValueError(f"kv has {kv[2]} channels, expected 2 * {c}")
    if bias[0] is not None and bias[0] != num_heads:
        raise ValueError(f"bias has {bias[0]} heads, the node says num_heads = {num_heads}")
    for got in (kv[1], bias[1], bias[2]):
        if n is not None and got is not None and got != n:
            raise ValueError(f"token counts disagree: q has N = {n}, kv/bias have {got}")
    if len(mix) != 1 or mix[0] not in (None, 2):
        raise ValueError(f"mix must be [2], got {mix}")
    if region_ids is not None:
        region_ids = _static(region_ids)
        if len(region_ids) != 2 or (n is not None and region_ids[1] not in (None, n)):
            raise ValueError(f"region_ids must be [nW, {n}], got {region_ids}")


def _known(*dims) -> bool:
    return all(d is not None for d in dims)


def check_partial_conv_shapes(x, weight) -> None:
    """Shapes as lists of ints, ``None`` (or -1) where not known yet: only known dims are checked
    (TensorRT's first call gives placeholder dims, all ``None`` here, and only the ranks)."""
    x, weight = _static(x), _static(weight)
    bad_kernel = any(k is not None and k != 3 for k in weight[2:])
    if len(x) != 4 or len(weight) != 4 or bad_kernel or (_known(*weight[:2]) and weight[0] != weight[1]):
        raise ValueError(f"x must be [B, H, W, C] and weight [Cp, Cp, 3, 3], got {x} and {weight}")
    if None not in (x[3], weight[0]) and weight[0] > x[3]:
        raise ValueError(f"weight has {weight[0]} channels, x only {x[3]}")


def build_constant(value, what: str) -> int:
    if value is None:
        raise ValueError(f"{what} must be known when the engine is built (the kernel is specialised on it); "
                         "only batch, windows, H and W may be dynamic")
    return int(value)


def assa_spec(q_dims, num_heads: int, scale: float, io: str, bias: str, mix: str, region: str | None) -> AssaSpec:
    """The compiled variant for a node: dims may hold ``None`` for run-time sizes; dtypes are TensorRT names."""
    from ..ops.kernel_specs import AssaSpec  # imports torch: only where a kernel is specialised

    _, n, c = _static(q_dims)
    return AssaSpec(build_constant(n, "N (tokens per window)"), build_constant(c, "C (channels)"), int(num_heads),
                    float(scale), triton_dtype(io), triton_dtype(bias), triton_dtype(mix),
                    None if region is None else triton_dtype(region))


def partial_conv_spec(x_dims, weight_dims, io: str, weight: str) -> PartialConvSpec:
    from ..ops.kernel_specs import PartialConvSpec

    x, w = _static(x_dims), _static(weight_dims)
    return PartialConvSpec(build_constant(x[3], "C (channels)"), build_constant(w[0], "Cp (conv channels)"),
                           triton_dtype(io), triton_dtype(weight))


def assa_launch(spec: AssaSpec, windows, num_windows=1) -> tuple[tuple, list]:
    """(grid, int32 scalar args) for ``windows`` windows; ints or TensorRT shape expressions."""
    return spec.grid(windows), [num_windows if spec.masked else 1]


def partial_conv_launch(spec: PartialConvSpec, batch, height, width) -> tuple[tuple, list]:
    pixels = batch * height * width
    return spec.grid(pixels), [pixels, height, width]

