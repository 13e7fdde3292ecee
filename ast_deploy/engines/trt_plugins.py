"""TensorRT plugins for AST's two ops, with ``tensorrt.plugin`` (quickly deployable plugins, QDP).

``register_plugins()`` registers three plugins in the ``ast`` namespace (version "1"):

- ``ast::AdaptiveSparseAttention``       (q, kv, bias, mix; num_heads, scale) -> like q
- ``ast::AdaptiveSparseAttentionShifted`` (q, kv, bias, mix, region_ids; num_heads, scale) -> like q
- ``ast::PartialConv``                   (x, weight) -> like x

Each has an ``aot_impl`` only: when the engine is built, the Triton kernel is compiled to PTX for the
GPU at hand and embedded, so the engine runs without Python (trtexec, C++) and needs no plugin
creator at run time. The ONNX nodes carry ``aot=1`` (onnx-tensorrt then asks for STRICT_AOT).

How TensorRT drives these functions (TensorRT ``python/packaging/bindings_wheel/tensorrt/plugin/``,
``_plugin_class.py`` and ``_lib.py``):

- the register function is first called with *placeholder* dims (``ShapeExprs(rank, _is_dummy=True)``,
  whose ``is_constant`` raises) to learn the output types, then with real shape expressions; so a
  shape check looks only at what is known (:func:`_dims`);
- onnx-tensorrt builds the plugin fields in the creator's field order from the node's attributes: an
  ONNX INT attribute becomes a 1-element ``kINT32`` field, a FLOAT one a 1-element ``kFLOAT32`` field
  (onnx-tensorrt ``importerUtils.cpp`` / ``onnxOpImporters.cpp``, ``loadFields``). TensorRT 10.9 to 11.1
  convert a field declared ``int``/``float`` with ``int(f.data)``, a TypeError under NumPy >= 2.4 (11.4
  takes ``f.data[0]``); a field declared ``numpy.typing.NDArray[dtype]`` is converted with
  ``f.data.astype(dtype)`` in every version. So the attributes are declared as 1-element int32 /
  float32 arrays, matching what the parser passes, and the plugin indexes them itself;
- ``get_launch_params`` passes *every* attribute, positionally, to ``aot_impl``: it takes them all.

Deliberately no ``from __future__ import annotations``: ``tensorrt.plugin`` inspects the annotations
of the decorated functions as classes.
"""

import hashlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import List, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import plugin_rules as pd

log = logging.getLogger(__name__)

_registered = False

# The files whose content decides the PTX an engine embeds (part of the engine cache key).
_KERNEL_SOURCES = ("ops/triton_assa.py", "ops/triton_partial_conv.py", "ops/kernel_specs.py", "ops/ptx.py",
                   "engines/trt_plugins.py", "engines/plugin_rules.py")


class PluginUnavailable(RuntimeError):
    """The plugins cannot be built here (no Triton, no build target): the reason is the message."""


_target: Union[Tuple[int, Union[int, None]], None] = None  # what the last prerequisite check chose


def kernel_prerequisites(capability: Union[int, None] = None) -> Tuple[int, Union[int, None]]:
    """(compute capability, PTX ISA) the plugins will compile for; PluginUnavailable if they cannot.

    Checked before registering, so that ``--plugins auto`` falls back to the ONNX local functions on a
    machine with TensorRT but without the ``kernels`` extra (Triton) or a build target, instead of
    failing inside the builder's callback. ``capability`` (e.g. 87, from the build device) is used
    unless ``AST_PTX_ARCH`` names one; the choice is kept for the ``aot_impl`` calls that follow."""
    global _target
    if importlib.util.find_spec("triton") is None:
        raise PluginUnavailable("Triton is not installed (pip install 'ast-deploy[kernels]')")
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except Exception as e:
        raise PluginUnavailable(f"Triton cannot compile here ({type(e).__name__}: {e})") from None
    from ..ops import ptx

    try:
        if capability is not None and not os.environ.get("AST_PTX_ARCH"):
            if os.environ.get("AST_PTX_VERSION"):
                isa = int(os.environ["AST_PTX_VERSION"])
            else:
                limits = [ptx.ptx_version_for_driver(ptx.cuda_driver_version()), ptx.triton_default_ptx_version(capability)]
                isa = min(v for v in limits if v is not None)
            _target = (int(capability), isa)
        else:
            _target = ptx.build_target()
    except Exception as e:
        raise PluginUnavailable(f"no PTX build target: {type(e).__name__}: {e} (set AST_PTX_ARCH and "
                                "AST_PTX_VERSION, e.g. 90 and 85, to name one)") from None
    return _target


def kernel_fingerprint(target: Union[Tuple[int, Union[int, None]], None] = None) -> dict:
    """What the embedded kernels depend on: a hash of their sources, the Triton version, the PTX target."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for rel in _KERNEL_SOURCES:
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    try:
        from importlib.metadata import version

        triton_version = version("triton")
    except Exception:
        triton_version = None
    capability, ptx_isa = target if target is not None else (None, None)
    return {"sources_sha256": digest.hexdigest()[:16], "triton": triton_version, "sm": capability,
            "ptx_isa": ptx_isa}


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


def registered_in_process() -> bool:
    """True once the AST plugins' creators are in this process's TensorRT plugin registry (by us or
    anyone else). TensorRT's QDP layer has no way to take a definition back."""
    if _registered:
        return True
    trt = sys.modules.get("tensorrt")
    if trt is None or not hasattr(trt, "get_plugin_registry"):
        return False
    try:
        registry = trt.get_plugin_registry()
        return any(registry.get_creator(name, pd.PLUGIN_VERSION, pd.NAMESPACE) is not None
                   for name in (pd.ASSA, pd.ASSA_SHIFTED, pd.PARTIAL_CONV))
    except Exception:
        return False


def _already_defined(trtp, name: str) -> bool:
    try:
        return hasattr(getattr(trtp.op, pd.NAMESPACE), name)
    except AttributeError:
        return False


def _dims(desc) -> list:
    """A TensorDesc's shape: an int per build-time constant, None per run-time or placeholder dim.

    On TensorRT's first call the dims are placeholders (``is_fake``), whose ``is_constant`` raises."""
    dims = []
    for e in desc.shape_expr:
        dims.append(e.constant_value() if not e.is_fake and e.is_constant else None)
    return dims


def _dtype(desc) -> str:
    return desc.dtype.name


def _int(attr) -> int:
    """A plugin attribute declared as a 1-element array (see the module docstring)."""
    return int(np.asarray(attr).reshape(-1)[0])


def _float(attr) -> float:
    return float(np.asarray(attr).reshape(-1)[0])


def _kernel(spec):
    from ..ops.ptx import compile_spec

    capability, ptx_version = _target or kernel_prerequisites()
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
    """Register the three plugins' shape, AOT and autotune functions (each once per process)."""
    for name, define in ((pd.ASSA, _define_assa), (pd.ASSA_SHIFTED, _define_assa_shifted),
                         (pd.PARTIAL_CONV, _define_partial_conv)):
        if not _already_defined(trtp, name):
            define(trtp)


def _types(trtp):
    """The annotation types tensorrt.plugin reads from the plugin functions' signatures."""
    Desc = trtp.TensorDesc
    AotResult = Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]
    Int = npt.NDArray[np.int32]  # onnx-tensorrt: ONNX INT attribute -> 1-element kINT32 field
    Float = npt.NDArray[np.float32]  # ONNX FLOAT attribute -> 1-element kFLOAT32 field
    return Desc, AotResult, Int, Float


def _combinations(trtp, name):
    return [trtp.AutoTuneCombination(types, "LINEAR") for types in pd.type_combinations(name)]


def _define_assa(trtp) -> None:
    Desc, AotResult, Int, Float = _types(trtp)

    @trtp.register(pd.plugin_id(pd.ASSA))
    def assa_desc(q: Desc, kv: Desc, bias: Desc, mix: Desc, num_heads: Int, scale: Float) -> Desc:
        pd.check_assa_shapes(_dims(q), _dims(kv), _dims(bias), _dims(mix), None, _int(num_heads))
        return q.like()

    @trtp.aot_impl(pd.plugin_id(pd.ASSA))
    def assa_aot(q: Desc, kv: Desc, bias: Desc, mix: Desc, num_heads: Int, scale: Float,
                 outputs: Tuple[Desc], tactic: int) -> AotResult:
        spec = pd.assa_spec(_dims(q), _int(num_heads), _float(scale), _dtype(q), _dtype(bias), _dtype(mix), None)
        grid, scalars = pd.assa_launch(spec, q.shape_expr[0])
        return _launch(trtp, _kernel(spec), grid, scalars)

    @trtp.autotune(pd.plugin_id(pd.ASSA))
    def assa_autotune(q: Desc, kv: Desc, bias: Desc, mix: Desc,
                      outputs: Tuple[Desc]) -> List[trtp.AutoTuneCombination]:
        return _combinations(trtp, pd.ASSA)


def _define_assa_shifted(trtp) -> None:
    Desc, AotResult, Int, Float = _types(trtp)

    @trtp.register(pd.plugin_id(pd.ASSA_SHIFTED))
    def assa_masked_desc(q: Desc, kv: Desc, bias: Desc, mix: Desc, region_ids: Desc, num_heads: Int,
                         scale: Float) -> Desc:
        pd.check_assa_shapes(_dims(q), _dims(kv), _dims(bias), _dims(mix), _dims(region_ids), _int(num_heads))
        return q.like()

    @trtp.aot_impl(pd.plugin_id(pd.ASSA_SHIFTED))
    def assa_masked_aot(q: Desc, kv: Desc, bias: Desc, mix: Desc, region_ids: Desc, num_heads: Int,
                        scale: Float, outputs: Tuple[Desc], tactic: int) -> AotResult:
        spec = pd.assa_spec(_dims(q), _int(num_heads), _float(scale), _dtype(q), _dtype(bias), _dtype(mix),
                            _dtype(region_ids))
        grid, scalars = pd.assa_launch(spec, q.shape_expr[0], region_ids.shape_expr[0])
        return _launch(trtp, _kernel(spec), grid, scalars)

    @trtp.autotune(pd.plugin_id(pd.ASSA_SHIFTED))
    def assa_masked_autotune(q: Desc, kv: Desc, bias: Desc, mix: Desc, region_ids: Desc,
                             outputs: Tuple[Desc]) -> List[trtp.AutoTuneCombination]:
        return _combinations(trtp, pd.ASSA_SHIFTED)


def _define_partial_conv(trtp) -> None:
    Desc, AotResult, _, _ = _types(trtp)

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
        return _combinations(trtp, pd.PARTIAL_CONV)
