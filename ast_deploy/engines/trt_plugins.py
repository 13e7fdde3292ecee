"""TensorRT plugins for AST's two ops, with ``tensorrt.plugin`` (quickly deployable plugins).

``register_plugins()`` registers three plugins in the ``ast`` namespace (version "1"):

- ``ast::AdaptiveSparseAttention``       (q, kv, bias, mix; num_heads: int, scale: float) -> like q
- ``ast::AdaptiveSparseAttentionShifted`` (q, kv, bias, mix, region_ids; num_heads, scale) -> like q
- ``ast::PartialConv``                   (x, weight) -> like x

Each has an ``aot_impl`` only: when the engine is built, the Triton kernel is compiled to PTX for the
GPU at hand and embedded, so the engine runs without Python (trtexec, C++). No JIT ``impl`` is
defined, so ONNX nodes need no ``aot`` attribute to choose.

Deliberately no ``from __future__ import annotations``: ``tensorrt.plugin`` inspects the annotations
of the decorated functions as classes.
"""

import logging
from typing import List, Tuple, Union

from . import plugin_rules as pd

log = logging.getLogger(__name__)

_registered = False


def register_plugins() -> bool:
    """Register the AST plugins with TensorRT; idempotent. False (no error) without ``tensorrt.plugin``
    or where it lacks ahead-of-time implementations (TensorRT < 10.9)."""
    global _registered
    if _registered:
        return True
    try:
        import tensorrt.plugin as trtp
    except Exception as e:  # ImportError, or OSError where the bindings cannot find the libraries
        log.info("AST TensorRT plugins not registered: tensorrt.plugin is not importable (%s)", e)
        return False
    if not hasattr(trtp, "aot_impl"):
        log.warning("AST TensorRT plugins not registered: this TensorRT has no tensorrt.plugin.aot_impl (>= 10.9)")
        return False
    _define(trtp)
    _registered = True
    return True


def _already_defined(trtp, name: str) -> bool:
    try:
        return hasattr(getattr(trtp.op, pd.NAMESPACE), name)
    except AttributeError:
        return False


def _dims(desc) -> list:
    """A TensorDesc's shape as ints where they are build-time constants, None elsewhere."""
    dims = []
    for e in desc.shape_expr:
        dims.append(e.constant_value() if not e.is_fake and e.is_constant else None)
    return dims


def _dtype(desc) -> str:
    return desc.dtype.name


def _kernel(spec):
    from ..ops.ptx import build_target, compile_spec

    capability, ptx_version = build_target()
    return compile_spec(spec, capability, ptx_version)


def _launch(trtp, compiled, grid, scalars):
    params = trtp.KernelLaunchParams()
    params.grid_x, params.grid_y, params.grid_z = grid
    params.block_x = compiled.block_x
    params.shared_mem = compiled.shared_mem
    extra = trtp.SymIntExprs(len(scalars))
    for i, value in enumerate(scalars):
        extra[i] = trtp.SymInt32(value)
    return compiled.name, compiled.ptx, params, extra


def _define(trtp) -> None:
    Desc = trtp.TensorDesc
    AotResult = Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]

    def combinations(name):
        return [trtp.AutoTuneCombination(types, "LINEAR") for types in pd.type_combinations(name)]

    if not _already_defined(trtp, pd.ASSA):
        @trtp.register(pd.plugin_id(pd.ASSA))
        def assa_desc(q: Desc, kv: Desc, bias: Desc, mix: Desc, num_heads: int, scale: float) -> Desc:
            pd.check_assa_shapes(_dims(q), _dims(kv), _dims(bias), _dims(mix), None, num_heads)
            return q.like()

        @trtp.aot_impl(pd.plugin_id(pd.ASSA))
        def assa_aot(q: Desc, kv: Desc, bias: Desc, mix: Desc, num_heads: int, scale: float,
                     outputs: Tuple[Desc], tactic: int) -> AotResult:
            spec = pd.assa_spec(_dims(q), num_heads, scale, _dtype(q), _dtype(bias), _dtype(mix), None)
            grid, scalars = pd.assa_launch(spec, q.shape_expr[0])
            return _launch(trtp, _kernel(spec), grid, scalars)

        @trtp.autotune(pd.plugin_id(pd.ASSA))
        def assa_autotune(q: Desc, kv: Desc, bias: Desc, mix: Desc,
                          outputs: Tuple[Desc]) -> List[trtp.AutoTuneCombination]:
            return combinations(pd.ASSA)

    if not _already_defined(trtp, pd.ASSA_SHIFTED):
        @trtp.register(pd.plugin_id(pd.ASSA_SHIFTED))
        def assa_masked_desc(q: Desc, kv: Desc, bias: Desc, mix: Desc, region_ids: Desc, num_heads: int,
                             scale: float) -> Desc:
            pd.check_assa_shapes(_dims(q), _dims(kv), _dims(bias), _dims(mix), _dims(region_ids), num_heads)
            return q.like()

        @trtp.aot_impl(pd.plugin_id(pd.ASSA_SHIFTED))
        def assa_masked_aot(q: Desc, kv: Desc, bias: Desc, mix: Desc, region_ids: Desc, num_heads: int,
                            scale: float, outputs: Tuple[Desc], tactic: int) -> AotResult:
            spec = pd.assa_spec(_dims(q), num_heads, scale, _dtype(q), _dtype(bias), _dtype(mix),
                                _dtype(region_ids))
            grid, scalars = pd.assa_launch(spec, q.shape_expr[0], region_ids.shape_expr[0])
            return _launch(trtp, _kernel(spec), grid, scalars)

        @trtp.autotune(pd.plugin_id(pd.ASSA_SHIFTED))
        def assa_masked_autotune(q: Desc, kv: Desc, bias: Desc, mix: Desc, region_ids: Desc,
                                 outputs: Tuple[Desc]) -> List[trtp.AutoTuneCombination]:
            return combinations(pd.ASSA_SHIFTED)

    if not _already_defined(trtp, pd.PARTIAL_CONV):
        @trtp.register(pd.plugin_id(pd.PARTIAL_CONV))
        def partial_conv_desc(x: Desc, weight: Desc) -> Desc:
            pd.check_partial_conv_shapes(_dims(x), _dims(weight))
            return x.like()

        @trtp.aot_impl(pd.plugin_id(pd.PARTIAL_CONV))
        def partial_conv_aot(x: Desc, weight: Desc, outputs: Tuple[Desc], tactic: int) -> AotResult:
            spec = pd.partial_conv_spec(_dims(x), _dims(weight), _dtype(x), _dtype(weight))
            b, h, w, _ = x.shape_expr
            grid, scalars = pd.partial_conv_launch(spec, b, h, w)
            return _launch(trtp, _kernel(spec), grid, scalars)

        @trtp.autotune(pd.plugin_id(pd.PARTIAL_CONV))
        def partial_conv_autotune(x: Desc, weight: Desc, outputs: Tuple[Desc]) -> List[trtp.AutoTuneCombination]:
            return combinations(pd.PARTIAL_CONV)
