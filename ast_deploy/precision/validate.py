"""Accuracy of a converted model against the FP32 one (and the clean image where known), in ORT."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import metrics
from ..demo.pairs import held_out_pairs
from .ranges import load_model, ort_session


@dataclass(frozen=True)
class Case:
    name: str
    image: np.ndarray            # [1, 3, H, W] float32, sides multiples of the model's
    clean: np.ndarray | None = None  # [1, 3, H, W] ground truth, when known


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of images in [0, 1] (both clipped, as saved images are); a non-finite pixel of ``a``
    counts as the largest error."""
    b = np.clip(np.asarray(b, np.float64), 0, 1)
    a = np.asarray(a, np.float64)
    return metrics.psnr(np.where(np.isfinite(a), np.clip(a, 0, 1), b + 1.0), b)


def demo_cases(multiple: int, max_side: int = 256) -> list[Case]:
    """Held-out rainy/clean pairs of the demo (photographs never trained on)."""
    return [Case(name, rainy.transpose(2, 0, 1)[None].copy(), clean.transpose(2, 0, 1)[None].copy())
            for name, rainy, clean in held_out_pairs(multiple, max_side)]


def folder_cases(calib) -> list[Case]:
    return [Case(p.name, b) for p, b in zip(calib.files, calib.batches)]


def run(model, cases: list[Case], session=None) -> list[np.ndarray]:
    session = session or ort_session(load_model(model))
    name = session.get_inputs()[0].name
    return [session.run(None, {name: c.image})[0] for c in cases]


def compare_models(reference, candidate, cases: list[Case], reference_outputs=None) -> dict:
    """PSNR of ``candidate`` vs ``reference`` per case, and of both vs the clean image."""
    ref = reference_outputs if reference_outputs is not None else run(reference, cases)
    out = run(candidate, cases)
    rows = []
    for case, r, o in zip(cases, ref, out):
        row = dict(image=case.name, psnr_vs_fp32=round(psnr(o, r), 2), finite=bool(np.isfinite(o).all()))
        if case.clean is not None:
            row.update(input_vs_clean=round(psnr(case.image, case.clean), 2),
                       fp32_vs_clean=round(psnr(r, case.clean), 2), candidate_vs_clean=round(psnr(o, case.clean), 2))
        rows.append(row)
    summary = dict(min_psnr_vs_fp32=min(r["psnr_vs_fp32"] for r in rows),
                   mean_psnr_vs_fp32=round(float(np.mean([r["psnr_vs_fp32"] for r in rows])), 2),
                   all_finite=all(r["finite"] for r in rows))
    if all(c.clean is not None for c in cases):
        for key in ("fp32_vs_clean", "candidate_vs_clean", "input_vs_clean"):
            summary[f"mean_{key}"] = round(float(np.mean([r[key] for r in rows])), 2)
    return dict(cases=rows, **summary)
