"""ast-restore: restore image files with a checkpoint, an ONNX model or a TensorRT engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..budget import BudgetError
from ..console import Progress, TileProgress
from ..fileio import WriteError
from ..images import READABLE_SUFFIXES, restore_file
from ..outputs import OutputError, plan_outputs
from ..video.probe import VIDEO_SUFFIXES
from .restore_video import add_video_options, plan_clips, restore_clips, split_inputs
from .common import (
    EXIT_USAGE,
    UsageError,
    add_model_options,
    add_version,
    expand_inputs,
    open_runner,
    summarize,
    tool_main,
)

__all__ = ["main", "parser", "plan_outputs", "stop_message", "summarize"]  # plan_outputs lives in ast_deploy.outputs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ast-restore", description="Restore images and clips (files, folders, globs) with "
                                "AST; images are written as PNG, same bit depth as the source, clips as the same "
                                "container with the same timing, colour tags and other streams.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image and video files, folders of them, or glob "
                   "patterns")
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="folder for the restored images and clips "
                   "(or a video file name for one clip: -o restored.mkv)")
    source = p.add_mutually_exclusive_group()  # none: --task's engines/TASK/ast-TASK.onnx (default_model)
    source.add_argument("--engine", help="TensorRT engine (.plan / .engine)")
    source.add_argument("--onnx", help="ONNX model")
    source.add_argument("--weights", help="PyTorch checkpoint (with --task or --config)")
    source.add_argument("--server", metavar="URL", help="a model served by Triton Inference Server: "
                        "http://HOST:8000/NAME or grpc://HOST:8001/NAME (ast-serve)")
    add_model_options(p)
    p.add_argument("--side-by-side", action="store_true", help="write input and result next to each other")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing outputs (default: keep them, so that rerunning an interrupted command restores "
                        "only what is missing; an input is never overwritten), and run "
                        "an ONNX exported for another --task")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress (failures and the summary are printed)")
    add_video_options(p)
    add_version(p)
    # Ray Data (ast_deploy.scale): on a multi-node cluster OUT must be shared storage or a pyarrow URI.
    ray = p.add_argument_group("scale out with Ray (pip install -e \".[ray]\")")
    ray.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster: local (started on 127.0.0.1 and "
                     "stopped afterwards), auto, or ray://HOST:PORT")
    ray.add_argument("--workers", type=int, metavar="N", help="actors holding a model (default: one per "
                     "--gpus-per-worker GPUs, else one per CPU but one)")
    ray.add_argument("--gpus-per-worker", type=float, default=0, metavar="G", help="GPUs per actor (default 0)")
    return p


@tool_main("ast-restore")
def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if (args.workers is not None or args.gpus_per_worker) and not args.ray:
        p.error("--workers and --gpus-per-worker need --ray")
    if not (args.engine or args.onnx or args.weights or args.server):
        args.onnx = default_model(p, args)

    inputs, failures = expand_inputs(args.inputs, READABLE_SUFFIXES | VIDEO_SUFFIXES)
    photos, clips = split_inputs(inputs)
    try:  # where the outputs go is checked before the model is loaded (ast_deploy.outputs)
        if args.ray:
            if clips and photos:
                raise UsageError("with --ray, restore photos and clips in separate runs")
            from .restore_ray import run_cli, run_clips_cli

            return run_clips_cli(args, clips, failures) if clips else run_cli(args, inputs, failures)
        outdir = Path(args.out)
        clip_jobs, clip_skipped, clip_clashes = plan_clips(clips, args.out, inputs, args.force)
        jobs, skipped, clashes = plan_outputs(photos, outdir, args.force) if photos or not clips else ([], [], [])

        args.tile_progress = TileProgress("tiles", quiet=args.quiet)
        runner = open_runner(args.engine or args.onnx or args.weights or args.server, args)
    except (UsageError, OutputError) as e:
        print(f"ast-restore: error: {e}", file=sys.stderr)
        return 2
    failures += clashes + clip_clashes
    clips_done, clip_failures = restore_clips(clip_jobs, runner, args) if clip_jobs else (0, [])
    failures += clip_failures
    if clips and not photos:
        if runner.tiling_note():
            print(f"ast-restore: {runner.tiling_note()}", file=sys.stderr)
        return summarize(clips_done, clip_skipped, failures, outdir, "clip")
    done, stopped = 0, None
    with Progress(total=len(jobs), desc="restoring", unit="image", quiet=args.quiet) as bar:
        for index, (src, dst) in enumerate(jobs):
            args.tile_progress.desc = f"tiles of {Path(src).name}"
            try:
                restore_file(src, dst, runner, side_by_side=args.side_by_side)
                done += 1
            except BudgetError as e:  # a named protocol over an explicit --max-memory: usage, not the file
                bar.write(f"ast-restore: error: {src}: {e}")
                return EXIT_USAGE
            except WriteError as e:  # a full or read-only folder fails every later output too: stop
                failures.append(f"{src}: {e}")
                if e.folder_failed:
                    stopped = (e, len(jobs) - index - 1)
                    break
                bar.write(f"ast-restore: failed: {failures[-1]}")
            except Exception as e:  # one bad file must not stop the batch; all are listed at the end
                failures.append(str(e) if str(src) in str(e) else f"{src}: {type(e).__name__}: {e}")
                bar.write(f"ast-restore: failed: {failures[-1]}")
            bar.update(status=Path(src).name)
    if runner.tiling_note():
        print(f"ast-restore: {runner.tiling_note()}", file=sys.stderr)
    if clips:
        print(f"restored {clips_done} clip(s)" + (f", skipped {len(clip_skipped)} that exist" if clip_skipped else ""))
    if stopped:
        print(stop_message(*stopped), file=sys.stderr)
    return summarize(done, skipped, failures, outdir)


def stop_message(error: WriteError, left: int) -> str:
    """The line that says why a run stopped at a folder that takes no more files, and how to resume."""
    return (f"ast-restore: error: {error}; stopped with {left} image(s) not attempted (the inputs are "
            f"untouched, no output is half-written). Free space or make {error.path.parent} writable, then run "
            "the same command again: finished outputs are kept and only the rest is restored")


def default_model(p: argparse.ArgumentParser, args) -> str:
    """The model when no model option is given: the ONNX that ``ast-export --task TASK`` writes by
    default, engines/TASK/ast-TASK.onnx (relative to the current folder), when it exists."""
    flags = "--onnx, --engine, --weights or --server"
    if args.task is None:
        p.error(f"no model given: use {flags}, or --task TASK to run engines/TASK/ast-TASK.onnx "
                "(which ast-export --task TASK makes)")
    path = Path("engines") / args.task / f"ast-{args.task}.onnx"
    if not path.is_file():
        p.error(f"no model given and {path} does not exist: make it with ast-export --task {args.task} "
                f"(in this folder), or give {flags}")
    if not args.quiet:
        print(f"ast-restore: no model option given: using {path}", file=sys.stderr)
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
