"""ONNX Runtime backend: CUDA when it really runs there, CPU otherwise, TensorRT EP on request.

Thread safety: ``InferenceSession.run`` may be called from several threads at once (ONNX Runtime
documents concurrent ``Run`` calls on one session as safe), so one backend serves many threads
without a lock; ``tests/test_backends.py::test_ort_backend_is_thread_safe`` checks it here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from .. import metadata as meta
from ..shapes import ShapeRange
from .base import Backend, BackendError

# What ``providers=`` accepts, and the execution providers each asks for, best first.
PROVIDER_CHOICES = {
    "auto": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_ORT_ERROR, _ORT_WARNING = 3, 2  # onnxruntime log severities; 2 is its default

log = logging.getLogger(__name__)

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


@contextlib.contextmanager
def _quiet_ort_logging(ort):
    """A missing CUDA / TensorRT library makes session creation log a long list of load failures
    before it falls back to the CPU; we report the fallback ourselves."""
    ort.set_default_logger_severity(_ORT_ERROR)
    try:
        yield
    finally:
        ort.set_default_logger_severity(_ORT_WARNING)


class SessionFromOnnx:
    """Loader: builds an ``onnxruntime.InferenceSession`` when called (Polygraphy-style functor).

    Polygraphy's own ``SessionFromOnnx`` offers no intra-op thread count or log level, hence this one.
    """

    def __init__(self, path: str | os.PathLike, providers: str = "auto", intra_op_threads: int | None = None,
                 provider_options: dict | None = None):
        if providers not in PROVIDER_CHOICES:
            raise ValueError(f"providers must be one of {', '.join(PROVIDER_CHOICES)}, not {providers!r}")
        self.path = Path(path)
        self.providers = providers
        self.intra_op_threads = intra_op_threads
        self.provider_options = provider_options or {}

    def __call__(self):
        import onnxruntime as ort

        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {str(self.path)!r} does not exist")
        available = ort.get_available_providers()
        wanted = [p for p in PROVIDER_CHOICES[self.providers] if p in available]
        first = PROVIDER_CHOICES[self.providers][0]
        if self.providers in ("cuda", "tensorrt") and first not in available:
            raise BackendError(f"{first} is not available in this onnxruntime build (available: {', '.join(available)}); "
                               "install onnxruntime-gpu, or use providers='cpu'")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = _ORT_ERROR
        if self.intra_op_threads:
            options.intra_op_num_threads = int(self.intra_op_threads)
        providers = [(p, self.provider_options[p]) if p in self.provider_options else p for p in wanted]
        with _quiet_ort_logging(ort):
            session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        # A listed provider is no proof: without its CUDA libraries ORT silently drops to the CPU.
        active = session.get_providers()
        if self.providers in ("cuda", "tensorrt") and active[0] != first:
            raise BackendError(f"{first} is installed but could not start (session runs on {active[0]}): "
                               "check the CUDA / cuDNN / TensorRT libraries onnxruntime-gpu needs")
        if len(wanted) > 1 and active[0] != wanted[0]:
            log.warning("%s is listed but could not start (missing CUDA libraries?); running on %s",
                        wanted[0], active[0])
        return session


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX model (a path, or a ``SessionFromOnnx`` loader for non-default options)."""

    def __init__(self, model: str | os.PathLike | SessionFromOnnx, *, providers: str = "auto",
                 intra_op_threads: int | None = None, provider_options: dict | None = None):
        loader = (model if isinstance(model, SessionFromOnnx)
                  else SessionFromOnnx(model, providers, intra_op_threads, provider_options))
        self.session = loader()
        self.path = loader.path
        self.provider = self.session.get_providers()[0]
        self.name = f"onnxruntime[{self.provider.removesuffix('ExecutionProvider')}]:{self.path.name}"
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"{self.path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self._input, self._output = inputs[0].name, outputs[0].name
        self._input_type = _NP_TYPES.get(inputs[0].type)
        if self._input_type is None:
            raise BackendError(f"{self.path}: input {self._input!r} has type {inputs[0].type}; AST takes float images")
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.metadata = dict(metadata)
        self.size_multiple = meta.size_multiple(metadata)
        self.shape_range = shape_range_from_dims(inputs[0].shape, self.size_multiple)
        self.intra_op_threads = loader.intra_op_threads
        self._run_options = arena_shrinking_run_options(self.provider)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self._output], {self._input: batch.astype(self._input_type, copy=False)},
                                  self._run_options)
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.session = None


def arena_shrinking_run_options(provider: str):
    """Run options that hand the memory arena's free chunks back after every run, so the arena does
    not keep the peak of the largest image for the session's life (measured in
    benchmarks/RESULTS.md, memory section: same speed as the default arena, RSS back to the
    baseline after each run; disabling the arena also bounds it but peaks higher at small sizes)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    devices = "cpu:0" if provider == "CPUExecutionProvider" else "cpu:0;gpu:0"
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", devices)
    return options


def shape_range_from_dims(dims, size_multiple: int) -> ShapeRange | None:
    """Shape range of an ONNX input ``[B, C, H, W]`` whose dims are ints (static) or names / None
    (dynamic). None when batch, H and W are all dynamic."""
    if len(dims) != 4:
        raise BackendError(f"expected a 4-D image input [B, 3, H, W], the model's input has dims {list(dims)}")
    bhw = [dims[0], dims[2], dims[3]]
    static = [isinstance(d, int) and d > 0 for d in bhw]
    if not any(static):
        return None
    low = tuple(d if s else (1 if i == 0 else size_multiple) for i, (d, s) in enumerate(zip(bhw, static)))
    high = tuple(d if s else None for d, s in zip(bhw, static))
    return low, high
