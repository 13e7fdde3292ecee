"""Helpers the benchmark scripts share: CUDA-event timing and the --sizes list of square sides."""

from __future__ import annotations

import statistics


def cuda_median_ms(fn, runs: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()`` on the current CUDA stream, timed with CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def square_sides(parser, text: str, multiple: int = 128) -> list[int]:
    """``"256,512"`` -> [256, 512]; anything else, or a side that is no positive multiple of
    ``multiple`` (AST-B's size multiple), is a usage error of ``parser``."""
    try:
        sides = [int(s) for s in text.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, not {text!r}")
    if any(s <= 0 or s % multiple for s in sides):
        parser.error(f"--sizes must be positive multiples of {multiple} (AST-B's size multiple)")
    return sides
