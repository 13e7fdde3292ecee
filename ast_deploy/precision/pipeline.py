"""One call from a validated FP32 ONNX to its FP16 or INT8 version, with the report written beside
it: what the ``ast-export`` precision step runs.

TensorRT 11 is strongly typed, so precision is a property of the ONNX graph (an FP16-converted
graph, or explicit Q/DQ nodes for INT8) rather than a builder flag; this step rewrites the validated
FP32 ONNX before any engine is built, and the caller checks the result against the recipe's
tolerance for that precision."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Callable

from ..checks.report import json_safe
from ..checks.tolerances import DEFAULT_TOLERANCES, PRECISIONS
from ..fileio import atomic_write
from .calibration import CalibrationError, default_calibration_folder, list_images, load_calibration, load_image
from .fp16 import convert_fp16
from .int8 import DEFAULT_PLACEMENT, quantize_int8
from .validate import cases_for_shape, demo_cases, folder_cases, to_shape


def static_input_shape(onnx_path) -> tuple[int, int, int, int] | None:
    """The input shape of a static-shape ONNX (``ast-export --shape``), None for a dynamic one."""
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    values = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    return tuple(values) if len(values) == 4 and all(v > 0 for v in values) else None


def validation_cases(calib, multiple: int, log: Callable[[str], None]):
    """The demo's held-out rainy/clean pairs when scikit-image is installed, else the calibration
    images themselves (no ground truth then, and not held out: said in the log)."""
    try:
        return demo_cases(multiple, max(256, multiple)), "demo held-out pairs"
    except ImportError:
        log("scikit-image is not installed (pip install 'ast-deploy[demo]'): validating on the calibration "
            "images instead of held-out pairs")
        return folder_cases(calib), "calibration images"


def make_precision(onnx_path: str | os.PathLike, precision: str, *, calib_dir: str | os.PathLike | None = None,
                   size_multiple: int = 128, min_psnr: float | None = None, out_path: str | os.PathLike | None = None,
                   log: Callable[[str], None] = print, placement: str = DEFAULT_PLACEMENT) -> tuple[Path, dict]:
    if precision not in ("fp16", "int8"):
        raise ValueError(f"precision must be 'fp16' or 'int8', not {precision!r}")
    onnx_path = Path(onnx_path)
    out = Path(out_path) if out_path else onnx_path.with_name(f"{onnx_path.stem}.{precision_suffix(precision, placement)}.onnx")
    if calib_dir is None:
        calib_dir = default_calibration_folder()
        log(f"calibration: the demo's rainy images ({calib_dir}); pass --calib DIR for your own")
    calib = load_calibration(calib_dir, size_multiple)
    cases, source = validation_cases(calib, size_multiple, log)
    static = static_input_shape(onnx_path)
    if static is not None:  # a --shape export takes that one size: calibrate and validate at it
        calib = dataclasses.replace(calib, batches=tuple(to_shape(b, static) for b in calib.batches),
                                    key=f"{calib.key}-{'x'.join(map(str, static))}")
        cases = cases_for_shape(cases, static)
    budget = DEFAULT_TOLERANCES[precision].psnr_min if min_psnr is None else min_psnr  # a recipe's overrides
    if precision == "fp16":
        report = convert_fp16(onnx_path, out, calib, validate=cases)
        report["min_psnr_budget"] = budget
        report["budget_met"] = bool(report["validation"]["all_finite"]
                                    and report["validation"]["min_psnr_vs_fp32"] >= budget)
    else:
        report = quantize_int8(onnx_path, out, calib, validate=cases, min_psnr=budget, placement=placement)
    report["validation_source"] = source
    report_path = out.with_suffix(".precision.json")
    atomic_write(report_path, json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n")
    for line in summary(precision, report):
        log(line)
    log(f"precision report: {report_path}")
    return out, report


def summary(precision: str, report: dict) -> list[str]:
    v = report["validation"]
    lines = [f"{precision}: worst PSNR vs FP32 {v['min_psnr_vs_fp32']:.2f} dB on {report['validation_source']} "
             f"(budget {report['min_psnr_budget']:.1f} dB: {'met' if report['budget_met'] else 'MISSED'})"]
    if "mean_candidate_vs_clean" in v:
        lines.append(f"{precision}: PSNR vs clean {v['mean_candidate_vs_clean']:.2f} dB "
                     f"(FP32 {v['mean_fp32_vs_clean']:.2f}, rainy input {v['mean_input_vs_clean']:.2f})")
    if precision == "fp16":
        reasons: dict[str, int] = {}
        for d in report["kept_fp32"]:
            key = d["reason"] if not d["reason"].startswith("range") else "calibrated range above threshold"
            reasons[key] = reasons.get(key, 0) + 1
        kept = ", ".join(f"{n} x {r}" for r, n in reasons.items()) or "none"
        lines.append(f"fp16: {report['nodes']['fp16']} nodes FP16, {report['nodes']['fp32']} kept FP32 ({kept})")
        if not report["overflow"]["ok"]:
            lines.append(f"fp16: WARNING FP16 overflow in {', '.join(report['overflow']['unsafe'][:5])}")
    else:
        excluded = report["excluded_for_accuracy"]
        lines.append(f"int8: {report['quantized_nodes']}/{report['weighted_nodes']} weighted nodes INT8"
                     + (f", excluded for accuracy: {', '.join(excluded)}" if excluded else ""))
    return lines


class PrecisionNotAvailable(RuntimeError):
    """The requested precision cannot be produced (e.g. its calibration images are unusable)."""


def ensure_available(precision: str, calib_dir: str | os.PathLike | None = None) -> None:
    """Raise :class:`PrecisionNotAvailable` unless ``precision`` can be produced (checked before export)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return
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


def precision_suffix(precision: str, placement: str = DEFAULT_PLACEMENT) -> str:
    """``fp16``, ``int8`` (TensorRT's placement) or ``int8-ort`` (ONNX Runtime CPU's): the two INT8
    graphs are different files, so neither overwrites the other."""
    return precision if precision != "int8" or placement == DEFAULT_PLACEMENT else f"int8-{placement}"


def apply_precision(onnx_path: str | os.PathLike, precision: str, *, recipe=None,
                    calib_dir: str | os.PathLike | None = None, size_multiple: int = 128,
                    placement: str = DEFAULT_PLACEMENT) -> Path:
    """Return the path of a ``precision`` version of the validated FP32 model at ``onnx_path``
    (written beside it as ``<stem>.<precision>.onnx``, with ``<stem>.<precision>.precision.json``);
    ``onnx_path`` itself for fp32."""
    ensure_available(precision, calib_dir)
    if precision == "fp32":
        return Path(onnx_path)
    min_psnr = recipe.tolerance(precision).psnr_min if recipe is not None else None
    path, _ = make_precision(onnx_path, precision, calib_dir=calib_dir, size_multiple=size_multiple,
                             min_psnr=min_psnr, log=lambda line: print(line, file=sys.stderr), placement=placement)
    return path
