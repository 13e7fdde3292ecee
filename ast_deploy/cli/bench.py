"""ast-bench: latency, throughput and peak memory of checkpoints, ONNX models and engines."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

from ..bench import benchmark, format_table
from ..budget import BudgetError, current_rss, format_size, release_memory
from ..checks.synthetic import synthetic_image
from ..console import Progress
from ..fileio import atomic_write
from ..shapes import parse_sizes
from .common import UsageError, add_model_options, add_version, open_runner, tool_main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ast-bench", description="Benchmark AST sources (checkpoints, ONNX models, "
                                "TensorRT engines) through the Runner, protocol included, after warm-up.")
    p.add_argument("sources", nargs="*", metavar="SOURCE")
    add_model_options(p)
    p.add_argument("--sizes", default="256x256", metavar="HxW,...", help="image sizes (default 256x256)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    p.add_argument("--runs", type=int, default=10, help="timed calls per source and size (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the table")
    video = p.add_argument_group("a restored clip's quality instead of speed (pip install -e \".[video]\")")
    video.add_argument("--video", metavar="RESTORED", help="flicker of a restored clip (mean absolute difference "
                       "of consecutive frames on static regions of --reference), PSNR / SSIM against --reference")
    video.add_argument("--reference", metavar="CLEAN", help="the clean clip (same frames)")
    video.add_argument("--original", metavar="INPUT", help="the clip that was restored, scored alike")
    add_version(p)
    return p


@tool_main("ast-bench")
def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.video:
        return video_main(args)
    if not args.sources:
        p.error("give SOURCE models to time, or --video RESTORED")
    if args.batch < 1 or args.runs < 1 or args.warmup < 0:
        p.error("--batch and --runs must be >= 1, --warmup >= 0")

    try:
        sizes = parse_sizes(args.sizes, min_side=16)
    except ValueError as e:
        p.error(f"--sizes: {e}")

    rows, notes, choices = [], set(), []
    bar = Progress(total=len(args.sources) * len(sizes), desc="benchmarking", unit="run", quiet=args.quiet)
    for source in args.sources:
        try:
            runner = open_runner(source, args)
        except UsageError as e:
            print(f"ast-bench: error: {e}", file=sys.stderr)
            return 2
        choice = runner.runtime_choice
        if choice is not None:
            choices.append(f"{source}: {choice.summary()}")
        for h, w in sizes:
            batch = np.stack([synthetic_image(h, w, seed) for seed in range(args.batch)])
            # the process's own baseline (imports, weights), measured after the cost probe; the
            # budget covers the working set on top of it
            try:
                plan = runner.plan_for(h, w, images=args.batch)
            except BudgetError as e:  # a named protocol over an explicit --max-memory
                print(f"ast-bench: error: {source}: {e}", file=sys.stderr)
                return 2
            release_memory()
            baseline = current_rss()
            result = benchmark(runner, batch, runs=args.runs, warmup=args.warmup)
            rows.append({"source": str(source), "size": f"{h}x{w}", "protocol": str(runner.protocol),
                         "backend": getattr(runner.backend, "name", type(runner.backend).__name__), **result,
                         "runtime": getattr(runner.backend, "runtime", None),
                         "inference_precision": getattr(runner.backend, "inference_precision", None),
                         # OpenVINO: FRFN blocks run channels-first (backends.channels_first)
                         "channels_first_ffn": getattr(runner.backend, "channels_first_ffn", None),
                         "runtime_choice": None if choice is None else dataclasses.asdict(choice),
                         "baseline_rss_mb": baseline / 2 ** 20, "max_memory": format_size(runner.budget),
                         "plan": str(plan.protocol), "plan_batch": plan.batch})
            bar.update(status=f"{source} {h}x{w}: {result['mean_ms']:.1f} ms")
        notes.add(runner.tiling_note())
    print(format_table(rows))
    for line in choices:  # which runtime --runtime auto chose, and the figures behind it
        print(f"ast-bench: {line}", file=sys.stderr)
    notes = {runner_note for runner_note in notes if runner_note}
    for note in sorted(notes):
        print(f"ast-bench: {note}", file=sys.stderr)
    if args.json:
        atomic_write(args.json, json.dumps(rows, indent=2) + "\n")
    return 0


def video_main(args) -> int:
    """ast-bench --video: flicker, PSNR and SSIM of a restored clip, as a table (and JSON)."""
    from ..video import VideoError
    from ..video.quality import video_quality

    try:
        result = video_quality(args.video, args.reference, args.original)
    except VideoError as e:
        print(f"ast-bench: error: {e}", file=sys.stderr)
        return 2
    print(f"{'clip':<10} {'frames':>6} {'flicker x255':>12} {'PSNR dB':>8} {'SSIM':>6}  path")
    for name, path in (("restored", args.video), ("reference", args.reference), ("original", args.original)):
        if path:
            psnr_db, ssim = result.get(f"psnr_{name}"), result.get(f"ssim_{name}")
            print(f"{name:<10} {result['frames']:>6} {result[f'flicker_{name}'] * 255:>12.3f} "
                  f"{'-' if psnr_db is None else f'{psnr_db:.2f}':>8} {'-' if ssim is None else f'{ssim:.4f}':>6}  {path}")
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
