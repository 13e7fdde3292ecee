"""Per-runtime options: one small dataclass per backend, so the Runner's own keywords stay the same
whatever the runtime. ``Runner("model.onnx", runtime=OpenVINOOptions(mode="throughput"))`` (or
``options=OpenVINOOptions(...)``) runs OpenVINO with its settings; ``Runner("model.plan",
options=TensorRTOptions(refit_from="model.onnx"))`` refits a weight-stripped engine."""

from __future__ import annotations

import os
from dataclasses import dataclass

RUNTIMES = ("auto", "onnxruntime", "openvino")  # what runs an ONNX on the CPU; "auto" measures
OPENVINO_PRECISIONS = ("auto", "f32", "bf16", "f16")
OPENVINO_MODES = ("latency", "throughput")


@dataclass(frozen=True)
class TensorRTOptions:
    """Options of a TensorRT / TensorRT-RTX engine.

    ``refit_from``: the ONNX a weight-stripped engine (``ast-build --strip-weights``) was built from;
    its weights are refitted into the engine when it is loaded (``trt.Refitter`` +
    ``trt.OnnxParserRefitter``, TensorRT >= 10.0 and TensorRT-RTX)."""
    refit_from: str | os.PathLike | None = None


@dataclass(frozen=True)
class OpenVINOOptions:
    """OpenVINO on the CPU.

    ``threads``: INFERENCE_NUM_THREADS (None: OpenVINO's default, every core).
    ``precision``: INFERENCE_PRECISION_HINT; "auto" follows the export (FP32 -> f32; FP16 and INT8
    -> bf16 where the CPU has native BF16, else f32).
    ``mode``: PERFORMANCE_HINT; "throughput" runs parallel requests in streams of their own.
    ``cache_dir``: where the converted model and OpenVINO's compiled-model cache live (None: the
    package's cache folder; "" turns both caches off).
    ``channels_first_ffn``: run each FRFN channels-first (``backends.channels_first``; False: the graph
    as exported, for comparison)."""

    threads: int | None = None
    precision: str = "auto"
    mode: str = "latency"
    cache_dir: str | None = None
    channels_first_ffn: bool = True

    def __post_init__(self):
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"OpenVINOOptions.threads must be a positive integer or None, not {self.threads!r}")
        if self.precision not in OPENVINO_PRECISIONS:
            raise ValueError(f"OpenVINOOptions.precision must be one of {', '.join(OPENVINO_PRECISIONS)}, "
                             f"not {self.precision!r}")
        if self.mode not in OPENVINO_MODES:
            raise ValueError(f"OpenVINOOptions.mode must be one of {', '.join(OPENVINO_MODES)}, not {self.mode!r}")


def check_runtime(runtime) -> str | OpenVINOOptions:
    """``runtime`` as Runner takes it: a name of RUNTIMES or an options object; anything else is a
    ValueError naming what is accepted."""
    if isinstance(runtime, OpenVINOOptions):
        return runtime
    if isinstance(runtime, str) and runtime.strip().lower() in RUNTIMES:
        return runtime.strip().lower()
    raise ValueError(f"unknown runtime {runtime!r}: use {', '.join(RUNTIMES)} or an OpenVINOOptions(...)")
