"""TensorRT engine backend: deserialize a ``.plan`` / ``.engine`` and run it with ``execute_async_v3``
on torch CUDA tensors.

Thread safety: an ``IExecutionContext`` must not run two inferences at once, so the backend holds
one context and a lock; calls from several threads run one after the other. For parallel inference
on one GPU open one backend per thread (each deserializes its own engine and context).

TensorRT Python calls used here, as bound in TensorRT's ``python/src/infer/pyCore.cpp``:
``ICudaEngine.get_tensor_profile_shape(name, profile_index) -> [min, opt, max]``,
``IExecutionContext.set_input_shape(name, shape) -> bool``, ``set_tensor_address(name, int ptr) -> bool``,
``execute_async_v3(stream_handle: int) -> bool`` (enqueueV3 on that CUDA stream), and
``IRuntime.deserialize_cuda_engine(buffer) -> ICudaEngine | None``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..engines.cache import read_sidecar
from ..shapes import ShapeProfile, format_shape
from ..engines.target import Target, current_target, import_tensorrt
from ..metadata import DEFAULT_SIZE_MULTIPLE
from .base import Backend, BackendError, ShapeError


def explain_deserialize_failure(path, sidecar: dict | None, current: Target) -> str:
    """Why an engine would not load, comparing where it was built (sidecar) with this machine."""
    head = f"TensorRT could not deserialize the engine {str(path)!r}."
    here = current.describe()
    if not sidecar:
        return (f"{head} No sidecar JSON ({Path(path).name}.json) says where it was built; this machine has "
                f"{here}. Engines run only with the TensorRT version and GPU model they were built for: "
                "rebuild it here with ast-build MODEL.onnx.")
    built = Target(str(sidecar.get("tensorrt")), str(sidecar.get("gpu")), str(sidecar.get("compute_capability")))
    onnx = (sidecar.get("onnx") or {}).get("path", "MODEL.onnx")
    if built != current:
        return (f"{head} It was built with {built.describe()}; this machine has {here}. Engines run only with "
                f"the TensorRT version and GPU model they were built for: rebuild it here with ast-build {onnx}.")
    plugins = sidecar.get("plugins") or {}
    if plugins.get("used"):
        return (f"{head} It was built for this TensorRT and GPU ({here}) with the AST plugins "
                f"({', '.join(plugins.get('ops', []))}): if registering them failed here (see the log above), "
                f"that is the cause; otherwise the file is damaged: rebuild it with ast-build {onnx}.")
    return f"{head} It was built for this TensorRT and GPU ({here}), so the file is damaged: rebuild it with ast-build {onnx}."


class EngineFromPath:
    """Loader: deserializes an engine file when called; returns ``(engine, sidecar or None)``."""

    def __init__(self, path: str | os.PathLike, device: int = 0):
        self.path = Path(path)
        self.device = device

    def __call__(self):
        if not self.path.is_file():
            raise FileNotFoundError(f"engine {str(self.path)!r} does not exist")
        trt = import_tensorrt()
        sidecar = read_sidecar(self.path)
        if sidecar and (sidecar.get("plugins") or {}).get("used"):
            from ..engines.plugins import resolve_plugins

            try:  # an engine built with the plugins needs their creators registered to deserialize
                resolve_plugins("on", sidecar["plugins"].get("ops", []))
            except Exception:
                pass  # explained below if deserialization then fails
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise BackendError(explain_deserialize_failure(self.path, sidecar, current_target(trt, self.device)))
        return engine, sidecar


def _torch_dtype(trt, torch, dtype):
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dtype not in table:
        raise BackendError(f"engine I/O type {dtype} is not supported; AST engines take float32/float16 images")
    return table[dtype]


class TensorRTBackend(Backend):
    """Runs a TensorRT engine (a path, or an ``EngineFromPath`` loader) on CUDA device ``device``."""

    def __init__(self, engine: str | os.PathLike | EngineFromPath, *, device: int = 0):
        trt = import_tensorrt()
        import torch

        loader = engine if isinstance(engine, EngineFromPath) else EngineFromPath(engine, device)
        if not torch.cuda.is_available():
            raise BackendError("a TensorRT engine needs a CUDA GPU, and torch sees none "
                               "(no GPU here, or a CPU-only torch build)")
        self._torch, self._trt = torch, trt
        self.device = torch.device("cuda", loader.device)
        with torch.cuda.device(self.device):
            self.engine, self.sidecar = loader()
            engine = self.engine
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(inputs) != 1 or len(outputs) != 1:
                raise BackendError(f"{loader.path}: expected one input and one output, found {inputs} and {outputs}")
            self._input, self._output = inputs[0], outputs[0]
            self._in_dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(self._input))
            self._out_dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(self._output))
            self.profile = ShapeProfile(*(tuple(int(d) for d in dims)
                                          for dims in engine.get_tensor_profile_shape(self._input, 0)))
            self.context = engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        self.path = loader.path
        self.name = f"tensorrt:{self.path.name}"
        self.size_multiple = int((self.sidecar or {}).get("size_multiple", DEFAULT_SIZE_MULTIPLE))
        self.shape_range = self.profile.shape_range
        self._lock = threading.Lock()

    def check_batch(self, shape) -> None:
        try:
            super().check_batch(shape)
        except ShapeError as e:
            raise ShapeError(f"{e}. The engine's optimization profile is min {format_shape(self.profile.min)}, "
                             f"opt {format_shape(self.profile.opt)}, max {format_shape(self.profile.max)}; "
                             "rebuild with ast-build --shapes MIN:OPT:MAX to cover this size") from None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch, context = self._torch, self.context
        if context is None:
            raise BackendError(f"{self.name} is closed")
        with self._lock, torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            x = torch.from_numpy(batch).to(self.device, dtype=self._in_dtype)  # enqueued on self.stream
            if not context.set_input_shape(self._input, tuple(x.shape)):
                raise ShapeError(f"{self.name}: TensorRT refused input shape {tuple(x.shape)} "
                                 f"(profile {self.profile})")
            y = torch.empty(tuple(context.get_tensor_shape(self._output)), dtype=self._out_dtype, device=self.device)
            if not (context.set_tensor_address(self._input, x.data_ptr())
                    and context.set_tensor_address(self._output, y.data_ptr())):
                raise BackendError(f"{self.name}: TensorRT refused a tensor address")
            if not context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError(f"{self.name}: execute_async_v3 failed (see TensorRT's log above)")
            result = y.float().cpu()  # a blocking copy on self.stream: waits for the inference
        return result.numpy()

    def close(self) -> None:
        self.context = None
        self.engine = None
