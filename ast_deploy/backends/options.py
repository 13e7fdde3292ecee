"""Per-runtime options for ``Runner(source, options=...)``: one small dataclass per backend, so the
Runner's own signature stays small."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class TensorRTOptions:
    """Options of a TensorRT / TensorRT-RTX engine.

    ``refit_from``: the ONNX a weight-stripped engine (``ast-build --strip-weights``) was built from;
    its weights are refitted into the engine when it is loaded (``trt.Refitter`` +
    ``trt.OnnxParserRefitter``, TensorRT >= 10.0 and TensorRT-RTX)."""
    refit_from: str | os.PathLike | None = None
