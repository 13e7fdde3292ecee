"""Running a tiling streamed: :func:`run_tiles` reads tiles from the image a batch at a time, adds
their weighted outputs into a band of rows, and hands each band, normalised, to the caller once no
later tile touches it, so memory holds one batch and one band, never all the tiles. The tile layout
(sizes, origins, padding, blend) is the ``Tiles`` protocol's (:mod:`ast_deploy.protocols`); this module
imports none of the package's modules (``TileLayout`` is the structural type of what it reads).
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np


class TileLayout(Protocol):
    """What this module reads of a tile layout (``protocols.Tiles`` has it); a structural type, so
    that this module imports nothing of the package above it."""

    tile_h: int
    tile_w: int
    overlap: int
    blend: str

    def padded_size(self, h: int, w: int) -> tuple[int, int]: ...

    def starts(self, length: int, tile: int) -> list[int]: ...


def feather(length: int, overlap: int) -> np.ndarray:
    """Blending weights along one tile axis: linear ramps over ``overlap`` pixels at both ends."""
    if overlap == 0:
        return np.ones(length, dtype=np.float32)
    ramp = (np.arange(length, dtype=np.float32) + 0.5) / overlap
    return np.clip(np.minimum(ramp, ramp[::-1]), 1e-3, 1.0)


class ArraySource:
    """Tiles of a float32 NCHW array (reflect-padded where a tile reaches past the image)."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.images, self.channels, self.height, self.width = x.shape

    def tile(self, b: int, rows, cols) -> np.ndarray:
        """The tile of image ``b`` at rows x cols: slices, or index arrays into the image (the
        reflect padding of the whole image, see :func:`reflect_index`)."""
        return np.asarray(_take(self.x[b], rows, cols, 1), dtype=np.float32)


class PixelSource:
    """Tiles of an H x W x 3 uint8 / uint16 image, converted to float32 [0, 1] one tile at a time,
    so a photo never exists as a whole float copy (nor a padded one)."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels
        self.scale = np.float32(255.0 if pixels.dtype == np.uint8 else 65535.0)
        self.images, self.channels = 1, pixels.shape[2]
        self.height, self.width = pixels.shape[:2]

    def tile(self, b: int, rows, cols) -> np.ndarray:
        return _take(self.pixels, rows, cols, 0).transpose(2, 0, 1).astype(np.float32) / self.scale


def reflect_index(length: int, padded: int) -> np.ndarray:
    """Indices of an axis of ``length`` reflect-padded at its end to ``padded`` (as np.pad's
    "reflect", repeatedly where the pad is longer than the axis)."""
    return np.pad(np.arange(length), (0, padded - length), mode="reflect")


def _axis(index: np.ndarray, start: int, size: int, length: int):
    """A slice where [start, start + size) lies inside the axis, else the reflected indices."""
    return slice(start, start + size) if start + size <= length else index[start : start + size]


def _take(a: np.ndarray, rows, cols, axis: int) -> np.ndarray:
    """``a`` restricted to rows along ``axis`` and cols along ``axis + 1`` (slices are views)."""
    key = [slice(None)] * a.ndim
    key[axis] = rows
    a = a[tuple(key)]
    key[axis], key[axis + 1] = slice(None), cols
    return a[tuple(key)]


Sink = Callable[[int, int, np.ndarray], None]  # (image index, first row, float32 [C, rows, W])


def tile_grid(height: int, width: int, tiles: TileLayout) -> tuple[list[int], list[int], int, int]:
    """Tile origins along H and W over the image reflect-padded as ``tiles`` says (to its grid and
    to one tile), and that padded size."""
    ph, pw = tiles.padded_size(height, width)
    return tiles.starts(ph, tiles.tile_h), tiles.starts(pw, tiles.tile_w), ph, pw


def count_tiles(height: int, width: int, tiles: TileLayout) -> int:
    tops, lefts, _, _ = tile_grid(height, width, tiles)
    return len(tops) * len(lefts)


def run_tiles(source, tiles: TileLayout, infer: Callable[[np.ndarray], np.ndarray], batch: int, sink: Sink,
              progress: Callable[[int, int], None] | None = None) -> None:
    """Run ``tiles`` over every image of ``source``, ``batch`` tiles per ``infer`` call, and hand
    the blended result to ``sink`` band by band (rows in order, each row exactly once). Tiles are
    cut from the image reflect-padded as ``tiles`` says (``Tiles.padded_size``), read through index
    maps so no padded copy of the image is made; the padding is cropped from what ``sink`` gets.

    The result equals accumulating every tile's weighted output over the whole image and dividing
    by the summed weights (``Tiles.run`` as the official code does): the weights are a product of a
    row and a column profile on a product grid of tiles, so their sum is the outer product of two
    1-D sums, and accumulation happens in the same tile order.
    """
    th, tw = tiles.tile_h, tiles.tile_w
    n_img, height, width = source.images, source.height, source.width
    tops, lefts, ph, pw = tile_grid(height, width, tiles)
    row_index, col_index = reflect_index(height, ph), reflect_index(width, pw)
    weight, sum_y, sum_x = _blend_weights(tiles, tops, lefts, ph, pw)
    jobs = [(r, b, left) for r in range(len(tops)) for b in range(n_img) for left in lefts]
    total = len(jobs)
    row_left = [n_img * len(lefts)] * len(tops)  # tiles of each tile row still to accumulate
    band_top, band, out_channels = 0, None, None  # band: rows [band_top, band_top + band rows) of every image
    flushed = 0  # tile rows already handed to the sink
    done = 0
    for start in range(0, total, max(1, batch)):
        chunk = jobs[start : start + batch]
        outputs = infer(np.stack([source.tile(b, _axis(row_index, tops[r], th, height), _axis(col_index, left, tw, width))
                                  for r, b, left in chunk]))
        if band is None:
            out_channels = outputs.shape[1]
        for (r, b, left), out in zip(chunk, outputs):
            top = tops[r]
            bottom = top + th
            if band is None or bottom - band_top > band.shape[2]:
                band = _grow(band, n_img, out_channels, bottom - band_top, pw)
            band[b, :, top - band_top : bottom - band_top, left : left + tw] += out * weight
            row_left[r] -= 1
        done += len(chunk)
        del outputs
        while flushed < len(tops) and row_left[flushed] == 0:
            # rows above the next tile row's top are final (the last tile row finishes the image)
            end = tops[flushed + 1] if flushed + 1 < len(tops) else ph
            end = max(end, band_top)
            _flush(band, band_top, end, sum_y, sum_x, height, width, sink, n_img)
            shift = end - band_top
            if shift:
                rest = band.shape[2] - shift
                band[:, :, :rest] = band[:, :, shift:]
                band[:, :, rest:] = 0
            band_top = end
            flushed += 1
        if progress is not None:
            progress(done, total)


def _blend_weights(tiles: TileLayout, tops: list[int], lefts: list[int], ph: int, pw: int):
    """(one tile's weights [th, tw], their sums along the padded rows [ph] and columns [pw])."""
    th, tw, overlap = tiles.tile_h, tiles.tile_w, tiles.overlap
    if tiles.blend == "feather":
        wy, wx = feather(th, overlap), feather(tw, overlap)
    else:
        wy, wx = np.ones(th, dtype=np.float32), np.ones(tw, dtype=np.float32)
    sum_y, sum_x = np.zeros(ph, dtype=np.float32), np.zeros(pw, dtype=np.float32)
    for t in tops:
        sum_y[t : t + th] += wy
    for left in lefts:
        sum_x[left : left + tw] += wx
    return np.outer(wy, wx), sum_y, sum_x


def _grow(band, n_img, channels, rows, width):
    new = np.zeros((n_img, channels, rows, width), dtype=np.float32)
    if band is not None:
        new[:, :, : band.shape[2]] = band
    return new


def _flush(band, band_top, end, sum_y, sum_x, height, width, sink, n_img):
    stop = min(end, height)
    if stop <= band_top:
        return
    rows = stop - band_top
    total = np.outer(sum_y[band_top:stop], sum_x[:width])
    for b in range(n_img):
        sink(b, band_top, band[b, :, :rows, :width] / total)


def run_tiles_to_array(source, tiles: TileLayout, infer, batch: int, progress=None) -> np.ndarray:
    """:func:`run_tiles` into one float32 [N, C, H, W] output."""
    out = None

    def sink(b, top, rows):
        nonlocal out
        if out is None:
            out = np.empty((source.images, rows.shape[0], source.height, source.width), dtype=np.float32)
        out[b, :, top : top + rows.shape[1]] = rows

    run_tiles(source, tiles, infer, batch, sink, progress)
    return out
