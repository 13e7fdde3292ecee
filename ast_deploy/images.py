"""Reading and writing images: RGB in, RGB out, 8- or 16-bit, never a half-written file.

Pillow decodes most formats but reads 16-bit RGB PNG and TIFF as 8-bit, so 16-bit PNG goes
through pypng and TIFF through tifffile.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileio import atomic_write

READABLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


class ImageError(ValueError):
    """An image that cannot be read as, or turned into, RGB."""


@dataclass
class Image:
    pixels: np.ndarray  # HWC float32 in [0, 1], 3 channels
    bit_depth: int  # 8 or 16: what the source stored, and what a restored copy is written with


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        header = f.read(25)
    if len(header) < 25 or header[:8] != b"\x89PNG\r\n\x1a\n":
        raise ImageError(f"{path}: not a PNG file")
    return header[24]


def _read_png16(path: Path) -> np.ndarray:
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    pixels = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    return pixels.reshape(height, width, info["planes"])


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    pixels = tifffile.imread(path)
    if pixels.ndim == 3 and pixels.shape[0] in (3, 4) and pixels.shape[-1] not in (3, 4):
        pixels = np.moveaxis(pixels, 0, -1)  # planar (CHW) storage
    return pixels


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        if im.mode == "P":  # a palette is a colour image stored compactly
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im, dtype=np.uint16)
        elif im.mode not in ("L", "LA", "RGB", "RGBA"):
            raise ImageError(f"{path}: colour mode {im.mode} is not supported; convert it to RGB first")
        return np.asarray(im)


def to_rgb(pixels: np.ndarray, source: str = "image") -> np.ndarray:
    """Gray -> RGB and RGBA -> RGB with a warning; any other channel layout is an error."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3:
        raise ImageError(f"{source}: expected an H x W x C image, got shape {pixels.shape}")
    channels = pixels.shape[-1]
    if channels in (2, 4):
        warnings.warn(f"{source}: dropping the alpha channel", stacklevel=3)
        pixels = pixels[..., : channels - 1]
        channels -= 1
    if channels == 1:
        warnings.warn(f"{source}: grayscale image converted to RGB", stacklevel=3)
        pixels = np.repeat(pixels, 3, axis=-1)
    elif channels != 3:
        raise ImageError(f"{source}: {channels} channels; AST restores RGB images")
    return pixels


def to_unit_float(pixels: np.ndarray, source: str = "image") -> tuple[np.ndarray, int]:
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0, 8
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / 65535.0, 16
    if np.issubdtype(pixels.dtype, np.floating):
        return np.clip(pixels.astype(np.float32), 0.0, 1.0), 16
    raise ImageError(f"{source}: pixel type {pixels.dtype} is not supported (8- or 16-bit, or float)")


def read_image(path: str | os.PathLike) -> Image:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            pixels = _read_tiff(path)
        elif suffix == ".png" and _png_bit_depth(path) == 16:
            pixels = _read_png16(path)
        else:
            pixels = _read_pillow(path)
    except ImageError:
        raise
    except Exception as e:  # decoders raise a zoo of types for truncated or foreign files
        raise ImageError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from e
    pixels = to_rgb(pixels, str(path))
    unit, depth = to_unit_float(pixels, str(path))
    return Image(unit, depth)


def quantize(pixels: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """HWC float in [0, 1] -> uint8 or uint16, clipped and rounded."""
    top = 255 if bit_depth == 8 else 65535
    return np.round(np.clip(pixels, 0.0, 1.0) * top).astype(np.uint8 if bit_depth == 8 else np.uint16)


def write_png(path: str | os.PathLike, pixels: np.ndarray, bit_depth: int = 8) -> Path:
    """Write an RGB PNG atomically (encoded in memory, then a temporary file renamed over ``path``)."""
    return atomic_write(Path(path), encode_png(pixels, bit_depth))


def encode_png(pixels: np.ndarray, bit_depth: int = 8) -> bytes:
    """The PNG file ``write_png`` writes, as bytes (float pixels are quantized to ``bit_depth``)."""
    import png

    if np.issubdtype(pixels.dtype, np.floating):
        pixels = quantize(pixels, bit_depth)
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    height, width, channels = pixels.shape
    encoded = io.BytesIO()
    png.Writer(width, height, greyscale=channels == 1, alpha=False, bitdepth=bit_depth).write(
        encoded, pixels.reshape(height, width * channels))
    return encoded.getvalue()


def restore_file(src: str | os.PathLike, dst: str | os.PathLike, runner, side_by_side: bool = False) -> Path:
    """Restore one image file with ``runner`` and write the result as PNG (same bit depth as the
    source), atomically. ``side_by_side`` writes input and output next to each other."""
    image = read_image(src)
    return write_png(dst, restore_image(image, runner, side_by_side), image.bit_depth)


def restore_image(image: Image, runner, side_by_side: bool = False) -> np.ndarray:
    """The HWC float pixels ``restore_file`` writes for a decoded ``image`` (not yet quantized)."""
    restored = runner(np.ascontiguousarray(image.pixels.transpose(2, 0, 1)))
    restored = np.asarray(restored).transpose(1, 2, 0)
    if side_by_side:
        restored = np.concatenate([image.pixels, restored], axis=1)
    return restored
