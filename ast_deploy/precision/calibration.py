"""Calibration images: a folder of pictures -> NCHW float32 batches the model accepts, plus the
cache key that ties calibration results to the exact model and images."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..demo import calibration_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class CalibrationError(ValueError):
    """Calibration images that cannot be used (missing folder, no images, unreadable file)."""


@dataclass(frozen=True)
class CalibrationSet:
    """Images prepared for one model: ``batches`` are [1, 3, H, W] float32 in [0, 1] with H and W
    multiples of the model's size multiple; ``key`` identifies the images and their preparation."""
    folder: Path
    files: tuple[Path, ...]
    batches: tuple[np.ndarray, ...]
    key: str

    def __len__(self) -> int:
        return len(self.batches)


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise CalibrationError(f"calibration folder {folder} does not exist")
    if not folder.is_dir():
        raise CalibrationError(f"calibration path {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_image(path: Path) -> np.ndarray:
    """[H, W, 3] float32 RGB in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise CalibrationError(f"calibration image {path} cannot be read: {e}") from e


def fit_to_multiple(image: np.ndarray, multiple: int, max_side: int | None) -> np.ndarray:
    """Centre crop to multiples of ``multiple`` (at most ``max_side``); sides shorter than one
    multiple are reflect-padded up to it."""
    h, w = image.shape[:2]
    ph, pw = max(0, multiple - h), max(0, multiple - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
        h, w = image.shape[:2]
    limit = max_side // multiple * multiple if max_side else None
    ch, cw = h // multiple * multiple, w // multiple * multiple
    if limit:
        ch, cw = min(ch, max(limit, multiple)), min(cw, max(limit, multiple))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top:top + ch, left:left + cw]


def load_calibration(folder: str | os.PathLike, multiple: int, *, max_side: int | None = 256,
                     limit: int | None = None) -> CalibrationSet:
    files = list_images(folder)[:limit]
    batches = tuple(np.ascontiguousarray(fit_to_multiple(load_image(p), multiple, max_side)
                                         .transpose(2, 0, 1)[None]) for p in files)
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(multiple=multiple, max_side=max_side)).encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return CalibrationSet(Path(folder), tuple(files), batches, digest.hexdigest()[:16])


def default_calibration_folder() -> Path:
    """The rainy demo images shipped with the package (crops of the training photographs)."""
    return calibration_images()


def cache_dir() -> Path:
    root = os.environ.get("AST_DEPLOY_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ast_deploy"
    path = Path(root) / "calibration"
    path.mkdir(parents=True, exist_ok=True)
    return path
