"""ast-restore: restore image files with a checkpoint, an ONNX model or a TensorRT engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import UsageError, add_model_options, expand_inputs, open_runner


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ast-restore", description="Restore images (files, folders, globs) with AST; "
                                "results are written as PNG, same bit depth as the source.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or glob patterns")
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="folder for the restored images")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--engine", help="TensorRT engine (.plan / .engine)")
    source.add_argument("--onnx", help="ONNX model")
    source.add_argument("--weights", help="PyTorch checkpoint (with --task or --config)")
    add_model_options(p)
    p.add_argument("--side-by-side", action="store_true", help="write input and result next to each other")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs (default: skip them)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from tqdm import tqdm

    from ..images import READABLE_SUFFIXES, restore_file

    try:
        runner = open_runner(args.engine or args.onnx or args.weights, args)
    except UsageError as e:
        print(f"ast-restore: error: {e}", file=sys.stderr)
        return 2
    inputs, failures = expand_inputs(args.inputs, READABLE_SUFFIXES)
    outdir = Path(args.out)
    done, (jobs, skipped, clashes) = 0, plan_outputs(inputs, outdir, args.force)
    failures += clashes
    for src, dst in tqdm(jobs, desc="restoring", unit="image", file=sys.stderr, disable=None):
        try:
            restore_file(src, dst, runner, side_by_side=args.side_by_side)
            done += 1
        except Exception as e:  # one bad file must not stop the batch; all are listed at the end
            failures.append(str(e) if str(src) in str(e) else f"{src}: {type(e).__name__}: {e}")
            tqdm.write(f"ast-restore: failed: {failures[-1]}", file=sys.stderr)
    return summarize(done, skipped, failures, outdir)


def plan_outputs(inputs, outdir, force: bool, exists=None):
    """(jobs, skipped, failures): the (source, output) pairs to restore (an output is ``outdir/<stem>.png``;
    ``outdir`` a Path, or a URI string joined with "/"), the outputs that exist and are kept without
    ``force`` (``exists`` tests a path, default Path.exists), and the sources whose output is taken."""
    exists = exists or (lambda dst: Path(dst).exists())
    jobs, skipped, failures, claimed = [], [], [], {}
    for src in inputs:
        name = f"{src.stem}.png"
        dst = outdir / name if isinstance(outdir, Path) else f"{outdir.rstrip('/')}/{name}"
        if dst in claimed:
            failures.append(f"{src}: its output {dst} is already taken by {claimed[dst]}; rename one of them")
            continue
        claimed[dst] = src
        if exists(dst) and not force:
            skipped.append(dst)
            continue
        jobs.append((src, dst))
    return jobs, skipped, failures


def summarize(done: int, skipped: list, failures: list[str], outdir) -> int:
    """Print the closing summary; the exit code (1 when an input failed)."""
    print(f"restored {done} image(s) into {outdir}"
          + (f", skipped {len(skipped)} that exist (--force overwrites)" if skipped else "")
          + (f", {len(failures)} failed:" if failures else ""), file=sys.stderr if failures else sys.stdout)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
