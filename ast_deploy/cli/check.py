"""ast-check: the accuracy-parity gate. Runs a reference and a candidate (checkpoint, ONNX or engine)
on the same images and fails when the candidate drifts beyond the precision's tolerance.

Exit codes: 0 all images pass, 1 any fails (or the candidate fails to run), 2 bad usage.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path


from ..budget import BudgetError
from ..checks.cases import Case, synthetic_cases as generated_cases
from ..checks.parity import CaseResult, ParityReport, check_parity
from ..checks.report import text_table, write_json, write_junit
from ..checks.tolerances import DEFAULT_TOLERANCES, PRECISIONS, tolerance_for
from ..images import READABLE_SUFFIXES, read_image
from ..planning import Limits
from ..protocols import hw_range
from ..recipes import load_recipe
from ..shapes import parse_sizes
from .common import UsageError, add_model_options, add_version, open_runner, tool_main

DEFAULT_SIZES = "256x256,192x320"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ast-check", description="Compare a candidate (ONNX model, TensorRT engine, checkpoint) with a "
        "reference on the same images: PSNR, SSIM, max abs and relative error per image, pass/fail per the "
        "precision's tolerance (task recipe, else " + ", ".join(
            f"{p.upper()} >= {t.psnr_min:g} dB" for p, t in DEFAULT_TOLERANCES.items()) + " PSNR, data range 1).",
        epilog="--images DIR: either DIR/input/ and DIR/target/ with files of the same stem (the candidate and "
               "the reference are also scored against the targets), or a folder of images.")
    p.add_argument("reference", help="the reference: usually the PyTorch checkpoint")
    p.add_argument("candidate", help="what is checked: an .onnx model, a TensorRT engine, or a checkpoint")
    add_model_options(p)
    p.add_argument("--images", metavar="DIR", help="compare on these images (see below)")
    p.add_argument("--sizes", metavar="HxW,...",
                   help=f"compare on generated images of these sizes (default without --images: {DEFAULT_SIZES})")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images (default 0)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="the candidate's precision (default fp32)")
    p.add_argument("--report", metavar="PATH", help="write the full report as JSON")
    p.add_argument("--junit", metavar="PATH", help="write a JUnit XML report (one test case per image)")
    add_version(p)
    return p


def image_cases(folder: str):
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"--images {folder}: no such folder")
    inputs = root / "input" if (root / "input").is_dir() else root
    targets = root / "target" if (root / "target").is_dir() else None
    files = sorted(p for p in inputs.iterdir() if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES)
    if not files:
        raise UsageError(f"--images {folder}: no images in {inputs}")
    target_files = {p.stem: p for p in targets.iterdir() if p.is_file()} if targets else {}
    cases = []
    for path in files:
        try:
            image = read_image(path).pixels.transpose(2, 0, 1)
            target = None
            if path.stem in target_files:
                target = read_image(target_files[path.stem]).pixels.transpose(2, 0, 1)
                if target.shape != image.shape:
                    raise UsageError(f"{target_files[path.stem]}: size {target.shape[1:]} differs from its input's "
                                     f"{image.shape[1:]}")
        except ValueError as e:  # ImageError
            raise UsageError(str(e)) from e
        cases.append(Case.from_chw(path.stem, image, target))
    if targets is not None and not any(c.target is not None for c in cases):
        raise UsageError(f"--images {folder}: no file in {targets} has the name of an input")
    return cases


def synthetic_cases(sizes: str, seed: int):
    try:
        parsed = parse_sizes(sizes, min_side=16)
    except ValueError as e:
        raise UsageError(f"--sizes: {e}") from None
    return generated_cases(parsed, seed)


def paired(reference, candidate):
    """Both Runners as [N, 3, H, W] -> output callables that run each image with the candidate's
    plan: the one ast-restore runs with the same flags for the deployed model, whatever the
    reference's own cost, so the gate checks what users get. Only where the reference cannot take
    that plan's sizes (an engine's profile) does its profile join the plan."""
    reference_profile = Limits(math.inf, None, hw_range(reference.backend.shape_range))

    def plan(x):
        h, w = x.shape[2:]
        return candidate.plan_for(h, w, images=len(x), others=[reference_profile])

    def run_reference(x):
        p = plan(x)
        shape = p.protocol.model_input_size(*x.shape[2:])
        return reference.run_nchw(x, plan=replace(p, batch=max(1, reference.limits().batch_for(*shape))))

    return run_reference, (lambda x: candidate.run_nchw(x, plan=plan(x)))


def write_outputs(report, args) -> None:
    if args.report:
        write_json(report, args.report)
    if args.junit:
        write_junit(report, args.junit)


@tool_main("ast-check")
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        cases = (image_cases(args.images) if args.images else []) + (
            synthetic_cases(args.sizes or DEFAULT_SIZES, args.seed) if args.sizes or not args.images else [])
        recipe = load_recipe(args.task, required=False)
        tolerance = tolerance_for(args.precision, recipe)
        reference = open_runner(args.reference, args)
        candidate = open_runner(args.candidate, args)
    except UsageError as e:
        print(f"ast-check: error: {e}", file=sys.stderr)
        return 2
    try:
        report = check_parity(*paired(reference, candidate), cases, tolerance, precision=args.precision,
                              names=(args.reference, args.candidate))
    except BudgetError as e:  # a named protocol over an explicit --max-memory
        print(f"ast-check: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a side that crashes or refuses an image fails the gate

        message = f"running the comparison failed: {type(e).__name__}: {e}"
        report = ParityReport(args.reference, args.candidate, args.precision, tolerance,
                              [CaseResult("run", (0, 0, 0, 0), {}, None, [message])])
        print(f"ast-check: {message}", file=sys.stderr)
    report.extra["tolerance_from"] = (str(recipe.path) if recipe is not None and args.precision in recipe.tolerances
                                      else "defaults (ast_deploy.checks.tolerances)")
    report.extra["backends"] = {side: getattr(runner.backend, "name", type(runner.backend).__name__)
                                for side, runner in (("reference", reference), ("candidate", candidate))}
    print(text_table(report))
    for path, runner in ((args.reference, reference), (args.candidate, candidate)):
        if runner.runtime_choice is not None:  # what --runtime auto chose, and why
            print(f"ast-check: {path}: {runner.runtime_choice.summary()}", file=sys.stderr)
    note = candidate.tiling_note()
    if note:
        print(f"ast-check: both sides ran the candidate's plan: {note}", file=sys.stderr)
    write_outputs(report, args)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
