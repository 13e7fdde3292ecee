"""Reading and writing images: RGB in, RGB out, 8- or 16-bit, never a half-written file.

Pillow decodes most formats but reads 16-bit RGB PNG and TIFF as 8-bit, so 16-bit PNG goes
through pypng and TIFF through tifffile.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .console import note
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
        return pil_to_array(im, str(path))


# Pillow modes and how each becomes an array ``to_rgb`` takes: 8-bit L / LA / RGB / RGBA as they are,
# others converted by Pillow to the mode named, 16-bit ones as uint16. Any other mode is refused by name.
_PIL_8BIT = {"L", "LA", "RGB", "RGBA"}
_PIL_CONVERT = {"1": "L", "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "YCbCr": "RGB",
                "LAB": "RGB", "HSV": "RGB", "CMYK": "RGB"}
_PIL_16BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


def pil_to_array(im, source: str = "PIL image") -> np.ndarray:
    """The pixels of a Pillow image as uint8 (8-bit modes) or uint16 (16-bit modes), H x W [x C].

    Palette images become RGB (RGBA with transparency); CMYK, YCbCr, LAB and HSV are converted to
    RGB by Pillow (CMYK with a note: no colour profile is applied); ``I`` (32-bit integers, as Pillow
    opens some 16-bit files) is read as 16-bit when its values lie within 0..65535; ``F`` (floats
    with no fixed range) and every other mode are refused by name. ``read_image`` and ``Runner``
    both go through here, so a file and the same picture given as a PIL image agree."""
    mode = im.mode
    if mode in _PIL_8BIT:
        return np.asarray(im)
    if mode == "P":
        return np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
    if mode in _PIL_CONVERT:
        if mode == "CMYK":
            note(f"{source}: CMYK converted to RGB without a colour profile (colours may differ from a "
                 "colour-managed viewer's)")
        pixels = np.asarray(im.convert(_PIL_CONVERT[mode]))
        return pixels.astype(np.uint8) if pixels.dtype == bool else pixels
    if mode in _PIL_16BIT:
        return np.asarray(im).astype(np.uint16)  # I;16B is big-endian: native order for NumPy
    if mode == "I":
        pixels = np.asarray(im)
        low, high = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
        if low < 0 or high > 65535:
            raise ImageError(f"{source}: mode I (32-bit integers) with values {low}..{high}; only 0..65535 "
                             "(16-bit) is read: scale it to 16 or 8 bits first")
        return pixels.astype(np.uint16)
    if mode == "F":
        raise ImageError(f"{source}: mode F (32-bit float pixels) has no fixed value range; give the Runner a "
                         "float array scaled to [0, 1] instead (np.asarray(image) / its maximum)")
    raise ImageError(f"{source}: Pillow mode {mode} is not supported; convert it to RGB first")


def to_rgb(pixels: np.ndarray, source: str = "image") -> np.ndarray:
    """Gray -> RGB and RGBA -> RGB with a warning; any other channel layout is an error."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3:
        raise ImageError(f"{source}: expected an H x W x C image, got shape {pixels.shape}")
    channels = pixels.shape[-1]
    if channels in (2, 4):
        note(f"{source}: dropping the alpha channel", stacklevel=4)
        pixels = pixels[..., : channels - 1]
        channels -= 1
    if channels == 1:
        note(f"{source}: grayscale image converted to RGB", stacklevel=4)
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
    pixels = read_pixels(path)
    unit, depth = to_unit_float(pixels, str(path))
    return Image(unit, depth)


def read_pixels(path: str | os.PathLike) -> np.ndarray:
    """An image file's RGB pixels as stored (uint8, uint16, or float for float TIFFs)."""
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
    return to_rgb(pixels, str(path))


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
    pixels = read_pixels(src)
    if pixels.dtype in (np.uint8, np.uint16):  # the Runner reads and writes integer pixels tile by tile
        restored = runner(pixels)
        if side_by_side:
            restored = np.concatenate([pixels, restored], axis=1)
        return write_png(dst, restored)
    image = Image(*to_unit_float(pixels, str(src)))
    return write_png(dst, restore_image(image, runner, side_by_side), image.bit_depth)


def restore_image(image: Image, runner, side_by_side: bool = False) -> np.ndarray:
    """The HWC float pixels ``restore_file`` writes for a decoded ``image`` (not yet quantized)."""
    restored = runner(np.ascontiguousarray(image.pixels.transpose(2, 0, 1)))
    restored = np.asarray(restored).transpose(1, 2, 0)
    if side_by_side:
        restored = np.concatenate([image.pixels, restored], axis=1)
    return restored
