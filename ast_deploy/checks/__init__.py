"""Accuracy parity between two ways of running AST (PyTorch, ONNX, TensorRT): the CI gate."""

from .metrics import agreement, max_abs_error, psnr, rel_error, ssim
from .parity import Case, ParityReport, check_parity
from .synthetic import synthetic_image
from .tolerances import DEFAULT_TOLERANCES, PRECISIONS, Tolerance, tolerance_for

__all__ = ["Case", "DEFAULT_TOLERANCES", "PRECISIONS", "ParityReport", "Tolerance", "agreement", "check_parity",
           "max_abs_error", "psnr", "rel_error", "ssim", "synthetic_image", "tolerance_for"]
