"""Accuracy parity between two ways of running AST (PyTorch, ONNX, TensorRT): the CI gate, and the
one model of validation (cases, the Polygraphy comparison, the report, tolerances, PSNR with a
data range of 1) that ast-check, ast-export and the FP16 / INT8 conversion share."""

from .cases import Case, random_cases, synthetic_cases
from .export_check import validate_onnx
from .metrics import agreement, max_abs_error, psnr, rel_error, ssim
from .parity import CaseResult, ParityReport, check_parity, judge
from .synthetic import synthetic_image
from .tolerances import DEFAULT_TOLERANCES, PRECISIONS, Tolerance, tolerance_for

__all__ = ["Case", "CaseResult", "DEFAULT_TOLERANCES", "PRECISIONS", "ParityReport", "Tolerance", "agreement",
           "check_parity", "judge", "max_abs_error", "psnr", "random_cases", "rel_error", "ssim", "synthetic_cases",
           "synthetic_image", "tolerance_for", "validate_onnx"]
