"""The parity gate: run a reference and a candidate on the same cases and judge the candidate.

Per case (one NCHW batch): max abs / relative error, PSNR and SSIM of the candidate's output against
the reference's (raw outputs, unclipped: stricter; PSNR with a data range of 1, see
``metrics.psnr``), and, where a ground-truth target exists, each side's PSNR / SSIM against it
(outputs clipped to [0, 1], as a saved image would be). ast-check and ast-export's validation both
produce a ``ParityReport``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .cases import Case
from .metrics import agreement, psnr, ssim
from .polygraphy_runner import run_both
from .tolerances import Tolerance


@dataclass
class CaseResult:
    name: str
    shape: tuple[int, ...]  # of the case's input batch, NCHW
    parity: dict
    ground_truth: dict | None = None
    failures: list[str] = field(default_factory=list)
    seconds: dict | None = None  # {"reference": s, "candidate": s}: each side's inference time

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.shape[-2:])

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "size": list(self.size), "passed": self.passed,
                "failures": self.failures, "parity": self.parity, "ground_truth": self.ground_truth,
                "seconds": self.seconds}


def judge(name: str, ref_out: np.ndarray, cand_out: np.ndarray, tol: Tolerance,
          target: np.ndarray | None = None, shape: tuple[int, ...] | None = None) -> CaseResult:
    shape = tuple(ref_out.shape) if shape is None else tuple(shape)
    if ref_out.shape != cand_out.shape:
        return CaseResult(name, shape, {}, None, [f"output shapes differ: reference {ref_out.shape}, "
                                                  f"candidate {cand_out.shape}"])
    if not np.isfinite(cand_out).all():
        return CaseResult(name, shape, {}, None, ["the candidate's output has NaN or Inf values"])
    metrics = agreement(cand_out, ref_out)
    failures = []
    if metrics["psnr"] < tol.psnr_min:
        failures.append(f"PSNR {metrics['psnr']:.2f} dB < {tol.psnr_min:g} dB")
    if tol.ssim_min is not None and metrics["ssim"] < tol.ssim_min:
        failures.append(f"SSIM {metrics['ssim']:.5f} < {tol.ssim_min:g}")
    if tol.max_abs is not None and metrics["max_abs"] > tol.max_abs:
        failures.append(f"max abs error {metrics['max_abs']:.3g} > {tol.max_abs:g}")
    if tol.max_rel is not None and metrics["rel"] > tol.max_rel:
        failures.append(f"relative error {metrics['rel']:.3g} > {tol.max_rel:g}")
    gt = None
    if target is not None:
        ref_c, cand_c = np.clip(ref_out, 0, 1), np.clip(cand_out, 0, 1)
        gt = {"reference": {"psnr": psnr(ref_out, target, clip=True), "ssim": ssim(ref_c, target)},
              "candidate": {"psnr": psnr(cand_out, target, clip=True), "ssim": ssim(cand_c, target)}}
        gt["psnr_drop"] = gt["reference"]["psnr"] - gt["candidate"]["psnr"]
        if tol.gt_psnr_drop_max is not None and gt["psnr_drop"] > tol.gt_psnr_drop_max:
            failures.append(f"against ground truth the candidate loses {gt['psnr_drop']:.3f} dB "
                            f"> {tol.gt_psnr_drop_max:g} dB")
    return CaseResult(name, shape, metrics, gt, failures)


@dataclass
class ParityReport:
    reference: str
    candidate: str
    precision: str
    tolerance: Tolerance
    cases: list[CaseResult]
    outputs_valid: bool = True
    extra: dict = field(default_factory=dict)  # what the caller adds (ast-export: the export's facts)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and self.outputs_valid and all(c.passed for c in self.cases)

    def summary(self) -> dict:
        parity = [c.parity for c in self.cases if c.parity]
        worst = {}
        if parity:
            worst = {"psnr_min": min(p["psnr"] for p in parity), "ssim_min": min(p["ssim"] for p in parity),
                     "max_abs": max(p["max_abs"] for p in parity), "rel_max": max(p["rel"] for p in parity)}
        return {"cases": len(self.cases), "failed": sum(not c.passed for c in self.cases), **worst}

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reference": self.reference, "candidate": self.candidate,
                "precision": self.precision, "tolerance": self.tolerance.to_dict(),
                "outputs_valid": self.outputs_valid, "summary": self.summary(),
                "cases": [c.to_dict() for c in self.cases], "extra": self.extra}


def check_parity(reference: Callable, candidate: Callable, cases: list[Case], tolerance: Tolerance, *,
                 precision: str = "fp32", names: tuple[str, str] = ("reference", "candidate"),
                 on_infer: Callable[[], None] | None = None) -> ParityReport:
    """``reference`` and ``candidate`` map a float32 [N, 3, H, W] batch (a case's image) to its
    restoration; ``on_infer`` is called after each side's inference of each case."""
    if not cases:
        raise ValueError("no images to compare")
    ref_outs, cand_outs, valid, times = run_both(reference, candidate, [c.image for c in cases], on_infer)
    results = []
    for i, (case, r, o) in enumerate(zip(cases, ref_outs, cand_outs)):
        result = judge(case.name, r, o, tolerance, case.target, shape=case.image.shape)
        result.seconds = {"reference": times["reference"][i], "candidate": times["candidate"][i]}
        results.append(result)
    return ParityReport(names[0], names[1], precision, tolerance, results, valid)


def format_value(value: float, digits: int = 2) -> str:
    return ("inf" if value > 0 else "-inf") if math.isinf(value) else f"{value:.{digits}f}"
