"""Deterministic test images that look enough like photos to exercise a restoration model: smooth
shading, hard-edged shapes, texture, sensor noise and a few bright streaks (rain-like)."""

from __future__ import annotations

import numpy as np


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A CHW float32 image in [0, 1]; the same (height, width, seed) always gives the same pixels."""
    rng = np.random.default_rng([seed, height, width])
    y, x = np.meshgrid(np.linspace(0, 1, height, dtype=np.float64), np.linspace(0, 1, width, dtype=np.float64),
                       indexing="ij")
    img = np.empty((3, height, width))
    for c in range(3):  # shading: a tilted plane plus a broad wave, per channel
        gx, gy, phase = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0, 2 * np.pi)
        img[c] = 0.5 + gx * (x - 0.5) + gy * (y - 0.5) + 0.15 * np.sin(2 * np.pi * (1.3 * x + 0.7 * y) + phase)
    for _ in range(6):  # shapes with hard edges: rectangles and discs
        colour = rng.uniform(0.05, 0.95, size=(3, 1, 1))
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
        if rng.random() < 0.5:
            mask = (np.abs(y - cy) < r) & (np.abs(x - cx) < r * rng.uniform(0.5, 2))
        else:
            mask = (y - cy) ** 2 + (x - cx) ** 2 < r ** 2
        img = np.where(mask, 0.6 * colour + 0.4 * img, img)
    freq = rng.uniform(15, 40, size=2)  # fine texture
    img += 0.04 * np.sin(2 * np.pi * (freq[0] * x + freq[1] * y * y))
    slope = rng.uniform(-0.3, 0.3)  # streaks: thin bright near-vertical lines
    for offset in rng.uniform(-0.2, 1.2, size=max(2, width // 32)):
        img += 0.25 * (np.abs(x - (offset + slope * y)) < 0.6 / width)
    img += rng.normal(0, 0.02, size=img.shape)
    return np.clip(img, 0, 1).astype(np.float32)
