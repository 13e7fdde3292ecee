"""ast-export's validation: an exported ONNX against the PyTorch model it came from, as a parity
check (``check_parity``) on seeded random batches of the recipe's NCHW shapes.

Each batch is one case, run through both sides at once (the batch dimension of a dynamic export is
part of what is checked) and judged with the recipe's tolerance: PSNR (data range 1, unclipped)
>= ``psnr_db`` and max|onnx - torch| / max|torch| <= ``max_rel``, with a finite output.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from ..ort_session import open_session
from .cases import Case, random_cases
from .parity import ParityReport, check_parity
from .tolerances import Tolerance

Shape = tuple[int, int, int, int]


def torch_function(model) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` (a ``torch.nn.Module``, on the CPU) as a function of a float32 NCHW array."""
    import torch

    model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    return run


def onnx_function(onnx_path: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",),
                  input_name: str = "input", output_name: str = "output") -> Callable[[np.ndarray], np.ndarray]:
    """The ONNX model at ``onnx_path`` in ONNX Runtime as a function of a float32 NCHW array."""
    session = open_session(onnx_path, providers)
    return lambda x: session.run([output_name], {input_name: x})[0]


def check_onnx(model, onnx_path: str | os.PathLike, cases: Sequence[Case], tolerance: Tolerance, *,
               precision: str = "fp32", input_name: str = "input", output_name: str = "output",
               providers: Sequence[str] = ("CPUExecutionProvider",),
               on_infer: Callable[[], None] | None = None) -> ParityReport:
    """Run ``model`` (PyTorch) and ``onnx_path`` (ONNX Runtime) on ``cases`` and judge the ONNX."""
    candidate = onnx_function(onnx_path, providers, input_name, output_name)
    return check_parity(torch_function(model), candidate, list(cases), tolerance, precision=precision,
                        names=("pytorch", os.fspath(onnx_path)), on_infer=on_infer)


def validate_onnx(model, onnx_path: str | os.PathLike, shapes: Sequence[Shape], tolerance: Tolerance, *,
                  precision: str = "fp32", input_name: str = "input", output_name: str = "output", seed: int = 0,
                  providers: Sequence[str] = ("CPUExecutionProvider",),
                  on_infer: Callable[[], None] | None = None) -> ParityReport:
    """``check_onnx`` on seeded uniform random batches of the NCHW ``shapes`` (ast-export's validation)."""
    return check_onnx(model, onnx_path, random_cases(shapes, seed), tolerance, precision=precision,
                      input_name=input_name, output_name=output_name, providers=providers, on_infer=on_infer)
