"""Accuracy of an exported model against PyTorch, with Polygraphy's ``Comparator``.

Both runners get the same seeded random images; per case we record the max absolute error, the
relative error max|onnx - torch| / max|torch| (the measure of the parity fixtures) and the PSNR
as Polygraphy's ``PsnrCompareFunc`` computes it (peak = max of the PyTorch output). A case passes
when PSNR >= the tolerance's ``psnr_db`` and the relative error <= its ``max_rel``.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..checks.tolerances import Tolerance
from ..fileio import atomic_write

Shape = tuple[int, int, int, int]


@dataclass
class CaseResult:
    shape: list[int]
    max_abs: float
    max_rel: float
    psnr_db: float
    passed: bool
    torch_ms: float
    onnx_ms: float


@dataclass
class ValidationReport:
    onnx_path: str
    precision: str
    tolerance: dict
    cases: list[CaseResult] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def to_dict(self) -> dict:
        d = asdict(self)
        for case in d["cases"]:  # strict JSON has no Infinity (identical outputs give PSNR inf)
            case.update({k: str(v) for k, v in case.items() if isinstance(v, float) and not np.isfinite(v)})
        d["passed"] = self.passed
        return d

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def table(self) -> str:
        tol = Tolerance(**self.tolerance)
        head = f"{'input (NCHW)':<20} {'max abs':>10} {'max rel':>10} {'PSNR dB':>9} {'torch ms':>9} {'onnx ms':>9}  result"
        lines = [head, "-" * len(head)]
        for c in self.cases:
            psnr = "inf" if c.psnr_db == float("inf") else f"{c.psnr_db:.1f}"
            lines.append(f"{'x'.join(map(str, c.shape)):<20} {c.max_abs:>10.2e} {c.max_rel:>10.2e} {psnr:>9} "
                         f"{c.torch_ms:>9.0f} {c.onnx_ms:>9.0f}  {'ok' if c.passed else 'FAIL'}")
        lines.append(f"tolerance ({self.precision}): PSNR >= {tol.psnr_min:g} dB, max rel <= {tol.max_rel:g}"
                     f" -> {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def _runner_classes():
    """Runner classes built lazily: Polygraphy is imported only when validating."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType

    class TorchRunner(BaseRunner):
        """PyTorch on the CPU (Polygraphy's ``PytRunner`` moves inputs to CUDA and splits a
        single-tensor output along the batch, so it does not fit here)."""

        def __init__(self, model: torch.nn.Module, input_name: str, output_name: str, on_infer=None):
            super().__init__(prefix="pytorch-cpu")
            self._model, self._input, self._output, self._on_infer = model, input_name, output_name, on_infer

        def activate_impl(self):
            self._model.eval()

        def get_input_metadata_impl(self):
            return TensorMetadata().add(self._input, DataType.FLOAT32, shape=(None, None, None, None))

        def infer_impl(self, feed_dict):
            with torch.inference_mode():
                start = time.perf_counter()
                out = self._model(torch.from_numpy(np.ascontiguousarray(feed_dict[self._input])))
                self.inference_time = time.perf_counter() - start
            if self._on_infer:
                self._on_infer()
            return OrderedDict([(self._output, out.numpy())])

        def deactivate_impl(self):
            pass

    class TickingOnnxrtRunner(OnnxrtRunner):
        def __init__(self, sess, on_infer=None):
            super().__init__(sess)
            self._on_infer = on_infer

        def infer_impl(self, feed_dict):
            out = super().infer_impl(feed_dict)
            if self._on_infer:
                self._on_infer()
            return out

    return TorchRunner, TickingOnnxrtRunner


def random_inputs(shapes: Sequence[Shape], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(s, dtype=np.float32) for s in shapes]


def validate_onnx(model: torch.nn.Module, onnx_path: str | os.PathLike, shapes: Sequence[Shape],
                  tolerance: Tolerance, *, precision: str = "fp32", input_name: str = "input",
                  output_name: str = "output", seed: int = 0, providers: Sequence[str] = ("CPUExecutionProvider",),
                  on_infer: Callable[[], None] | None = None) -> ValidationReport:
    """Run ``model`` (PyTorch) and ``onnx_path`` (ONNX Runtime) on random images of ``shapes``."""
    from polygraphy.backend.onnxrt import SessionFromOnnx
    from polygraphy.comparator import Comparator
    from polygraphy.comparator.compare import PsnrCompareFunc
    from polygraphy.logger import G_LOGGER

    TorchRunner, OrtRunner = _runner_classes()
    torch_runner = TorchRunner(model, input_name, output_name, on_infer)
    ort_runner = OrtRunner(SessionFromOnnx(os.fspath(onnx_path), providers=list(providers)), on_infer)
    feeds = [OrderedDict([(input_name, x)]) for x in random_inputs(shapes, seed)]

    import onnxruntime as ort

    from ..backends.onnxrt import _quiet_ort_logging

    # scoped: the caller's Polygraphy logging is left as it was; no constant-folding warnings from
    # ONNX Runtime about FP16 ops the CPU cannot fold
    with G_LOGGER.verbosity(G_LOGGER.ERROR), _quiet_ort_logging(ort):
        results = Comparator.run([torch_runner, ort_runner], data_loader=feeds)
        accuracy = Comparator.compare_accuracy(results, compare_func=PsnrCompareFunc(psnr_threshold=tolerance.psnr_min))
    psnr_per_iter = accuracy[0][(torch_runner.name, ort_runner.name)]

    report = ValidationReport(os.fspath(onnx_path), precision, asdict(tolerance))
    (_, ref_iters), (_, out_iters) = results.items()
    for feed, ref_it, out_it, psnr_it in zip(feeds, ref_iters, out_iters, psnr_per_iter):
        ref, out = ref_it[output_name], out_it[output_name]
        if out.shape != ref.shape:
            raise RuntimeError(f"ONNX output shape {out.shape} differs from PyTorch's {ref.shape}")
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        max_abs = float(diff.max())
        max_rel = max_abs / max(float(np.abs(ref).max()), 1e-12)
        psnr = float(psnr_it[output_name].psnr)
        passed = bool(psnr_it[output_name]) and max_rel <= tolerance.max_rel and bool(np.isfinite(out).all())
        report.cases.append(CaseResult(list(feed[input_name].shape), max_abs, max_rel, psnr, passed,
                                       ref_it.runtime * 1e3, out_it.runtime * 1e3))
    return report
