"""Build a TensorRT engine (Polygraphy's loaders) or a TensorRT-RTX engine (its builder API) from an AST ONNX model.

Strongly typed: the precision is the ONNX's (FP32, FP16 from a converted graph, INT8 from Q/DQ
nodes); TensorRT 11 has no other mode, and 10.x gets the STRONGLY_TYPED network flag (11.x keeps the
flag as a deprecated no-op: NvInfer.h, ``NetworkDefinitionCreationFlag::kSTRONGLY_TYPED``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..recipes import RecipeError, load_recipe
from . import dla
from .cache import cache_key, default_engine_path, is_cached, sidecar_content, write_engine
from .layer_checks import check_layers
from .layers import summary
from .onnx_info import OnnxInfo, inspect_onnx
from .plugins import resolve_plugins
from .runtimes import (FILE_TAGS, RTX, RUNTIME_NAMES, TARGETS, TENSORRT, compute_capability_enums, dotted,
                       import_tensorrt_rtx, parse_compute_capabilities)
from ..shapes import ProfileError, ShapeProfile
from .target import Target, current_target, describe_gpu, import_tensorrt, parse_device, select_device

AHEAD_OF_TIME = "none (built ahead of time)"  # the GPU of an RTX engine built for named compute capabilities

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
                  hardware_compat: bool, kernels: dict | None = None, strip_weights: bool = False) -> dict:
    """The options that change the engine (they go into the cache key and the sidecar). ``kernels``:
    with the plugins, what their embedded PTX depends on (kernel sources' hash, Triton version, PTX
    target), so a kernel fix or a new Triton builds a new engine instead of reusing a stale one."""
    return {"input": input_name, "profile": profile.to_dict(), "plugins": plugins_used,
            "opt_level": opt_level, "hardware_compat": hardware_compat,
            # Polygraphy's CreateConfig clears TF32 unless asked: FP32 layers stay FP32 (parity >= 60 dB).
            "strongly_typed": True, "tf32": False, "kernels": kernels if plugins_used else None,
            "strip_weights": strip_weights}


def hardware_compat_level(trt, enabled: bool):
    # AMPERE_PLUS: the engine runs on any Ampere or newer GPU (pyCore.cpp, enum HardwareCompatibilityLevel).
    return trt.HardwareCompatibilityLevel.AMPERE_PLUS if enabled else None


def make_loader_chain(poly_trt, onnx_path, input_name: str, profile: ShapeProfile, *, opt_level=None,
                      hardware_compatibility_level=None, timing_cache=None, strip_weights: bool = False):
    """Polygraphy loaders that build the serialized engine when called; constructing them imports
    no TensorRT. ``poly_trt`` is the ``polygraphy.backend.trt`` module (or a stand-in in tests)."""
    network = poly_trt.NetworkFromOnnxPath(os.fspath(onnx_path), strongly_typed=True)
    config = poly_trt.CreateConfig(
        profiles=[poly_trt.Profile().add(input_name, min=profile.min, opt=profile.opt, max=profile.max)],
        load_timing_cache=None if timing_cache is None else os.fspath(timing_cache),
        builder_optimization_level=opt_level,
        hardware_compatibility_level=hardware_compatibility_level,
        strip_plan=strip_weights or None,  # STRIP_PLAN (+ REFIT_IDENTICAL below): no weights in the plan
    )
    if strip_weights:
        config = poly_trt.PostprocessConfig(config, _refit_identical)
    # EngineBytesFromNetwork, not EngineFromNetwork: the bytes are all we keep, written atomically by us.
    return poly_trt.EngineBytesFromNetwork(
        network, config=config, save_timing_cache=None if timing_cache is None else os.fspath(timing_cache))


def _refit_identical(builder, network, config):
    """A weight-stripped TensorRT engine is refitted with the ONNX's own weights (TensorRT >= 10.0
    ``BuilderFlag.REFIT_IDENTICAL``), so the builder may still optimize around them."""
    import tensorrt as trt

    config.set_flag(trt.BuilderFlag.REFIT_IDENTICAL)


def _kernel_target(target):
    """The plugins' PTX target for the build GPU (its compute capability, e.g. "8.7" -> 87)."""
    from .trt_plugins import kernel_prerequisites

    try:
        major, minor = (int(p) for p in target.compute_capability.split("."))
        capability = 10 * major + minor
    except ValueError:
        capability = None
    return kernel_prerequisites(capability)


@dataclass
class _Job:
    """What differs between the runtimes: the module, the target, the plugins' record, the options
    that go into the cache key, and ``make()`` -> (engine bytes, layer report or None)."""
    trt: object
    target: Target
    plugins: dict
    options: dict
    make: Callable[[], tuple]
    file_tag: str = ""
    finish: Callable[[dict, bytes], dict] = lambda sidecar, engine: sidecar


def _tensorrt_job(info, profile, *, plugins, timing_cache, opt_level, hardware_compat, device, dla_core,
                  gpu_fallback, strip_weights) -> _Job:
    """TensorRT through Polygraphy's loaders, on (and for) the GPU ``device``."""
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
    options = build_options(profile, info.input_name, plugin_record["used"], opt_level, hardware_compat, kernels,
                            strip_weights) | dla.options_entry(dla_options)

    def make():
        from polygraphy.backend import trt as poly_trt

        chain = make_loader_chain(poly_trt, info.path, info.input_name, profile, opt_level=opt_level,
                                  hardware_compatibility_level=hardware_compat_level(trt, hardware_compat),
                                  timing_cache=timing_cache, strip_weights=strip_weights)
        chain = dla.wrap_chain(poly_trt, trt, chain, dla_options)
        return chain(), None

    return _Job(trt, target, plugin_record, options, make,
                finish=lambda sidecar, engine: dla.record(sidecar, trt, dla_options, engine))


def _rtx_job(info, profile, *, plugins, timing_cache, opt_level, hardware_compat, device, dla_core,
             gpu_fallback, strip_weights, compute_capabilities) -> _Job:
    """TensorRT-RTX with its builder API (:mod:`.rtx_builder`): ahead of time for
    ``compute_capabilities``, or for the GPU ``device`` when none are named."""
    from .rtx_builder import build_rtx
    from .rtx_plugins import resolve_rtx_plugins

    for flag, given in (("--dla-core", dla_core is not None), ("--gpu-fallback", gpu_fallback),
                        ("--hardware-compat", hardware_compat), ("--timing-cache", timing_cache is not None)):
        if given:
            raise ValueError(f"{flag} is for --target tensorrt: TensorRT-RTX has no DLA, builds for the compute "
                             "capabilities named, and tunes on the device (its runtime cache)")
    trt = import_tensorrt_rtx()
    capabilities = parse_compute_capabilities(compute_capabilities) if compute_capabilities else ()
    if capabilities:
        compute_capability_enums(trt, capabilities)  # an unsupported one fails before anything is built
        target = Target(str(trt.__version__), AHEAD_OF_TIME, ",".join(dotted(c) for c in capabilities),
                        RUNTIME_NAMES[RTX])
    else:
        gpu, cc = describe_gpu(device)
        if gpu == "unknown":
            raise ValueError("no GPU here to build for: name the GPUs with --compute-capability, e.g. 86,89,120 "
                             "(RTX 30xx: 86, RTX 40xx: 89, RTX 50xx: 120)")
        target = Target(str(trt.__version__), gpu, cc, RUNTIME_NAMES[RTX])
    plugin_record = resolve_rtx_plugins(plugins, info.plugin_ops)
    options = build_options(profile, info.input_name, plugin_record["used"], opt_level, False, None, strip_weights)

    def make():
        result = build_rtx(trt, info.path, info.input_name, profile, opt_level=opt_level,
                           compute_capabilities=capabilities, strip_weights=strip_weights,
                           inline_functions=not plugin_record["used"])
        return result.engine, result.layers

    return _Job(trt, target, plugin_record, options, make, file_tag=FILE_TAGS[RTX])


def build_engine(onnx_path, out=None, *, target: str = TENSORRT, compute_capabilities=None,
                 strip_weights: bool = False, shapes=None, plugins: str = "auto", timing_cache=None,
                 opt_level: int | None = None, hardware_compat: bool = False, recipe=None,
                 force: bool = False, device: int | str = 0, dla_core: int | None = None,
                 gpu_fallback: bool = False) -> Path:
    """Build (or reuse from the cache) an engine for ``onnx_path``; return its path.

    ``target``: "tensorrt" (on the GPU ``device``: ``N`` or ``"cuda:N"``) or "rtx" (TensorRT-RTX, for
    the ``compute_capabilities`` named, e.g. "86,89,120", without a GPU; else for ``device``).
    ``out`` defaults to ``<onnx dir>/<onnx stem>[.rtx].<cache key>.plan``; an existing ``out`` whose
    sidecar has the same cache key is reused unless ``force``. ``strip_weights``: an engine without its
    weights, refitted from the ONNX where it runs. Raises ProfileError / ValueError on bad options,
    TensorRTNotInstalled where the runtime cannot be imported, PluginError for ``plugins="on"``
    without plugins (and see :mod:`.plugins` for ``off`` and ``hardware_compat``).
    """
    if target not in TARGETS:
        raise ValueError(f"--target must be one of {', '.join(TARGETS)}, not {target!r}")
    if compute_capabilities and target != RTX:
        raise ValueError("--compute-capability is for --target rtx (TensorRT builds for the GPU it runs on)")
    info = inspect_onnx(onnx_path)
    profile = resolve_profile(info, shapes, recipe)
    if opt_level is not None and opt_level not in OPT_LEVELS:
        raise ValueError(f"--opt-level must be between {OPT_LEVELS.start} and {OPT_LEVELS.stop - 1}, got {opt_level}")
    common = dict(plugins=plugins, timing_cache=timing_cache, opt_level=opt_level, hardware_compat=hardware_compat,
                  device=parse_device(device), dla_core=dla_core, gpu_fallback=gpu_fallback,
                  strip_weights=strip_weights)
    job = _rtx_job(info, profile, compute_capabilities=compute_capabilities, **common) if target == RTX else \
        _tensorrt_job(info, profile, **common)
    return _run_job(job, info, profile, out, force)


def _run_job(job: _Job, info, profile, out, force: bool) -> Path:
    """The steps both runtimes share: cache key, cache hit, build, layer report, engine + sidecar."""
    key = cache_key(info.sha256, job.target, job.options)
    out = Path(out) if out is not None else default_engine_path(info.path, key, job.file_tag)
    if not force and is_cached(out, key):
        log.info("reusing %s (built from the same ONNX, %s, GPU and options)", out, job.target.runtime)
        return out
    log.info("building %s for %s, shapes %s, %s", out.name, job.target.describe(), profile, job.plugins["detail"])
    start = time.perf_counter()
    engine_bytes, layers = job.make()
    seconds = time.perf_counter() - start
    sidecar = sidecar_content(key=key, engine_path=out, onnx=info, target=job.target, profile=profile,
                              options=job.options, plugins=job.plugins, build_seconds=seconds)
    sidecar["layers"] = layer_record(layers, info.path)
    write_engine(out, engine_bytes, job.finish(sidecar, engine_bytes))
    log.info("wrote %s (%d bytes) in %.1f s", out, len(engine_bytes), seconds)
    return out


def layer_record(layers, onnx_path) -> dict | None:
    """The sidecar's ``layers``: summary (layers per precision), the checks against the ONNX, the layers."""
    if layers is None:
        return None
    return {"summary": summary(layers), "checks": check_layers(layers, onnx_path), "layers": layers}
