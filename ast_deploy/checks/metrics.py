"""Image agreement metrics in numpy: max abs / relative error, PSNR and SSIM.

Images are float arrays with values nominally in [0, 1] (data range 1), laid out [..., C, H, W]
(a CHW image or an NCHW batch); a batch's SSIM is the mean of its images'.
"""

from __future__ import annotations

import math

import numpy as np

SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5  # Wang et al. 2004: 11x11 Gaussian window, sigma 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def max_abs_error(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(ref, np.float64))))


def rel_error(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| / max |ref| (elementwise relative error is meaningless near black pixels)."""
    scale = float(np.max(np.abs(ref)))
    return max_abs_error(a, ref) / scale if scale > 0 else math.inf


def psnr(a: np.ndarray, ref: np.ndarray, data_range: float = 1.0, *, clip: bool = False) -> float:
    """The project's one PSNR: ``10 log10(data_range**2 / MSE)`` with a data range of 1, on the raw
    values (unclipped: what parity compares). ``clip=True`` clips both to [0, data_range] first, as a
    saved image would be (for scores against ground truth). A NaN or Inf in either gives -inf (the
    worst score, so a non-finite output always fails a threshold); identical inputs give inf."""
    x, y = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return -math.inf
    if clip:
        x, y = np.clip(x, 0, data_range), np.clip(y, 0, data_range)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def _gaussian_kernel() -> np.ndarray:
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return k / k.sum()


def _filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation over the last two axes."""
    n = len(k)
    h, w = img.shape[-2:]
    rows = sum(k[i] * img[..., i:h - n + 1 + i, :] for i in range(n))
    return sum(k[i] * rows[..., :, i:w - n + 1 + i] for i in range(n))


def ssim(a: np.ndarray, ref: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM with a Gaussian window (sigma 1.5, 11 taps), K1 = 0.01, K2 = 0.03, averaged over the
    channels (and images). Equals scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False, data_range=1, channel_axis=0)``, which averages only where the window
    lies inside the image, as here."""
    x, y = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs equal shapes, got {x.shape} and {y.shape}")
    k = _gaussian_kernel()
    if min(x.shape[-2:]) < len(k):
        raise ValueError(f"SSIM needs images of at least {len(k)}x{len(k)} pixels, got {x.shape[-2:]}")
    mx, my = _filter_valid(x, k), _filter_valid(y, k)
    vx = _filter_valid(x * x, k) - mx * mx
    vy = _filter_valid(y * y, k) - my * my
    cxy = _filter_valid(x * y, k) - mx * my
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def agreement(a: np.ndarray, ref: np.ndarray) -> dict:
    """All four metrics of ``a`` against ``ref``."""
    return {"max_abs": max_abs_error(a, ref), "rel": rel_error(a, ref), "psnr": psnr(a, ref), "ssim": ssim(a, ref)}
