"""Rainy/clean pairs: random training crops, and the fixed held-out evaluation pairs."""

from __future__ import annotations

import numpy as np

from .photos import HELD_OUT, TRAIN_COLOUR, center_crop, load_photo
from .rain import add_rain

HELD_OUT_SEED = 2024  # held-out pair i uses seed HELD_OUT_SEED + i


def random_crop_pair(photo: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (rainy, clean) pair from a random, randomly rescaled, flipped and colour-permuted crop."""
    h, w = photo.shape[:2]
    # Rescale by cropping a larger window and subsampling it: streaks are rendered after, at the
    # crop's resolution, so the rain statistics do not depend on the photograph's size.
    scale = int(rng.integers(1, 1 + max(1, min(3, min(h, w) // size))))
    window = size * scale
    top = int(rng.integers(0, h - window + 1))
    left = int(rng.integers(0, w - window + 1))
    clean = photo[top:top + window, left:left + window]
    if scale > 1:
        clean = clean.reshape(size, scale, size, scale, 3).mean(axis=(1, 3))
    if rng.random() < 0.5:
        clean = clean[:, ::-1]
    if rng.random() < 0.5:
        clean = clean[::-1]
    clean = clean[..., rng.permutation(3)]
    clean = np.ascontiguousarray(clean, dtype=np.float32)
    rainy, _ = add_rain(clean, rng)
    return rainy, clean


def held_out_pairs(multiple: int = 64, max_side: int = 256) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(name, rainy, clean)] for the held-out photographs: centred crops, sides multiples of
    ``multiple`` and at most ``max_side``, rain drawn with a fixed seed per photograph."""
    pairs = []
    for i, name in enumerate(HELD_OUT):
        clean = center_crop(load_photo(name), multiple, max_side)
        rainy, _ = add_rain(clean, HELD_OUT_SEED + i)
        pairs.append((name, rainy, clean))
    return pairs



def write_calibration_images(folder, count: int = 8, size: int = 128, seed: int = 11) -> list:
    """Rainy crops of the *training* photographs (never held-out ones) as PNGs: the default
    calibration set for FP16/INT8 conversion of the demo model."""
    from pathlib import Path

    from PIL import Image


    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        name = TRAIN_COLOUR[i % len(TRAIN_COLOUR)]
        rainy, _ = random_crop_pair(load_photo(name), size, rng)
        path = folder / f"rain_{i:02d}_{name}.png"
        Image.fromarray((rainy * 255.0 + 0.5).astype(np.uint8)).save(path, optimize=True)
        paths.append(path)
    return paths
