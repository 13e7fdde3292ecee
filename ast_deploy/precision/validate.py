"""Accuracy of a converted model against the FP32 one (and the clean image where known), both run
in ONNX Runtime on ``checks.Case`` batches and scored with ``checks.metrics``.

PSNR against the FP32 model is the project's one definition (data range 1, unclipped; a NaN or Inf
in the candidate's output gives -inf, which fails any budget); PSNR against the clean image is of
clipped outputs, as saved images are (as ast-check's ground-truth scores).
"""

from __future__ import annotations

import numpy as np

from ..checks import metrics
from ..checks.cases import Case
from ..demo.pairs import held_out_pairs
from ..ort_session import open_session
from .ranges import load_model


def demo_cases(multiple: int, max_side: int = 256) -> list[Case]:
    """Held-out rainy/clean pairs of the demo (photographs never trained on), one per case."""
    return [Case.from_chw(name, rainy.transpose(2, 0, 1), clean.transpose(2, 0, 1))
            for name, rainy, clean in held_out_pairs(multiple, max_side)]


def folder_cases(calib) -> list[Case]:
    """The calibration images themselves (no ground truth, and not held out)."""
    return [Case(p.name, b) for p, b in zip(calib.files, calib.batches)]


def to_shape(batch: np.ndarray, shape) -> np.ndarray:
    """An NCHW batch brought to a static model's input ``shape`` (B, C, H, W): each side mirrored
    outwards until it is long enough, centre-cropped, and the first image repeated to batch B."""
    b, _, h, w = shape
    x = np.asarray(batch, np.float32)[:1]
    while x.shape[2] < h or x.shape[3] < w:
        x = np.pad(x, ((0, 0), (0, 0), (0, max(0, min(h - x.shape[2], x.shape[2]))),
                       (0, max(0, min(w - x.shape[3], x.shape[3])))), mode="symmetric")
    top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
    return np.ascontiguousarray(np.repeat(x[:, :, top:top + h, left:left + w], b, axis=0))


def cases_for_shape(cases: list[Case], shape) -> list[Case]:
    """``cases`` (and their targets) at a static model's input shape."""
    return [Case(c.name, to_shape(c.image, shape), None if c.target is None else to_shape(c.target, shape))
            for c in cases]


def run(model, cases: list[Case], session=None) -> list[np.ndarray]:
    session = session or open_session(load_model(model))
    name = session.get_inputs()[0].name
    return [session.run(None, {name: c.image})[0] for c in cases]


def compare_models(reference, candidate, cases: list[Case], reference_outputs=None) -> dict:
    """PSNR of ``candidate`` vs ``reference`` per case, and of both vs the clean image."""
    ref = reference_outputs if reference_outputs is not None else run(reference, cases)
    out = run(candidate, cases)
    rows = []
    for case, r, o in zip(cases, ref, out):
        row = dict(image=case.name, psnr_vs_fp32=round(metrics.psnr(o, r), 2), finite=bool(np.isfinite(o).all()))
        if case.target is not None:
            row.update(input_vs_clean=round(metrics.psnr(case.image, case.target, clip=True), 2),
                       fp32_vs_clean=round(metrics.psnr(r, case.target, clip=True), 2),
                       candidate_vs_clean=round(metrics.psnr(o, case.target, clip=True), 2))
        rows.append(row)
    summary = dict(min_psnr_vs_fp32=min(r["psnr_vs_fp32"] for r in rows),
                   mean_psnr_vs_fp32=round(float(np.mean([r["psnr_vs_fp32"] for r in rows])), 2),
                   all_finite=all(r["finite"] for r in rows))
    if all(c.target is not None for c in cases):
        for key in ("fp32_vs_clean", "candidate_vs_clean", "input_vs_clean"):
            summary[f"mean_{key}"] = round(float(np.mean([r[key] for r in rows])), 2)
    return dict(cases=rows, **summary)
