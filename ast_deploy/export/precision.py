"""Hook for reduced-precision graphs (FP16, INT8): filled in by the precision issue.

TensorRT 11 is strongly typed, so precision is a property of the ONNX graph (an FP16-converted
graph, or explicit Q/DQ nodes for INT8) rather than a builder flag; this step rewrites the validated
FP32 ONNX before any engine is built, and the result is validated against the recipe's tolerance
for that precision.
"""

from __future__ import annotations

import os
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")


class PrecisionNotAvailable(RuntimeError):
    """The requested precision is not implemented yet."""


def ensure_available(precision: str, calib_dir: str | os.PathLike | None = None) -> None:
    """Raise :class:`PrecisionNotAvailable` unless ``precision`` can be produced (checked before export)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "fp32":
        raise PrecisionNotAvailable(
            f"--{precision} is not available yet: reduced-precision export is a later issue "
            "(TensorRT 11 needs the precision in the ONNX graph itself). Export FP32 for now.")


def apply_precision(onnx_path: str | os.PathLike, precision: str, *, recipe=None,
                    calib_dir: str | os.PathLike | None = None) -> Path:
    """Return the path of a ``precision`` version of the validated FP32 model at ``onnx_path``.

    The caller validates a returned path other than ``onnx_path`` against the recipe's tolerance
    for ``precision``.
    """
    ensure_available(precision, calib_dir)
    return Path(onnx_path)
