"""Build a TensorRT engine from an AST ONNX model with Polygraphy's loaders.

Strongly typed: the precision is the ONNX's (FP32, FP16 from a converted graph, INT8 from Q/DQ
nodes); TensorRT 11 has no other mode, and 10.x gets the STRONGLY_TYPED network flag (11.x keeps the
flag as a deprecated no-op: NvInfer.h, ``NetworkDefinitionCreationFlag::kSTRONGLY_TYPED``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..recipes import RecipeError, load_recipe
from . import dla
from .cache import cache_key, default_engine_path, is_cached, sidecar_content, write_engine
from .onnx_info import OnnxInfo, inspect_onnx
from .plugins import resolve_plugins
from ..shapes import ProfileError, ShapeProfile
from .target import current_target, import_tensorrt, parse_device, select_device

log = logging.getLogger(__name__)

OPT_LEVELS = range(0, 6)  # IBuilderConfig.builder_optimization_level: 0..5, TensorRT's default is 3


def _recipe(recipe, task: str | None):
    """A recipe object as given, or loaded by task name: ``recipe`` if a string (required to load),
    else the ONNX's own task (a missing recipe then just means no profile from it)."""
    if recipe is not None and not isinstance(recipe, str):
        return recipe
    try:
        return load_recipe(recipe or task, required=recipe is not None)
    except RecipeError as e:
        raise ProfileError(str(e)) from None


def resolve_profile(info: OnnxInfo, shapes=None, recipe=None) -> ShapeProfile:
    """The optimization profile: ``shapes`` (a ShapeProfile or "MIN:OPT:MAX"), else the ONNX input's
    own shape when it is static (a recipe's range cannot fit it), else the recipe's; validated
    against the model."""
    if shapes is not None:
        profile = shapes if isinstance(shapes, ShapeProfile) else ShapeProfile.parse(shapes)
    elif info.is_static:
        profile = ShapeProfile.static(info.input_dims)
    else:
        profile = getattr(_recipe(recipe, info.task), "profile", None)
        if profile is None:
            if not info.is_static:
                dims = "x".join("?" if d is None else str(d) for d in info.input_dims)
                raise ProfileError(f"{info.path.name} has a dynamic input ({info.input_name}: {dims}) and no recipe "
                                   "gives its shapes: pass --shapes MIN:OPT:MAX, e.g. "
                                   "1x3x128x128:1x3x512x512:4x3x1024x1024")
            profile = ShapeProfile.static(info.input_dims)
    return profile.validate(info.size_multiple, info.input_dims)


def build_options(profile: ShapeProfile, input_name: str, plugins_used: bool, opt_level: int | None,
                  hardware_compat: bool, kernels: dict | None = None) -> dict:
    """The options that change the engine (they go into the cache key and the sidecar). ``kernels``:
    with the plugins, what their embedded PTX depends on (kernel sources' hash, Triton version, PTX
    target), so a kernel fix or a new Triton builds a new engine instead of reusing a stale one."""
    return {"input": input_name, "profile": profile.to_dict(), "plugins": plugins_used,
            "opt_level": opt_level, "hardware_compat": hardware_compat,
            # Polygraphy's CreateConfig clears TF32 unless asked: FP32 layers stay FP32 (parity >= 60 dB).
            "strongly_typed": True, "tf32": False, "kernels": kernels if plugins_used else None}


def hardware_compat_level(trt, enabled: bool):
    # AMPERE_PLUS: the engine runs on any Ampere or newer GPU (pyCore.cpp, enum HardwareCompatibilityLevel).
    return trt.HardwareCompatibilityLevel.AMPERE_PLUS if enabled else None


def make_loader_chain(poly_trt, onnx_path, input_name: str, profile: ShapeProfile, *, opt_level=None,
                      hardware_compatibility_level=None, timing_cache=None):
    """Polygraphy loaders that build the serialized engine when called; constructing them imports
    no TensorRT. ``poly_trt`` is the ``polygraphy.backend.trt`` module (or a stand-in in tests)."""
    network = poly_trt.NetworkFromOnnxPath(os.fspath(onnx_path), strongly_typed=True)
    config = poly_trt.CreateConfig(
        profiles=[poly_trt.Profile().add(input_name, min=profile.min, opt=profile.opt, max=profile.max)],
        load_timing_cache=None if timing_cache is None else os.fspath(timing_cache),
        builder_optimization_level=opt_level,
        hardware_compatibility_level=hardware_compatibility_level,
    )
    # EngineBytesFromNetwork, not EngineFromNetwork: the bytes are all we keep, written atomically by us.
    return poly_trt.EngineBytesFromNetwork(
        network, config=config, save_timing_cache=None if timing_cache is None else os.fspath(timing_cache))


def _kernel_target(target):
    """The plugins' PTX target for the build GPU (its compute capability, e.g. "8.7" -> 87)."""
    from .trt_plugins import kernel_prerequisites

    try:
        major, minor = (int(p) for p in target.compute_capability.split("."))
        capability = 10 * major + minor
    except ValueError:
        capability = None
    return kernel_prerequisites(capability)


def build_engine(onnx_path, out=None, *, shapes=None, plugins: str = "auto", timing_cache=None,
                 opt_level: int | None = None, hardware_compat: bool = False, recipe=None,
                 force: bool = False, device: int | str = 0, dla_core: int | None = None,
                 gpu_fallback: bool = False) -> Path:
    """Build (or reuse from the cache) a TensorRT engine for ``onnx_path``; return its path.

    ``out`` defaults to ``<onnx dir>/<onnx stem>.<cache key>.plan``; an existing ``out`` whose sidecar
    has the same cache key is reused unless ``force``. Raises ProfileError / ValueError on bad options,
    TensorRTNotInstalled where TensorRT cannot be imported, PluginError for ``plugins="on"`` without
    plugins (and see :mod:`.plugins` for ``off`` and ``hardware_compat``). ``device`` (``N`` or
    ``"cuda:N"``) is the GPU the engine is built on and for.
    """
    info = inspect_onnx(onnx_path)
    profile = resolve_profile(info, shapes, recipe)
    if opt_level is not None and opt_level not in OPT_LEVELS:
        raise ValueError(f"--opt-level must be between {OPT_LEVELS.start} and {OPT_LEVELS.stop - 1}, got {opt_level}")
    device = parse_device(device)
    trt = import_tensorrt()
    select_device(device)  # the builder, Triton's target query and the GPU description all use it
    target = current_target(trt, device)
    plugin_record = resolve_plugins(plugins, info.plugin_ops, hardware_compat=hardware_compat,
                                    prerequisites=lambda: _kernel_target(target))
    if plugins == "auto" and info.plugin_ops and not plugin_record["used"]:
        log.warning("ast-build: AST plugins not used (%s)", plugin_record["detail"])
    kernels = None
    if plugin_record["used"]:
        from .trt_plugins import kernel_fingerprint

        kernels = kernel_fingerprint(tuple(plugin_record.get("target") or (None, None)))
    dla_options = dla.prepare(trt, info.path, dla_core, gpu_fallback, profile=profile)
    options = build_options(profile, info.input_name, plugin_record["used"], opt_level, hardware_compat, kernels) | \
        dla.options_entry(dla_options)
    key = cache_key(info.sha256, target, options)
    out = Path(out) if out is not None else default_engine_path(onnx_path, key)
    if not force and is_cached(out, key):
        log.info("reusing %s (built from the same ONNX, TensorRT, GPU and options)", out)
        return out

    from polygraphy.backend import trt as poly_trt

    chain = make_loader_chain(poly_trt, info.path, info.input_name, profile, opt_level=opt_level,
                              hardware_compatibility_level=hardware_compat_level(trt, hardware_compat),
                              timing_cache=timing_cache)
    chain = dla.wrap_chain(poly_trt, trt, chain, dla_options)
    log.info("building %s for %s, shapes %s, %s", out.name, target.describe(), profile, plugin_record["detail"])
    start = time.perf_counter()
    engine_bytes = chain()
    seconds = time.perf_counter() - start
    write_engine(out, engine_bytes, dla.record(sidecar_content(key=key, engine_path=out, onnx=info, target=target,
                                                               profile=profile, options=options, plugins=plugin_record,
                                                               build_seconds=seconds), trt, dla_options, engine_bytes))
    log.info("wrote %s in %.1f s", out, seconds)
    return out
