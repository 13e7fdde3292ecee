"""Synthetic rain streaks: sparse drops smeared by a motion-blur line kernel, screen-blended over a
clean image. Deterministic for a given seed (numpy's PCG64 draws every random choice)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class StreakLayer:
    angle: float       # degrees from vertical
    length: float      # pixels
    density: float     # fraction of pixels seeding a drop
    width: float       # Gaussian sigma across the streak, pixels
    brightness: float  # peak intensity added (before the screen blend)


@dataclass(frozen=True)
class RainRanges:
    """Uniform ranges the layers are drawn from (a heavier and a lighter mix by default)."""
    layers: tuple[int, int] = (1, 3)
    angle: tuple[float, float] = (-35.0, 35.0)
    angle_jitter: float = 6.0  # extra layers lean close to the first one, as real rain does
    length: tuple[float, float] = (8.0, 30.0)
    density: tuple[float, float] = (0.001, 0.008)
    width: tuple[float, float] = (0.35, 1.1)
    brightness: tuple[float, float] = (0.3, 0.8)


def sample_layers(rng: np.random.Generator, ranges: RainRanges = RainRanges()) -> list[StreakLayer]:
    n = int(rng.integers(ranges.layers[0], ranges.layers[1] + 1))
    base = rng.uniform(*ranges.angle)
    layers = []
    for i in range(n):
        angle = base if i == 0 else base + rng.uniform(-ranges.angle_jitter, ranges.angle_jitter)
        layers.append(StreakLayer(angle=float(angle), length=float(rng.uniform(*ranges.length)),
                                  density=float(rng.uniform(*ranges.density)),
                                  width=float(rng.uniform(*ranges.width)),
                                  brightness=float(rng.uniform(*ranges.brightness))))
    return layers


def line_kernel(length: float, angle: float, width: float) -> np.ndarray:
    """Anti-aliased line through the kernel centre, blurred across by ``width``; the pixels along
    the line sum to about 1 each, so a unit drop becomes a streak of height about 1."""
    half = int(math.ceil(length / 2 + 3 * width)) + 1
    size = 2 * half + 1
    theta = math.radians(angle)
    dy, dx = math.cos(theta), math.sin(theta)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) - half
    along = ys * dy + xs * dx
    across = -ys * dx + xs * dy
    # Gaussian across the line, soft ends along it (a raised cosine over the last pixel).
    profile = np.exp(-0.5 * (across / max(width, 1e-3)) ** 2)
    ends = np.clip(length / 2 + 0.5 - np.abs(along), 0.0, 1.0)
    kernel = profile * ends
    return (kernel / max(kernel.sum(), 1e-12) * length).astype(np.float32)


def _convolve_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D 'same' convolution via FFT with wrap-around (streaks wrap at the borders; the caller
    renders on a padded canvas and crops, so no wrapped streak shows)."""
    h, w = image.shape
    kh, kw = kernel.shape
    padded = np.zeros((h, w), np.float64)
    padded[:kh, :kw] = kernel
    padded = np.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    out = np.fft.irfft2(np.fft.rfft2(image) * np.fft.rfft2(padded), s=(h, w))
    return out.astype(np.float32)


def streak_map(height: int, width: int, layers: list[StreakLayer], rng: np.random.Generator) -> np.ndarray:
    """[H, W] streak intensity in [0, 1]."""
    total = np.zeros((height, width), np.float32)
    for layer in layers:
        margin = int(layer.length) + 8
        ch, cw = height + 2 * margin, width + 2 * margin
        drops = (rng.random((ch, cw)) < layer.density) * rng.uniform(0.4, 1.0, (ch, cw))
        streaks = _convolve_same(drops.astype(np.float32), line_kernel(layer.length, layer.angle, layer.width))
        streaks = np.clip(streaks, 0.0, 1.0)[margin:margin + height, margin:margin + width]
        total = 1.0 - (1.0 - total) * (1.0 - layer.brightness * streaks)
    return total


def add_rain(clean: np.ndarray, seed: int | np.random.Generator, ranges: RainRanges = RainRanges(),
             layers: list[StreakLayer] | None = None) -> tuple[np.ndarray, list[StreakLayer]]:
    """Rainy version of ``clean`` ([H, W, 3] float in [0, 1]) and the layers drawn.

    Screen blend (1 - (1 - clean)(1 - rain)), slightly tinted per channel, so bright pixels do not
    saturate into values the clean image cannot explain."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if clean.ndim != 3 or clean.shape[2] != 3:
        raise ValueError(f"add_rain expects an [H, W, 3] image, got shape {clean.shape}")
    if layers is None:
        layers = sample_layers(rng, ranges)
    rain = streak_map(clean.shape[0], clean.shape[1], layers, rng)
    tint = rng.uniform(0.9, 1.0, 3).astype(np.float32)
    rainy = 1.0 - (1.0 - clean) * (1.0 - rain[..., None] * tint)
    return np.clip(rainy, 0.0, 1.0).astype(np.float32), layers


def describe(layers: list[StreakLayer]) -> list[dict]:
    return [asdict(layer) for layer in layers]
