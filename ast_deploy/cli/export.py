"""``ast-export``: PyTorch AST -> clean ONNX, validated against PyTorch, then (where TensorRT is
installed) a TensorRT engine.

Exit codes: 0 done; 1 the exported model is beyond the recipe's tolerance; 2 bad arguments or
configuration (missing weights, recipe problems, unusable calibration images);
3 the checkpoint cannot be used; 4 the export itself failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from ..demo import DEMO_NOTICE, demo_weights
from ..export.onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, SUPPORTED_OPSETS
from ..metadata import export_metadata
from ..tasks import OFFICIAL_WEIGHTS_PAGE, TASKS, get_task
from .common import add_version, size_arg, tool_main

EXIT_OK, EXIT_TOLERANCE, EXIT_USAGE, EXIT_CHECKPOINT, EXIT_EXPORT = 0, 1, 2, 3, 4


class UsageError(Exception):
    """A problem with the command line or configuration (exit code 2)."""


class MissingWeightsError(UsageError):
    pass


def resolve_weights(task, weights: str | None, random_init: bool) -> Path | None:
    """Which weights to load: a path, or None for random initialisation.

    The one place that decides what happens when no weights are given: the demo weights where the
    task has them (with a notice: they are not the paper's), else an error naming the official ones.
    """
    if weights is not None:
        return Path(weights)
    if random_init:
        return None

    try:
        path = demo_weights(task.name)
    except (ValueError, FileNotFoundError):
        path = None
    if path is not None:
        print(f"ast-export: no --weights given: using {DEMO_NOTICE} ({path}).\n"
              f"  The official {task.name} checkpoint is published at {task.weights_link}", file=sys.stderr)
        return path

    raise MissingWeightsError(
        f"no weights given for task {task.name!r}.\n"
        f"  The official {task.name} checkpoint ({task.dataset}) is published at {task.weights_link}\n"
        f"  (all released checkpoints: {OFFICIAL_WEIGHTS_PAGE}); pass it with --weights PATH.\n"
        f"  To try the pipeline without weights, add --random-init (the exported model is then untrained).")


def _opset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value not in SUPPORTED_OPSETS:
        raise argparse.ArgumentTypeError(f"opset {text!r} is not supported: use {MIN_OPSET} to {MAX_OPSET}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
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
    p.add_argument("--batch", metavar="N", type=_positive,
                   help="batch of a static (--shape) export, default 1; with --dynamic the validation batch "
                        "(default from the recipe)")
    p.add_argument("--opset", metavar="N", type=_opset, default=None,
                   help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress (results and errors are printed)")
    add_version(p)
    p.add_argument("--no-custom-ops", action="store_true",
                   help="standard ONNX ops only (no ast:: nodes, no TensorRT plugins)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true",
                      help="mixed FP16 graph (FP32 I/O; nodes whose calibrated range is too wide stay FP32)")
    prec.add_argument("--int8", action="store_true",
                      help="INT8 graph: symmetric Q/DQ on the inputs of Conv/MatMul/Gemm, calibrated on --calib")
    p.add_argument("--calib", metavar="DIR", type=Path,
                   help="calibration images for --fp16/--int8 (default: the demo's rainy images)")
    p.add_argument("--recipe", metavar="PATH", type=Path, help="recipe TOML instead of the task's shipped recipe")
    p.add_argument("--arch-config", metavar="PATH", type=Path,
                   help="JSON of AST constructor keywords replacing the task's architecture "
                        "(for tests and experiments with non-released configurations)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init and of the validation images")
    return p


def _precision(args) -> str:
    return "fp16" if args.fp16 else "int8" if args.int8 else "fp32"


def _check_args(args) -> None:
    if args.calib is not None and not (args.int8 or args.fp16):
        raise UsageError("--calib only goes with --fp16 or --int8")
    if args.opset is not None and args.opset not in SUPPORTED_OPSETS:
        raise UsageError(f"--opset {args.opset} is not supported: use {MIN_OPSET} to {MAX_OPSET}")


def _build_model(task, args):
    from ..model import CheckpointError
    from ..model.factory import build_model

    arch = task.name
    if args.arch_config is not None:
        try:
            arch = json.loads(Path(args.arch_config).read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"--arch-config {args.arch_config}: {e}") from e
        if not isinstance(arch, dict):
            raise UsageError(f"--arch-config {args.arch_config} must hold a JSON object of AST keywords")
    weights = resolve_weights(task, args.weights, args.random_init)
    if weights is not None and args.weights is None and args.arch_config is None:
        arch = "demo"  # the demo weights are a small AST, not the task's architecture
    try:
        return build_model(arch, weights, seed=args.seed), weights
    except CheckpointError:
        raise
    except ValueError as e:  # a config AST cannot take
        raise UsageError(str(e)) from e


def _output_stem(task: str, shape, batch: int, custom_ops: bool) -> str:
    stem = f"ast-{task}" + ("" if shape is None else f"-{shape[0]}x{shape[1]}-b{batch}")
    return stem + ("" if custom_ops else "-std")


def ast_build_command(onnx_path: Path, recipe, static_shape=None) -> str:
    """The command that builds the engine on the target, with the profile spelt out (the target may
    have no recipe file, and a --recipe PATH given here is not the task's): a static export's own
    shape (a recipe's range cannot fit a fixed input), else the recipe's profile."""
    if static_shape is not None:
        return f"ast-build {onnx_path} --shapes {'x'.join(str(d) for d in static_shape)}"
    return f"ast-build {onnx_path} --shapes {recipe.profile}"


def _build_engine(onnx_path: Path, recipe, static_shape=None) -> None:
    command = ast_build_command(onnx_path, recipe, static_shape)
    if importlib.util.find_spec("tensorrt") is None:
        print(f"TensorRT is not installed here: the ONNX is ready. On the target machine run:\n  {command}")
        return
    try:
        from ..engines.build import build_engine
    except ImportError as e:
        print(f"TensorRT is installed but this ast_deploy has no engine builder ({e}); on a machine with it run:\n"
              f"  {command}")
        return
    build_engine(onnx_path, recipe=recipe, shapes=command.split("--shapes ")[1] if static_shape else None)


def run(args) -> int:
    from ..console import Progress
    from ..export import ValidationReport, apply_precision, export_onnx, load_recipe, validate_onnx
    from ..export.onnx_export import DEFAULT_OPSET
    from ..export.precision import PrecisionNotAvailable, ensure_available

    _check_args(args)
    precision = _precision(args)
    try:  # fail before the slow export
        ensure_available(precision, args.calib)
    except PrecisionNotAvailable as e:
        raise UsageError(str(e)) from e
    task = get_task(args.task)
    recipe = load_recipe(task.name, args.recipe)
    model, weights = _build_model(task, args)
    multiple = model.size_multiple
    recipe.check_size_multiple(multiple)
    if args.shape is not None and (args.shape[0] % multiple or args.shape[1] % multiple):
        raise UsageError(f"--shape {args.shape[0]}x{args.shape[1]}: H and W must be multiples of {multiple}")

    custom = not args.no_custom_ops
    opset = args.opset or DEFAULT_OPSET
    static_batch = args.batch or 1
    out_dir = args.out if args.out is not None else Path("engines") / task.name
    stem = _output_stem(task.name, args.shape, static_batch, custom)
    onnx_path, report_path = out_dir / f"{stem}.onnx", out_dir / f"{stem}.validation.json"
    if args.shape is not None:
        shapes = [(static_batch, model.dd_in, *args.shape)]
    else:
        batch = args.batch or recipe.validation_batch
        shapes = [(batch, model.dd_in, h, w) for h, w in recipe.validation_sizes]

    started = time.perf_counter()
    # One bar: export, clean-up and write, then one tick per inference of the validation.
    bar = Progress(total=3 + 2 * len(shapes), desc=f"ast-export {task.name}", unit="step", quiet=args.quiet)

    def on_stage(name: str) -> None:
        if name != "torch.onnx.export":
            bar.update(1)
        bar.describe(f"ast-export {task.name}: {name}")

    try:
        result = export_onnx(model, onnx_path, shape=args.shape, batch=static_batch, opset=opset,
                             custom_ops=custom, progress=on_stage,
                             metadata=export_metadata(multiple, task.name))
        bar.update(1)
        bar.describe(f"ast-export {task.name}: validate (pytorch, onnxruntime)")
        report: ValidationReport = validate_onnx(model, onnx_path, shapes, recipe.tolerance("fp32"), seed=args.seed,
                                                 on_infer=lambda: bar.update(1))
    finally:
        bar.close()
    total = time.perf_counter() - started

    report.extra = {
        "task": task.name, "weights": str(weights) if weights else "random-init", "opset": opset,
        "custom_ops": custom, "input_shape": result.input_shape, "nodes": result.stats.nodes,
        "inlined_nodes": result.stats.inlined_nodes, "custom_nodes": result.stats.custom_nodes,
        "seconds": {**{k: round(v, 2) for k, v in result.seconds.items()}, "total": round(total, 2)},
        "recipe": str(recipe.path),
    }
    report.save(report_path)
    print(f"{onnx_path}: {result.stats.nodes} nodes ({result.stats.custom_nodes} ast:: custom nodes, "
          f"{result.stats.inlined_nodes} with their functions inlined), input {result.input_shape}, opset {opset}")
    print(report.table())
    print(f"report: {report_path}  ({total:.0f} s)")
    if not report.passed:
        print(f"error: the exported model is beyond the {recipe.path.name} tolerance; the ONNX is kept for "
              "inspection but should not be deployed", file=sys.stderr)
        return EXIT_TOLERANCE

    deploy_path = apply_precision(onnx_path, precision, recipe=recipe, calib_dir=args.calib, size_multiple=multiple)
    if deploy_path != onnx_path:
        report = validate_onnx(model, deploy_path, shapes, recipe.tolerance(precision), precision=precision,
                               seed=args.seed)
        report.save(deploy_path.with_suffix(".validation.json"))
        print(report.table())
        if not report.passed:
            return EXIT_TOLERANCE
    _build_engine(deploy_path, recipe, shapes[0] if args.shape is not None else None)
    return EXIT_OK


@tool_main("ast-export")
def main(argv: list[str] | None = None) -> int:
    from ..export import ExportError, GraphCheckError, RecipeError
    from ..model import CheckpointError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed usage and the error
        return int(e.code or 0)
    try:
        return run(args)
    except (UsageError, RecipeError) as e:
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
