"""TensorRT engine backend: deserialize a ``.plan`` / ``.engine`` and run it with ``execute_async_v3``.

No PyTorch: device buffers and the stream come from Polygraphy's CUDA wrapper (``polygraphy.cuda``,
ctypes over the CUDA runtime ``libcudart``), so an engine runs where only TensorRT and the CUDA
runtime are installed (Jetson's pip torch has no CUDA). Everything heavy is imported lazily.

An engine built with the AST plugins embeds their kernels (ahead-of-time PTX): running it needs no
plugin creators, no Triton and no Python plugin code.

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

import ctypes
import os
import threading
from pathlib import Path

import numpy as np

from ..budget import Cost
from ..engines.cache import read_sidecar
from ..engines.runtimes import RTX, RUNTIME_NAMES, import_tensorrt_rtx
from ..engines.target import Target, current_target, import_tensorrt
from ..metadata import DEFAULT_SIZE_MULTIPLE
from ..shapes import ShapeProfile, format_shape
from .base import Backend, BackendError, ShapeError


def explain_deserialize_failure(path, sidecar: dict | None, current: Target) -> str:
    """Why an engine would not load, comparing where it was built (sidecar) with this machine."""
    head = f"TensorRT could not deserialize the engine {str(path)!r}."
    here = current.describe()
    if not sidecar:
        return (f"{head} No sidecar JSON ({Path(path).name}.json) says where it was built; this machine has "
                f"{here}. Engines run only with the TensorRT version and GPU model they were built for: "
                "rebuild it here with ast-build MODEL.onnx.")
    built = Target(str(sidecar.get("tensorrt")), str(sidecar.get("gpu")), str(sidecar.get("compute_capability")),
                   str(sidecar.get("runtime", "TensorRT")))
    onnx = (sidecar.get("onnx") or {}).get("path", "MODEL.onnx")
    if built != current:
        return (f"{head} It was built with {built.describe()}; this machine has {here}. Engines run only with "
                f"the TensorRT version and GPU model they were built for: rebuild it here with ast-build {onnx}.")
    plugins = sidecar.get("plugins") or {}
    if plugins.get("used"):
        return (f"{head} It was built for this TensorRT and GPU ({here}) with the AST plugins "
                f"({', '.join(plugins.get('ops', []))}), whose kernels are embedded in the engine (no plugin "
                f"registration is needed to run it), so the file is damaged or was written by another build: "
                f"rebuild it with ast-build {onnx}.")
    return f"{head} It was built for this TensorRT and GPU ({here}), so the file is damaged: rebuild it with ast-build {onnx}."


def runtime_module(path):
    """``tensorrt``, or ``tensorrt_rtx`` for an engine whose sidecar says TensorRT-RTX built it."""
    sidecar = read_sidecar(path) or {}
    return import_tensorrt_rtx() if sidecar.get("runtime") == RUNTIME_NAMES[RTX] else import_tensorrt()


def refit(trt, engine, onnx_path, logger, sidecar: dict | None) -> None:
    """Put the weights of ``onnx_path`` into a weight-stripped ``engine`` (``ast-build --strip-weights``).
    The ONNX is read as the builder read it (RTX: its ast:: functions inlined, see engines.parser_input)."""
    from ..engines.parser_input import parser_input

    refitter = trt.Refitter(engine, logger)
    parser = trt.OnnxParserRefitter(refitter, logger)
    sidecar = sidecar or {}
    inline = sidecar.get("runtime") == RUNTIME_NAMES[RTX] and not (sidecar.get("plugins") or {}).get("used")
    if not parser.refit_from_bytes(parser_input(onnx_path, inline), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"cannot refit the engine from {onnx_path}: {errors or 'see the log above'}")
    if not refitter.refit_cuda_engine():
        raise BackendError(f"refitting the engine from {onnx_path} failed; missing weights: "
                           f"{list(refitter.get_missing_weights())[:5]}")


class EngineFromPath:
    """Loader: deserializes an engine file when called; returns ``(engine, sidecar or None)``.

    Engines with the AST plugins need nothing registered: their kernels are ahead-of-time PTX inside
    the engine (TensorRT ``tensorrt.plugin.aot_impl``)."""

    def __init__(self, path: str | os.PathLike, device: int = 0, refit_from=None):
        self.path = Path(path)
        self.device = device
        self.refit_from = refit_from

    def __call__(self):
        if not self.path.is_file():
            raise FileNotFoundError(f"engine {str(self.path)!r} does not exist")
        trt = runtime_module(self.path)
        sidecar = read_sidecar(self.path)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise BackendError(explain_deserialize_failure(self.path, sidecar, current_target(trt, self.device)))
        if self.refit_from is not None:
            refit(trt, engine, self.refit_from, logger, sidecar)
        elif ((sidecar or {}).get("options") or {}).get("strip_weights"):
            raise BackendError(f"{self.path.name} was built without its weights (--strip-weights): open it with "
                               "options=TensorRTOptions(refit_from=THE_ONNX) (ast_deploy.backends.options)")
        return engine, sidecar


def _np_dtype(trt, dtype):
    table = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}
    if dtype not in table:
        raise BackendError(f"engine I/O type {dtype} is not supported; AST engines take float32/float16 images")
    return np.dtype(table[dtype])


def _cuda():
    """Polygraphy's CUDA runtime wrapper (device buffers, streams); BackendError where there is no CUDA."""
    from polygraphy import cuda

    try:
        wrapper = cuda.wrapper()
        count = ctypes.c_int(0)
        wrapper.check(wrapper.handle.cudaGetDeviceCount(ctypes.byref(count)))
    except Exception as e:
        raise BackendError(f"a TensorRT engine needs a CUDA GPU, and the CUDA runtime sees none ({e})") from None
    if count.value < 1:
        raise BackendError("a TensorRT engine needs a CUDA GPU, and the CUDA runtime sees none")
    return cuda, count.value


class TensorRTBackend(Backend):
    """Runs a TensorRT engine (a path, or an ``EngineFromPath`` loader) on CUDA device ``device``."""

    def __init__(self, engine: str | os.PathLike | EngineFromPath, *, device: int = 0, options=None):
        refit_from = getattr(options, "refit_from", None)
        loader = engine if isinstance(engine, EngineFromPath) else EngineFromPath(engine, device, refit_from)
        trt = runtime_module(loader.path)
        cuda, count = _cuda()
        if not 0 <= loader.device < count:
            raise BackendError(f"no CUDA device {loader.device}: the CUDA runtime sees {count}")
        wrapper = cuda.wrapper()
        wrapper.check(wrapper.handle.cudaSetDevice(int(loader.device)))
        self._cuda, self._trt, self.device = cuda, trt, loader.device
        self.engine, self.sidecar = loader()
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"{loader.path}: expected one input and one output, found {inputs} and {outputs}")
        self._input, self._output = inputs[0], outputs[0]
        self._in_dtype = _np_dtype(trt, engine.get_tensor_dtype(self._input))
        self._out_dtype = _np_dtype(trt, engine.get_tensor_dtype(self._output))
        self.profile = ShapeProfile(*(tuple(int(d) for d in dims)
                                      for dims in engine.get_tensor_profile_shape(self._input, 0)))
        self.context = engine.create_execution_context()
        self.stream = cuda.Stream()
        self._x = cuda.DeviceArray.raw((0,))
        self._y = cuda.DeviceArray.raw((0,))
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
        context = self.context
        if context is None:
            raise BackendError(f"{self.name} is closed")
        with self._lock:
            x = np.ascontiguousarray(batch, dtype=self._in_dtype)
            if not context.set_input_shape(self._input, tuple(x.shape)):
                raise ShapeError(f"{self.name}: TensorRT refused input shape {tuple(x.shape)} "
                                 f"(profile {self.profile})")
            y = np.empty(tuple(context.get_tensor_shape(self._output)), dtype=self._out_dtype)
            self._x.resize((x.nbytes,))  # grows only: buffers are reused across batches
            self._y.resize((y.nbytes,))
            self._x.copy_from(x.view(np.uint8).reshape(-1), self.stream)
            if not (context.set_tensor_address(self._input, self._x.ptr)
                    and context.set_tensor_address(self._output, self._y.ptr)):
                raise BackendError(f"{self.name}: TensorRT refused a tensor address")
            if not context.execute_async_v3(self.stream.ptr):
                raise BackendError(f"{self.name}: execute_async_v3 failed (see TensorRT's log above)")
            self._y.copy_to(y.view(np.uint8).reshape(-1), self.stream)
            self.stream.synchronize()
        return y.astype(np.float32, copy=False)

    def memory_cost(self):
        """The engine's working set: its execution context's device memory is allocated once, at
        load, for the profile's largest shape (so it is already out of the free memory the budget
        is taken from); each call adds its input and output buffers and their float32 host copies."""

        per_pixel = 3 * (self._in_dtype.itemsize + self._out_dtype.itemsize + 4 + 4)
        context = getattr(self.engine, "device_memory_size_v2", None) or getattr(self.engine, "device_memory_size", 0)
        return Cost(float(per_pixel), 0.0, f"tensorrt I/O buffers (context memory {int(context)} B held since load)")

    def close(self) -> None:
        self.context = None
        self.engine = None
        for buffer in (getattr(self, "_x", None), getattr(self, "_y", None)):
            if buffer is not None:
                buffer.free()
        if getattr(self, "stream", None) is not None:
            self.stream.free()
            self.stream = None
