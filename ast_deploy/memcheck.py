"""A plan that checks itself: the real peak of each backend call, measured against the budget, and
the allocation failures of every backend recognised as such.

- :func:`meter_for` gives the meter of a backend: the process's resident set for the CPU backends
  (the kernel's peak mark, VmHWM, moved down to the current RSS before each call: see
  ``bench.rebase_peak_rss``, which keeps the process's own peak for whoever measures around it),
  PyTorch's allocator peak on a CUDA device, the device's free memory (cudaMemGetInfo) around the
  first call of a photo for ONNX Runtime on a GPU; None where the cost is known exactly (a TensorRT
  engine's device memory) or nothing runs here (a server).
- :class:`GuardedInfer` runs the batches of one plan through the meter and hands each call's
  measured peak to a callback when it passes the budget by more than :data:`OVERRUN`.
- :func:`is_out_of_memory` tells an allocation failure from other errors: ``MemoryError``, ONNX
  Runtime's ``RuntimeException`` / ``Fail`` with ``bad_alloc`` or ``Failed to allocate``, PyTorch's
  ``OutOfMemoryError`` and "can't allocate memory", TensorRT's and CUDA's out-of-memory errors.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from .bench import current_peak_mark, rebase_peak_rss
from .budget import current_rss, query_cuda_free

OVERRUN = 1.1  # a call that peaks more than 10 % over the budget corrects the cost and the plan

_OOM_TEXT = ("bad_alloc", "failed to allocate", "out of memory", "outofmemory", "can't allocate memory",
             "cannot allocate memory", "cudaerrormemoryallocation", "memory allocation failed")


def is_out_of_memory(error: BaseException) -> bool:
    """True for an allocation failure of any backend (see the module's docstring)."""
    if isinstance(error, MemoryError):
        return True
    text = f"{type(error).__name__} {error}".lower()
    return any(marker in text for marker in _OOM_TEXT)


class RssMeter:
    """Peak resident growth of this process during one call (CPU backends). Calls from several
    threads at once are not measured (the resident set is the process's): the first wins."""

    _lock = threading.Lock()

    def measure(self, call: Callable[[], np.ndarray]) -> tuple[np.ndarray, float | None]:
        if not self._lock.acquire(blocking=False):
            return call(), None
        try:
            before = current_rss()
            moved = rebase_peak_rss()
            mark0 = current_peak_mark()
            out = call()
            mark = current_peak_mark()
            if mark is None or mark0 is None or (not moved and mark <= mark0):
                return out, None  # no kernel mark, or an old mark above this call's peak: not known
            return out, float(max(0, mark - before))
        finally:
            self._lock.release()


class TorchCudaMeter:
    """PyTorch's allocator peak on a CUDA device during one call."""

    def __init__(self, device):
        self.device = device

    def measure(self, call):
        import torch

        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        out = call()
        torch.cuda.synchronize(self.device)
        return out, float(max(0, torch.cuda.max_memory_allocated(self.device) - before))


class OrtCudaMeter:
    """ONNX Runtime on a GPU: the device's free memory before and after the first call of a photo,
    run without shrinking the arena so that it still holds that call's peak (as the probe does,
    budget._probe_onnxruntime_gpu); later calls run as usual (the next one hands the arena back).
    UNTESTED: written without a GPU."""

    def __init__(self, backend, index: int):
        self.backend, self.index, self.done = backend, index, False

    def measure(self, call):
        if self.done:
            return call(), None
        import onnxruntime as ort

        self.done = True
        before = query_cuda_free(self.index)
        shrinking, self.backend._run_options = self.backend._run_options, ort.RunOptions()
        try:
            out = call()
            after = query_cuda_free(self.index)
        finally:
            self.backend._run_options = shrinking
        return out, float(max(0, before - after))


def meter_for(backend):
    """A fresh meter for one photo on ``backend`` (see the module's docstring), or None. A backend
    whose network runs in another process gives its own (``backend.meter()``: the served core's)."""
    own = getattr(backend, "meter", None)
    if callable(own):
        return own()
    known = getattr(backend, "memory_cost", None)
    if getattr(backend, "applies_protocol", False) or callable(known) and known() is not None:
        return None  # a server plans for itself; a TensorRT engine's device memory is known exactly
    device = getattr(backend, "device", None)
    if getattr(device, "type", None) == "cuda":
        return TorchCudaMeter(device)
    provider = str(getattr(backend, "provider", ""))
    if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        try:
            options = backend.session.get_provider_options().get(provider, {})
            index = int(options.get("device_id", 0))
        except (AttributeError, KeyError, TypeError, ValueError):
            index = 0
        return OrtCudaMeter(backend, index)
    return RssMeter()


class GuardedInfer:
    """``infer`` for one plan: batches of at most ``step`` images per backend call, each measured by
    ``meter`` (None: not measured); ``on_overrun(n, h, w, used)`` is called after a call of n x h x w
    that used more than OVERRUN x ``budget`` and more than OVERRUN x what ``predict(n, h, w)`` says
    (a plan that knew it is over the budget, its smallest tile, is not corrected for it), and
    returns the step from then on (or raises to re-plan). ``done`` counts the images (tiles) run."""

    def __init__(self, backend, step: int, meter, budget: float, on_overrun, predict=None):
        self.backend, self.step, self.meter = backend, max(1, step), meter
        self.budget, self.on_overrun = budget, on_overrun
        self.predict = predict or (lambda n, h, w: 0.0)
        self.done = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outputs, i = [], 0
        while i < len(batch):
            part = batch[i : i + self.step]
            if self.meter is None:
                out, used = self.backend.infer(part), None
            else:
                out, used = self.meter.measure(lambda: self.backend.infer(part))
            outputs.append(out)
            i += len(part)
            self.done += len(part)
            if used is not None and used > OVERRUN * max(self.budget, self.predict(len(part), *part.shape[2:])):
                self.step = max(1, self.on_overrun(len(part), part.shape[2], part.shape[3], used))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
