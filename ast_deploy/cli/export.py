"""``ast-export``: PyTorch AST -> clean ONNX, validated against PyTorch, then (where TensorRT is
installed) a TensorRT engine.

Exit codes: 0 done; 1 the exported model is beyond the recipe's tolerance; 2 bad arguments or
configuration (missing weights, recipe problems, unusable calibration images);
3 the checkpoint cannot be used; 4 the export itself failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..pipeline import ConfigError, ExportJob, MissingWeightsError, export_task, resolve_weights
from ..recipes import RecipeError
from ..tasks import TASKS
from ..opsets import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, SUPPORTED_OPSETS
from .common import add_version, positive_int, size_arg, tool_main

EXIT_OK, EXIT_TOLERANCE, EXIT_USAGE, EXIT_CHECKPOINT, EXIT_EXPORT = 0, 1, 2, 3, 4

__all__ = ["EXIT_CHECKPOINT", "EXIT_EXPORT", "EXIT_OK", "EXIT_TOLERANCE", "EXIT_USAGE", "MissingWeightsError",
           "build_parser", "main", "resolve_weights"]


def _opset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value not in SUPPORTED_OPSETS:
        raise argparse.ArgumentTypeError(f"opset {text!r} is not supported: use {MIN_OPSET} to {MAX_OPSET}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ast-export",
        description="Export an AST restoration model to ONNX (custom ast:: ops with standard-op fallbacks), "
                    "validate it against PyTorch and, where TensorRT is installed, build the engine.",
        epilog="Exit codes: 0 ok, 1 beyond tolerance, 2 usage/configuration, 3 checkpoint, 4 export failure.")
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="restoration task (sets architecture and recipe)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", metavar="PATH",
                   help="official-layout checkpoint (.pth) of the task's model (derain defaults to the demo "
                        "weights, trained on synthetic rain)")
    w.add_argument("--random-init", action="store_true", help="no checkpoint: export a randomly initialised model")
    p.add_argument("--out", metavar="DIR", type=Path, help="output folder (default engines/<task>/)")
    s = p.add_mutually_exclusive_group()
    s.add_argument("--shape", metavar="HxW", type=size_arg, help="static input size (multiples of the model's size multiple)")
    s.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width (the default)")
    p.add_argument("--batch", metavar="N", type=positive_int,
                   help="batch of a static (--shape) export, default 1; with --dynamic the validation batch "
                        "(default from the recipe)")
    p.add_argument("--opset", metavar="N", type=_opset, default=None,
                   help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress (results and errors are printed)")
    p.add_argument("--no-custom-ops", action="store_true",
                   help="standard ONNX ops only (no ast:: nodes, no TensorRT plugins)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true",
                      help="mixed FP16 graph (FP32 I/O; nodes whose calibrated range is too wide stay FP32)")
    prec.add_argument("--int8", action="store_true",
                      help="INT8 graph, calibrated on --calib: Q/DQ placed as --int8-for's runtime runs fastest")
    p.add_argument("--int8-for", choices=sorted(INT8_RUNTIMES), default=None,
                   help="the runtime of the INT8 graph: tensorrt (the default: INT8 activations, Q/DQ on "
                        "Conv and MatMul inputs; an engine is built or its ast-build command printed) or "
                        "onnxruntime (UINT8 activations and INT8 MatMul weights, which ONNX Runtime's CPU "
                        "provider runs as integer kernels; written as <stem>.int8-ort.onnx)")
    p.add_argument("--calib", metavar="DIR", type=Path,
                   help="calibration images for --fp16/--int8 (default: the demo's rainy images)")
    p.add_argument("--recipe", metavar="PATH", type=Path, help="recipe TOML instead of the task's shipped recipe")
    p.add_argument("--arch-config", metavar="PATH", type=Path,
                   help="JSON of AST constructor keywords replacing the task's architecture "
                        "(for tests and experiments with non-released configurations)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init and of the validation images")
    add_version(p)
    return p


INT8_RUNTIMES = {"tensorrt": "tensorrt", "onnxruntime": "ort"}  # --int8-for -> precision.int8 placement


def job_from_args(args) -> ExportJob:
    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    return ExportJob(task=args.task, weights=args.weights, random_init=args.random_init, out=args.out,
                     shape=args.shape, batch=args.batch, opset=args.opset, custom_ops=not args.no_custom_ops,
                     precision=precision, calib=args.calib,
                     int8_placement=INT8_RUNTIMES.get(args.int8_for), recipe=args.recipe, arch_config=args.arch_config,
                     seed=args.seed, quiet=args.quiet)


def run(args) -> int:
    outcome = export_task(job_from_args(args))
    return EXIT_OK if outcome.passed else EXIT_TOLERANCE


@tool_main("ast-export")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed usage and the error
        return int(e.code or 0)
    from ..export import ExportError, GraphCheckError  # torch: only once the arguments parse
    from ..model import CheckpointError

    try:
        return run(args)
    except (ConfigError, RecipeError) as e:
        print(f"ast-export: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CheckpointError as e:
        print(f"ast-export: error: {e}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except (ExportError, GraphCheckError) as e:
        print(f"ast-export: export failed: {e}", file=sys.stderr)
        return EXIT_EXPORT


if __name__ == "__main__":
    sys.exit(main())
