"""Reduced-precision graphs (FP16, INT8) for the export pipeline; the work is in
:mod:`ast_deploy.precision`.

TensorRT 11 is strongly typed, so precision is a property of the ONNX graph (an FP16-converted
graph, or explicit Q/DQ nodes for INT8) rather than a builder flag; this step rewrites the validated
FP32 ONNX before any engine is built, and the result is validated against the recipe's tolerance
for that precision.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")


class PrecisionNotAvailable(RuntimeError):
    """The requested precision cannot be produced (e.g. its calibration images are unusable)."""


def ensure_available(precision: str, calib_dir: str | os.PathLike | None = None) -> None:
    """Raise :class:`PrecisionNotAvailable` unless ``precision`` can be produced (checked before export)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return
    from ..precision.calibration import CalibrationError, default_calibration_folder, list_images, load_image

    try:
        files = list_images(calib_dir if calib_dir is not None else default_calibration_folder())
    except (CalibrationError, FileNotFoundError) as e:
        raise PrecisionNotAvailable(str(e)) from e
    bad = []
    for path in files:  # every image is decoded now, not after the FP32 export
        try:
            load_image(path)
        except CalibrationError as e:
            bad.append(str(e).removeprefix("calibration image "))
    if bad:
        raise PrecisionNotAvailable(f"{len(bad)} of the {len(files)} calibration images cannot be read "
                                    "(remove or replace them):\n  " + "\n  ".join(bad))


def apply_precision(onnx_path: str | os.PathLike, precision: str, *, recipe=None,
                    calib_dir: str | os.PathLike | None = None, size_multiple: int = 128) -> Path:
    """Return the path of a ``precision`` version of the validated FP32 model at ``onnx_path``
    (written beside it as ``<stem>.<precision>.onnx``, with ``<stem>.<precision>.precision.json``).

    The caller validates a returned path other than ``onnx_path`` against the recipe's tolerance
    for ``precision``.
    """
    ensure_available(precision, calib_dir)
    if precision == "fp32":
        return Path(onnx_path)
    from ..precision.pipeline import make_precision

    min_psnr = recipe.tolerance(precision).psnr_min if recipe is not None else None
    path, _ = make_precision(onnx_path, precision, calib_dir=calib_dir, size_multiple=size_multiple,
                             min_psnr=min_psnr, log=lambda line: print(line, file=sys.stderr))
    return path
