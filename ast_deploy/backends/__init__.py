"""Inference backends: each one loads a model and runs float32 NCHW batches through it.

PyTorch (``pytorch.py``, the Runner's own), ONNX Runtime and TensorRT, behind the interface in
``base.py``. ``open_backend`` opens a model file by its suffix; nothing heavy is imported until then.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import DEFAULT_SIZE_MULTIPLE, Backend, BackendError, ShapeError, ShapeRange

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


def open_backend(source: str | os.PathLike, **options) -> Backend:
    """Open an ONNX model (options: ``providers``, ``intra_op_threads``) or a TensorRT engine
    (options: ``device``)."""
    kind = backend_kind(source)
    if kind == "onnx":
        from .onnxrt import OnnxRuntimeBackend

        return OnnxRuntimeBackend(source, **options)
    if kind == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(source, **options)
    raise ValueError(f"{source}: not an ONNX model ({', '.join(ONNX_SUFFIXES)}) "
                     f"or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)})")


__all__ = ["DEFAULT_SIZE_MULTIPLE", "Backend", "BackendError", "ShapeError", "ShapeRange", "backend_kind",
           "open_backend"]
