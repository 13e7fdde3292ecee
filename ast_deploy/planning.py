"""The plan of an image: run it whole as its protocol says, or as tiles that fit the memory budget.

:func:`make_plan` is a pure function of the image size, the protocol and the limits of the
backends that will run it (budget, measured cost per pixel, shape profile, largest batch). When
the protocol's model input fits every backend, the plan is the protocol itself (parity with the
official outputs is untouched); otherwise square tiles as large as fit, feathered where they
overlap, in batches that fit. Those tiles cover the image reflect-padded to the size multiple (to
``pad:N``'s N under that protocol), with origins on that grid, so each tile sees the context and
the window partition of the whole padded run (46 -> 58 dB against the whole image on the demo
photo; benchmarks/RESULTS.md, memory section).

:func:`run_tiles` runs a tiling *streamed*: tiles are read from the image a batch at a time, their
weighted outputs are added into a band of rows, and each band is normalised and handed to the
caller once no later tile touches it, so memory holds one batch and one band, never all the tiles.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .budget import UNLIMITED, Cost, format_size
from .protocols import Pad, Protocol, Tiles
from .protocols import _feather as feather  # one definition of the blending ramps

MIN_OVERLAP = 32  # pixels; see benchmarks/RESULTS.md (memory) for the overlap / quality trade-off
OVERLAP_FRACTION = 16  # the default overlap is tile / 16, at least MIN_OVERLAP


def default_overlap(tile: int, size_multiple: int = 1) -> int:
    overlap = max(MIN_OVERLAP, tile // OVERLAP_FRACTION)
    return min(overlap, tile // 2)


@dataclass(frozen=True)
class TileSpec:
    """A forced tiling, from ``--tile SIZE[:OVERLAP]``."""

    size: int
    overlap: int | None = None  # None: default_overlap(size)

    def resolved_overlap(self) -> int:
        return default_overlap(self.size) if self.overlap is None else self.overlap


def parse_tile(spec) -> TileSpec | None:
    """``None`` / ``"512"`` / ``"512:32"`` / ``512`` / ``(512, 32)`` -> TileSpec (square tiles)."""
    if spec is None or isinstance(spec, TileSpec):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        size, overlap = spec, None
    elif isinstance(spec, tuple) and len(spec) == 2:
        size, overlap = spec
    elif isinstance(spec, str) and re.fullmatch(r"\s*\d+\s*(:\s*\d+\s*)?", spec):
        size_text, _, overlap_text = spec.partition(":")
        size, overlap = int(size_text), (int(overlap_text) if overlap_text.strip() else None)
    else:
        raise ValueError(f"cannot read tile {spec!r}: use SIZE or SIZE:OVERLAP in pixels, e.g. 512 or 512:32")
    if size <= 0 or (overlap is not None and not 0 <= overlap < size):
        raise ValueError(f"tile {spec!r}: the size must be positive and the overlap in [0, size)")
    return TileSpec(int(size), None if overlap is None else int(overlap))


@dataclass(frozen=True)
class Limits:
    """What one backend allows: a budget (bytes or inf), its cost, its H/W range, its largest batch."""

    budget: float = UNLIMITED
    cost: Cost | None = None
    hw_range: tuple | None = None  # ((min_h, min_w), (max_h, max_w)), as backends.hw_range gives it
    max_batch: int | None = None

    def pixels(self) -> float:
        return math.inf if self.cost is None else self.cost.max_pixels(self.budget)

    def takes(self, h: int, w: int) -> bool:
        if self.hw_range is None:
            return True
        (min_h, min_w), (max_h, max_w) = self.hw_range
        return min_h <= h <= max_h and min_w <= w <= max_w

    def batch_for(self, h: int, w: int) -> int:
        """Most images of h x w one call takes: 0 when not even one fits."""
        if not self.takes(h, w):
            return 0
        fit = self.pixels() / (h * w)
        fit = 1 << 30 if fit == math.inf else int(fit)
        return min(fit, self.max_batch or fit)


@dataclass(frozen=True)
class Plan:
    protocol: Protocol  # what runs: the task's protocol, or Tiles
    batch: int  # images (or tiles) per backend call
    tiled_to_fit: bool = False  # departs from the protocol to fit the budget or the profile
    forced: bool = False  # --tile
    reason: str = ""

    @property
    def tiled(self) -> bool:
        return self.tiled_to_fit or self.forced

    def describe(self) -> str:
        return str(self.protocol) + f" (batch {self.batch})"


def _next_multiple(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


def _joint_batch(limits: Iterable[Limits], h: int, w: int) -> int:
    return min(lim.batch_for(h, w) for lim in limits)


def tile_grid_step(protocol: Protocol, size_multiple: int) -> int:
    """The grid of planned tiles: the image is reflect-padded to multiples of it and tile origins lie
    on it, so tiles see what the whole padded image shows the model (the padding of ``pad:N`` and
    the model's window partition, which repeats every size multiple)."""
    multiple = getattr(protocol, "multiple", 0) if isinstance(protocol, Pad) else 0
    return multiple if multiple and multiple % size_multiple == 0 else size_multiple


def make_plan(h: int, w: int, protocol: Protocol, limits: Limits | Iterable[Limits], size_multiple: int,
              tile: TileSpec | None = None, images: int = 1) -> Plan:
    """The plan for ``images`` images of h x w under every one of ``limits`` (the stricter wins).
    Tiles (planned or forced) cover the image reflect-padded to multiples of
    :func:`tile_grid_step`, with origins on that grid (``Tiles.grid``)."""
    limits = [limits] if isinstance(limits, Limits) else list(limits)
    grid = tile_grid_step(protocol, size_multiple)
    pad_h, pad_w = _next_multiple(h, grid), _next_multiple(w, grid)  # what the tiles cover
    if tile is not None:
        if tile.size % size_multiple:
            raise ValueError(f"--tile {tile.size}: the tile size must be a multiple of {size_multiple}, "
                             "the size this model takes")
        t_h, t_w = min(tile.size, pad_h), min(tile.size, pad_w)
        overlap = min(tile.resolved_overlap(), min(t_h, t_w) - 1)
        batch = _joint_batch(limits, t_h, t_w)
        if batch == 0 and not all(lim.takes(t_h, t_w) for lim in limits):
            raise ValueError(f"--tile {tile.size}: the backend does not take {t_h}x{t_w} inputs "
                             f"({_range_text(limits)})")
        return Plan(Tiles(t_h, t_w, overlap, "feather", grid), max(1, batch), forced=True, reason="--tile")
    need_h, need_w = protocol.model_input_size(h, w)
    whole = _joint_batch(limits, need_h, need_w)
    if whole >= 1:
        return Plan(protocol, whole)
    # Square tiles, as large as every backend takes and its budget holds, no larger than the image.
    cap_h, cap_w = pad_h, pad_w
    if isinstance(protocol, Tiles):  # shrink the official tiles, never grow them
        cap_h, cap_w = min(cap_h, protocol.tile_h), min(cap_w, protocol.tile_w)
    top = max(cap_h, cap_w)
    for lim in limits:
        if lim.hw_range is not None:
            top = min(top, lim.hw_range[1][0], lim.hw_range[1][1])
    top -= top % size_multiple
    choice = None
    for side in range(top, 0, -size_multiple):
        t_h, t_w = min(side, cap_h), min(side, cap_w)
        for lim in limits:  # a profile's minimum pads small sides up
            if lim.hw_range is not None:
                t_h, t_w = max(t_h, lim.hw_range[0][0]), max(t_w, lim.hw_range[0][1])
        batch = _joint_batch(limits, t_h, t_w)
        if batch >= 1:
            choice = (t_h, t_w, batch)
            break
    reason = "budget"
    if choice is None:  # not even the smallest tile fits the budget: run the smallest the profile takes
        t_h = t_w = size_multiple
        for lim in limits:
            if lim.hw_range is not None:
                t_h, t_w = max(t_h, lim.hw_range[0][0]), max(t_w, lim.hw_range[0][1])
        if not all(lim.takes(t_h, t_w) for lim in limits):
            raise ValueError(f"no tile size fits every backend ({_range_text(limits)})")
        choice, reason = (t_h, t_w, 1), "budget (smallest tile; over budget)"
    t_h, t_w, batch = choice
    overlap = min(default_overlap(min(t_h, t_w)), min(t_h, t_w) - 1)
    if pad_h > t_h or pad_w > t_w:
        # as few tiles as the chosen size needs, each shrunk to cover the image evenly: less
        # overlap computed twice (tiles then need not be square)
        b_h, b_w = _balanced(pad_h, t_h, overlap, size_multiple), _balanced(pad_w, t_w, overlap, size_multiple)
        if _joint_batch(limits, b_h, b_w) >= batch:
            t_h, t_w, batch = b_h, b_w, _joint_batch(limits, b_h, b_w)
    if not all(lim.takes(need_h, need_w) for lim in limits):
        reason = "profile" if all(lim.pixels() == math.inf for lim in limits) else "budget and profile"
    if pad_h <= t_h and pad_w <= t_w:
        overlap = 0  # one tile covers the image
    return Plan(Tiles(t_h, t_w, overlap, "feather", grid), batch, tiled_to_fit=True, reason=reason)


def _balanced(length: int, tile: int, overlap: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` (<= tile) whose tiles cover ``length`` in as few tiles as ``tile`` does."""
    if length <= tile:
        return tile
    n = math.ceil((length - overlap) / (tile - overlap))
    return min(tile, max(multiple, _next_multiple(math.ceil((length + (n - 1) * overlap) / n), multiple)))


def _range_text(limits) -> str:
    ranges = [lim.hw_range for lim in limits if lim.hw_range is not None]
    return "; ".join(f"H {a[0]}..{b[0]}, W {a[1]}..{b[1]}" for a, b in ranges) or "any size"


# --------------------------------------------------------------------------------------------
# Streamed tiles
# --------------------------------------------------------------------------------------------

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


def tile_grid(height: int, width: int, tiles: Tiles) -> tuple[list[int], list[int], int, int]:
    """Tile origins along H and W over the image reflect-padded as ``tiles`` says (to its grid and
    to one tile), and that padded size."""
    ph, pw = tiles.padded_size(height, width)
    return tiles.starts(ph, tiles.tile_h), tiles.starts(pw, tiles.tile_w), ph, pw


def count_tiles(height: int, width: int, tiles: Tiles) -> int:
    tops, lefts, _, _ = tile_grid(height, width, tiles)
    return len(tops) * len(lefts)


def run_tiles(source, tiles: Tiles, infer: Callable[[np.ndarray], np.ndarray], batch: int, sink: Sink,
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
    th, tw, overlap = tiles.tile_h, tiles.tile_w, tiles.overlap
    n_img, height, width = source.images, source.height, source.width
    tops, lefts, ph, pw = tile_grid(height, width, tiles)
    row_index, col_index = reflect_index(height, ph), reflect_index(width, pw)
    if tiles.blend == "feather":
        wy, wx = feather(th, overlap), feather(tw, overlap)
    else:
        wy, wx = np.ones(th, dtype=np.float32), np.ones(tw, dtype=np.float32)
    weight = np.outer(wy, wx)
    sum_y, sum_x = np.zeros(ph, dtype=np.float32), np.zeros(pw, dtype=np.float32)
    for t in tops:
        sum_y[t : t + th] += wy
    for left in lefts:
        sum_x[left : left + tw] += wx
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


def run_tiles_to_array(source, tiles: Tiles, infer, batch: int, progress=None) -> np.ndarray:
    """:func:`run_tiles` into one float32 [N, C, H, W] output."""
    out = None

    def sink(b, top, rows):
        nonlocal out
        if out is None:
            out = np.empty((source.images, rows.shape[0], source.height, source.width), dtype=np.float32)
        out[b, :, top : top + rows.shape[1]] = rows

    run_tiles(source, tiles, infer, batch, sink, progress)
    return out


def summary_line(counts: dict, budget: float) -> str | None:
    """'N photo(s) ... tiled ...' from {(tile description, reason): photos}; None when none was."""
    if not counts:
        return None
    parts = []
    for (tiles, reason), n in sorted(counts.items()):
        why = {"--tile": "as --tile asks", "profile": "to fit the engine's profile"}.get(
            reason, f"to fit the memory budget ({format_size(budget)})" if "budget" in reason else reason)
        parts.append(f"{n} photo{'s' if n != 1 else ''} ran as tiles {tiles} {why}")
    return "; ".join(parts)
