"""ONNX Runtime backend: CUDA when it really runs there, CPU otherwise, TensorRT EP on request.

Thread safety: ``InferenceSession.run`` may be called from several threads at once (ONNX Runtime
documents concurrent ``Run`` calls on one session as safe), so one backend serves many threads
without a lock; ``tests/test_backends.py::test_ort_backend_is_thread_safe`` checks it here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .. import metadata as meta
from ..fileio import describe_file
from ..ort_session import open_session
from ..shapes import ShapeRange
from .base import Backend, BackendError

# What ``providers=`` accepts, and the execution providers each asks for, best first.
PROVIDER_CHOICES = {
    "auto": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}

log = logging.getLogger(__name__)

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


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
                               "install the GPU runtime (pip install -e \".[gpu]\" on a machine with an NVIDIA GPU), or run on "
                               "the CPU (--device cpu)")
        providers = [(p, self.provider_options[p]) if p in self.provider_options else p for p in wanted]
        try:
            session = open_session(self.path, providers, intra_op_threads=self.intra_op_threads)
        except Exception as e:  # InvalidProtobuf, Fail, InvalidGraph: pybind types outside RuntimeError
            raise BackendError(f"{self.path}: not a usable ONNX model ({describe_onnx_failure(self.path, e)})"
                               ) from None
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

    runtime = "onnxruntime"

    def __init__(self, model: str | os.PathLike | SessionFromOnnx, *, providers: str = "auto",
                 intra_op_threads: int | None = None, provider_options: dict | None = None,
                 size_multiple: int | None = None):
        """``size_multiple``: the H and W multiple of a model without ``ast.size_multiple`` metadata
        (one not made by ast-export); such a model is refused without it, as its sizes are unknown."""
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
        self.size_multiple, self.size_multiple_source = model_size_multiple(self.path, metadata, size_multiple)
        self.shape_range = shape_range_from_dims(inputs[0].shape, self.size_multiple)
        self.intra_op_threads = loader.intra_op_threads
        self._run_options = arena_shrinking_run_options(self.provider)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self._output], {self._input: batch.astype(self._input_type, copy=False)},
                                  self._run_options)
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.session = None


SIZE_MULTIPLE_KEY, TASK_KEY = meta.SIZE_MULTIPLE_KEY, meta.TASK_KEY


def model_size_multiple(path, metadata, given: int | None) -> tuple[int, str]:
    """(size multiple, where it comes from) of an ONNX model: its ``ast.size_multiple`` metadata, else
    ``given``; a model with neither is refused, saying what is missing."""
    value = metadata.get(SIZE_MULTIPLE_KEY)
    if value is not None:
        try:
            multiple = int(value)
        except ValueError:
            multiple = 0
        if multiple < 1:
            raise BackendError(f"{path}: its metadata {SIZE_MULTIPLE_KEY} = {value!r} is not a positive integer")
        if given is not None and given != multiple:
            raise BackendError(f"{path}: size multiple {given} was given, but the model's metadata says "
                               f"{SIZE_MULTIPLE_KEY} = {multiple}")
        return multiple, f"the model's {SIZE_MULTIPLE_KEY} metadata"
    if given is None:
        keys = ", ".join(sorted(metadata)) or "none"
        raise BackendError(
            f"{path} has no {SIZE_MULTIPLE_KEY} metadata (its metadata keys: {keys}), so it is not an ast-export "
            f"model and the image sizes it takes are unknown. If it is an image-to-image model, say its H and W "
            f"multiple with --size-multiple N (Runner(size_multiple=N)) and its protocol with --task or --protocol")
    return int(given), "the size multiple given for this model (it has no metadata)"


def describe_onnx_failure(path, error: Exception) -> str:
    """Why ONNX Runtime could not load ``path``, in a user's words."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        return f"cannot read it: {e}"
    name = type(error).__name__
    first = (str(error).strip().splitlines() or [""])[0]
    if size == 0:
        return "the file is empty (0 bytes)"
    if name == "InvalidProtobuf" or "Protobuf parsing failed" in first:

        looks = describe_file(head)
        return (f"the file is truncated or corrupt: it does not parse as an ONNX protobuf ({size} bytes"
                + (f", looks like {looks}" if looks else "") + "); export or download it again")
    return f"ONNX Runtime cannot load it: {first[:300]}"


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
