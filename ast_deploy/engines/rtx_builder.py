"""Build a serialized TensorRT-RTX engine with the builder API itself (no Polygraphy).

Polygraphy 0.53 can drive TensorRT-RTX, but only when ``POLYGRAPHY_USE_TENSORRT_RTX=1`` is set before
it is first imported: its loaders bind ``tensorrt`` or ``tensorrt_rtx`` once per process
(``polygraphy/mod/trt_importer.py``), so one process could not build both kinds, it imports the
module name ``tensorrt_rtx`` that only the optional ``tensorrt-rtx-cu12`` package adds, and its logger
does not hand back the build log that the layer report is read from. The few calls are made here:
``Builder`` -> ``OnnxParser.parse`` -> config (profile, optimization level, target compute
capabilities, ``ProfilingVerbosity.DETAILED``, weight stripping) -> ``build_serialized_network``.

TensorRT-RTX is strongly typed (precision comes from the ONNX), has no DLA and no timing cache (it
tunes on the device, where its runtime cache keeps the JIT-compiled kernels).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .layers import layers_from_log
from .parser_input import parser_input
from .runtimes import compute_capability_enums

log = logging.getLogger(__name__)

# Where building a refittable (weight-stripped) engine needs a GPU: TensorRT-RTX 1.7's compiler fails in
# CPU-only mode with "MyelinCheckException: graph_jit.cpp:278: CHECK(status == CUDA_SUCCESS) failed".
STRIP_NEEDS_GPU = ("weight-stripped engines are refittable, and TensorRT-RTX builds refittable engines only with a "
                   "GPU (without one its compiler fails: MyelinCheckException graph_jit.cpp:278 CHECK(status == "
                   "CUDA_SUCCESS)); build with --strip-weights on a machine with an RTX GPU")


class BuildFailed(RuntimeError):
    """The parser or the builder refused; the message holds their own errors."""


@dataclass
class BuildResult:
    engine: bytes
    layers: list | None
    warnings: list = field(default_factory=list)


def _logger(trt):
    class Capture(trt.ILogger):
        """Keeps every message (the layer report is a VERBOSE one) and passes warnings on."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[object, str]] = []

        def log(self, severity, msg):
            self.messages.append((severity, msg))
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                log.error("TensorRT-RTX: %s", msg)
            elif severity == trt.ILogger.WARNING:
                log.warning("TensorRT-RTX: %s", msg)

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR)]

    return Capture()


def parse_network(trt, builder, logger, onnx_path, inline_functions: bool):
    network = builder.create_network(0)  # strongly typed: TensorRT-RTX has no other mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(parser_input(onnx_path, inline_functions), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildFailed(f"the TensorRT-RTX ONNX parser refused {onnx_path}: {errors}")
    return network, parser


def configure(trt, builder, network, input_name, profile, *, opt_level, compute_capabilities, strip_weights):
    config = builder.create_builder_config()
    shapes = builder.create_optimization_profile()
    shapes.set_shape(input_name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(shapes)
    if opt_level is not None:
        config.builder_optimization_level = opt_level
    targets = compute_capability_enums(trt, compute_capabilities) if compute_capabilities else \
        [trt.ComputeCapability.CURRENT]
    config.num_compute_capabilities = len(targets)
    for i, capability in enumerate(targets):
        config.set_compute_capability(capability, i)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the layer report
    if strip_weights:
        # STRIP_PLAN leaves the refittable weights out; REFIT_IDENTICAL: they are refitted with the
        # very weights of this ONNX, so the builder may still optimize around them.
        config.set_flag(trt.BuilderFlag.STRIP_PLAN)
        config.set_flag(trt.BuilderFlag.REFIT_IDENTICAL)
    return config


def build_rtx(trt, onnx_path, input_name: str, profile, *, opt_level=None, compute_capabilities=(),
              strip_weights: bool = False, inline_functions: bool = True) -> BuildResult:
    """Parse ``onnx_path`` and build a serialized engine for ``compute_capabilities`` (e.g. (86, 89);
    empty: the GPU at hand); ``inline_functions``: parse the ONNX with its ``ast`` functions inlined
    (see :mod:`.parser_input`; not when the plugins are to replace them)."""
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network, _parser = parse_network(trt, builder, logger, onnx_path, inline_functions)
    config = configure(trt, builder, network, input_name, profile, opt_level=opt_level,
                       compute_capabilities=compute_capabilities, strip_weights=strip_weights)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = logger.errors()
        detail = "; ".join(errors[-3:]) or "no error message"
        if strip_weights and any("CUDA_SUCCESS" in e for e in errors):
            raise BuildFailed(f"{STRIP_NEEDS_GPU}. TensorRT-RTX said: {detail}")
        raise BuildFailed(f"TensorRT-RTX could not build the engine: {detail}")
    messages = [m for _, m in logger.messages]
    warnings = [m for s, m in logger.messages if s == trt.ILogger.WARNING]
    return BuildResult(engine=bytes(plan), layers=layers_from_log(messages), warnings=warnings)
