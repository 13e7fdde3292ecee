"""Inference backends: each one loads a model and runs float32 NCHW batches through it.

PyTorch (``pytorch.py``, the Runner's own), ONNX Runtime and TensorRT, behind the interface in
``base.py``. ``open_backend`` opens a model file by its suffix; nothing heavy is imported until then.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..metadata import DEFAULT_SIZE_MULTIPLE
from ..shapes import ShapeRange
from .base import Backend, BackendError, ShapeError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


def backend_kind(source: str | os.PathLike) -> str | None:
    """"onnx", "tensorrt", or None for a file no backend here runs (a checkpoint, say)."""
    suffix = Path(source).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    return None


def _cuda_index(device: str) -> int:
    _, _, index = str(device).partition(":")
    return int(index) if index else 0


def open_backend(source: str | os.PathLike, device: str = "cpu", **options) -> Backend:
    """Open an ONNX model or a TensorRT engine for ``device`` (the Runner's: "cpu", "cuda", "cuda:N").

    ONNX Runtime: "cpu" runs on the CPU, "cuda[:N]" requires its CUDA provider; ``providers=``
    ("auto", "cpu", "cuda", "tensorrt") and ``intra_op_threads=`` override. TensorRT engines run on
    a GPU only: "cuda:N" picks it, "cpu" (the Runner's default) means GPU 0.
    """
    kind = backend_kind(source)
    on_cuda = str(device).startswith("cuda")
    if kind == "onnx":
        from .onnxrt import OnnxRuntimeBackend

        options.setdefault("providers", "cuda" if on_cuda else "cpu")
        if on_cuda and _cuda_index(device):
            options.setdefault("provider_options", {"CUDAExecutionProvider": {"device_id": _cuda_index(device)}})
        return OnnxRuntimeBackend(source, **options)
    if kind == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(source, device=_cuda_index(device) if on_cuda else 0, **options)
    raise ValueError(f"{source}: not an ONNX model ({', '.join(ONNX_SUFFIXES)}) "
                     f"or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)})")


def hw_range(shape_range: ShapeRange | None):
    """``((min H, min W), (max H, max W))`` of a backend's shape range, unbounded sides as
    ``sys.maxsize`` (the form ``protocols.fit_to_shape_range`` takes), or None."""
    if shape_range is None:
        return None
    (_, min_h, min_w), (_, max_h, max_w) = shape_range
    return (min_h, min_w), (max_h or sys.maxsize, max_w or sys.maxsize)


__all__ = ["DEFAULT_SIZE_MULTIPLE", "Backend", "BackendError", "ShapeError", "ShapeRange", "backend_kind",
           "hw_range", "open_backend"]
