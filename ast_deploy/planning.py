"""The plan of an image: run it whole as its protocol says, or as tiles that fit the memory budget.

:func:`make_plan` is a pure function of the image size, the protocol and the limits of the
backends that will run it (budget, measured cost per pixel, shape profile, largest batch). When
the protocol's model input fits every backend, the plan is the protocol itself (parity with the
official outputs is untouched); otherwise square tiles as large as fit, feathered where they
overlap, in batches that fit. Those tiles cover the image reflect-padded to the size multiple (to
``pad:N``'s N under that protocol), with origins on that grid, so each tile sees the context and
the window partition of the whole padded run (46 -> 58 dB against the whole image on the demo
photo; benchmarks/RESULTS.md, memory section).

The tiles run streamed (:mod:`ast_deploy.tiling`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable


from .budget import UNLIMITED, Cost, GiB, MiB, format_size
from .protocols import Pad, Protocol, Tiles

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
    named: bool = False  # the caller named the protocol: the budget never re-plans it (only a profile may)

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
              tile: TileSpec | None = None, images: int = 1, *, named: bool = False) -> Plan:
    """The plan for ``images`` images of h x w under every one of ``limits`` (the stricter wins).
    Tiles (planned or forced) cover the image reflect-padded to multiples of
    :func:`tile_grid_step`, with origins on that grid (``Tiles.grid``). A ``named`` protocol (one
    the caller chose) is never re-planned for a budget: it runs whole in batches of at least one
    wherever the profiles take its model input (tiles only where a profile cannot)."""
    limits = [limits] if isinstance(limits, Limits) else list(limits)
    grid = tile_grid_step(protocol, size_multiple)
    pad_h, pad_w = _next_multiple(h, grid), _next_multiple(w, grid)  # what the tiles cover
    if tile is not None:
        return _forced_tiles(tile, limits, size_multiple, grid, pad_h, pad_w)
    need_h, need_w = protocol.model_input_size(h, w)
    whole = _joint_batch(limits, need_h, need_w)
    if whole >= 1 or named and all(lim.takes(need_h, need_w) for lim in limits):
        return Plan(protocol, max(1, whole), named=named)
    # Square tiles, as large as every backend takes and its budget holds, no larger than the image.
    cap_h, cap_w = pad_h, pad_w
    if isinstance(protocol, Tiles):  # shrink the official tiles, never grow them
        cap_h, cap_w = min(cap_h, protocol.tile_h), min(cap_w, protocol.tile_w)
    top = max(cap_h, cap_w)
    for lim in limits:
        if lim.hw_range is not None:
            top = min(top, lim.hw_range[1][0], lim.hw_range[1][1])
    top -= top % size_multiple
    (t_h, t_w, batch), reason = _largest_tile(limits, size_multiple, top, cap_h, cap_w)
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
    return Plan(Tiles(t_h, t_w, overlap, "feather", grid), batch, tiled_to_fit=True, reason=reason, named=named)


def protocol_need(protocol: Protocol, h: int, w: int, cost: Cost | None) -> float:
    """Working memory one h x w image needs to run ``protocol`` as it is (batch 1), by ``cost``."""
    if cost is None:
        return 0.0
    return cost.of(1, *protocol.model_input_size(h, w))


def suggest_budget(need: float) -> str:
    """A --max-memory value at or above ``need`` bytes: tenths of GiB from 1 GiB, else whole MiB."""
    if need >= GiB:
        return f"{math.ceil(need / GiB * 10) / 10:g}G"
    return f"{max(1, math.ceil(need / MiB))}M"


def halved_plan(plan: Plan, h: int, w: int, protocol: Protocol, size_multiple: int, hw_range=None) -> Plan | None:
    """Feathered tiles of at most half the area of ``plan``'s model input, batch 1 (the retry after
    an allocation failure); None when no tile of the size multiple is that small."""
    p = plan.protocol
    t_h, t_w = (p.tile_h, p.tile_w) if isinstance(p, Tiles) else p.model_input_size(h, w)
    half = t_h * t_w / 2
    smaller = make_plan(h, w, protocol, Limits(half, Cost(1.0), hw_range, 1), size_multiple)
    s = smaller.protocol
    if not isinstance(s, Tiles) or s.tile_h * s.tile_w > half:
        return None
    return Plan(s, 1, tiled_to_fit=True, reason="budget (after an allocation failure)")


def _forced_tiles(tile: TileSpec, limits: list[Limits], size_multiple: int, grid: int, pad_h: int, pad_w: int) -> Plan:
    """``--tile``'s plan: its size (no larger than the padded image), in batches the limits allow."""
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


def _profile_min(limits: list[Limits], t_h: int, t_w: int) -> tuple[int, int]:
    """A tile padded up to every profile's minimum side."""
    for lim in limits:
        if lim.hw_range is not None:
            t_h, t_w = max(t_h, lim.hw_range[0][0]), max(t_w, lim.hw_range[0][1])
    return t_h, t_w


def _largest_tile(limits: list[Limits], size_multiple: int, top: int, cap_h: int, cap_w: int):
    """((tile H, tile W, batch), reason): the largest square side from ``top`` down (capped by the
    image) whose batch of one fits every limit; if none does, the smallest tile the profiles take."""
    for side in range(top, 0, -size_multiple):
        t_h, t_w = _profile_min(limits, min(side, cap_h), min(side, cap_w))
        batch = _joint_batch(limits, t_h, t_w)
        if batch >= 1:
            return (t_h, t_w, batch), "budget"
    t_h, t_w = _profile_min(limits, size_multiple, size_multiple)
    if not all(lim.takes(t_h, t_w) for lim in limits):
        raise ValueError(f"no tile size fits every backend ({_range_text(limits)})")
    return (t_h, t_w, 1), "budget (smallest tile; over budget)"


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

def summary_line(counts: dict, budget: float) -> str | None:
    """'N photo(s) ... tiled ...' from {(tile description, reason): photos}; None when none was."""
    if not counts:
        return None
    parts = []
    for (tiles, reason), n in sorted(counts.items()):
        why = {"--tile": "as --tile asks", "profile": "to fit the engine's profile"}.get(reason)
        if why is None:
            why = ("after running out of memory (retried at half the tile area)" if "allocation" in reason
                   else f"to fit the memory budget ({format_size(budget)})" if "budget" in reason else reason)
        parts.append(f"{n} photo{'s' if n != 1 else ''} ran as tiles {tiles} {why}")
    return "; ".join(parts)
