"""ast-export's steps: weights -> model -> FP32 ONNX -> parity -> FP16 / INT8 -> parity -> engine.

``export_task(job)`` runs them; ``cli/export.py`` only parses arguments into an ``ExportJob``, calls
it, and maps the errors to exit codes (``ConfigError`` and ``RecipeError``: 2, ``CheckpointError``:
3, ``ExportError`` / ``GraphCheckError``: 4). Torch comes with the export package and the model
factory, so they are imported when the pipeline runs, not when the CLI parses its arguments.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .checks import validate_onnx
from .checks.report import export_table, write_json
from .console import Progress
from .demo import DEMO_NOTICE, demo_weights
from .engines.target import TENSORRT_INSTALL
from .metadata import export_metadata
from .opsets import MAX_OPSET, MIN_OPSET, SUPPORTED_OPSETS
from .precision.int8 import DEFAULT_PLACEMENT
from .precision.pipeline import PrecisionNotAvailable, apply_precision, ensure_available
from .recipes import Recipe, load_recipe
from .tasks import OFFICIAL_WEIGHTS_PAGE, Task, get_task


class ConfigError(Exception):
    """A problem with the job's options or configuration (the CLI's exit code 2)."""


class MissingWeightsError(ConfigError):
    pass


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass
class ExportJob:
    task: str
    weights: str | None = None
    random_init: bool = False
    out: Path | None = None  # default engines/<task>/
    shape: tuple[int, int] | None = None  # static H x W; None: dynamic
    batch: int | None = None
    opset: int | None = None
    custom_ops: bool = True
    precision: str = "fp32"
    calib: Path | None = None
    int8_placement: str | None = None  # "tensorrt" (default) or "ort": whose INT8 pattern (precision.int8)
    recipe: Path | None = None
    arch_config: Path | None = None
    seed: int = 0
    quiet: bool = False  # no progress


@dataclass
class ExportOutcome:
    onnx_path: Path
    deploy_path: Path | None  # the model to deploy; None when a parity check failed
    passed: bool
    reports: list = field(default_factory=list)


def resolve_weights(task: Task, weights: str | None, random_init: bool, notify: Callable[[str], None] = _stderr
                    ) -> Path | None:
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
        notify(f"ast-export: no --weights given: using {DEMO_NOTICE} ({path}).\n"
               f"  The official {task.name} checkpoint is published at {task.weights_link}")
        return path
    raise MissingWeightsError(
        f"no weights given for task {task.name!r}.\n"
        f"  The official {task.name} checkpoint ({task.dataset}) is published at {task.weights_link}\n"
        f"  (all released checkpoints: {OFFICIAL_WEIGHTS_PAGE}); pass it with --weights PATH.\n"
        f"  To try the pipeline without weights, add --random-init (the exported model is then untrained).")


def output_stem(task: str, shape, batch: int, custom_ops: bool) -> str:
    stem = f"ast-{task}" + ("" if shape is None else f"-{shape[0]}x{shape[1]}-b{batch}")
    return stem + ("" if custom_ops else "-std")


def ast_build_command(onnx_path: Path, recipe: Recipe, static_shape=None) -> str:
    """The command that builds the engine on the target, with the profile spelt out (the target may
    have no recipe file, and a --recipe PATH given here is not the task's): a static export's own
    shape ``BxCxHxW`` (a recipe's range cannot fit a fixed input), else the recipe's profile."""
    if static_shape is not None:
        return f"ast-build {onnx_path} --shapes {'x'.join(str(d) for d in static_shape)}"
    return f"ast-build {onnx_path} --shapes {recipe.profile}"


def build_engine_or_explain(onnx_path: Path, recipe: Recipe, echo: Callable[[str], None] = print,
                            static_shape=None) -> None:
    """Build the engine where TensorRT is installed, else print the ast-build command for the target."""
    command = ast_build_command(onnx_path, recipe, static_shape)
    if importlib.util.find_spec("tensorrt") is None:
        echo(f"TensorRT is not installed here: the ONNX is ready. On the target machine (TensorRT: "
             f"{TENSORRT_INSTALL}) run:\n  {command}")
        return
    try:
        from .engines.build import build_engine
    except ImportError as e:
        echo(f"TensorRT is installed but this ast_deploy has no engine builder ({e}); on a machine with it run:\n"
             f"  {command}")
        return
    build_engine(onnx_path, recipe=recipe, shapes=command.split("--shapes ")[1] if static_shape else None)


def check_job(job: ExportJob) -> None:
    """Option problems found before the slow export."""

    if job.calib is not None and job.precision == "fp32":
        raise ConfigError("--calib only goes with --fp16 or --int8")
    if job.int8_placement is not None and job.precision != "int8":
        raise ConfigError("--int8-for only goes with --int8")
    if job.opset is not None and job.opset not in SUPPORTED_OPSETS:
        raise ConfigError(f"--opset {job.opset} is not supported: use {MIN_OPSET} to {MAX_OPSET}")
    try:
        ensure_available(job.precision, job.calib)
    except PrecisionNotAvailable as e:
        raise ConfigError(str(e)) from e


def build_job_model(task: Task, job: ExportJob, notify: Callable[[str], None] = _stderr):
    """(model, weights path or None) for the job: the task's architecture, ``--arch-config``'s, or the
    demo model's for the demo weights."""
    from .model.checkpoint import CheckpointError
    from .model.factory import build_model

    arch = task.name
    if job.arch_config is not None:
        try:
            arch = json.loads(Path(job.arch_config).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"--arch-config {job.arch_config}: {e}") from e
        if not isinstance(arch, dict):
            raise ConfigError(f"--arch-config {job.arch_config} must hold a JSON object of AST keywords")
    weights = resolve_weights(task, job.weights, job.random_init, notify)
    if weights is not None and job.weights is None and job.arch_config is None:
        arch = "demo"  # the demo weights are a small AST, not the task's architecture
    try:
        return build_model(arch, weights, seed=job.seed), weights
    except CheckpointError:
        raise
    except ValueError as e:  # a config AST cannot take
        raise ConfigError(str(e)) from e


def validation_shapes(job: ExportJob, recipe: Recipe, model) -> list[tuple[int, int, int, int]]:
    multiple = model.size_multiple
    recipe.check_size_multiple(multiple)
    if job.shape is None:
        batch = job.batch or recipe.validation_batch
        return [(batch, model.dd_in, h, w) for h, w in recipe.validation_sizes]
    if job.shape[0] % multiple or job.shape[1] % multiple:
        raise ConfigError(f"--shape {job.shape[0]}x{job.shape[1]}: H and W must be multiples of {multiple}")
    return [(job.batch or 1, model.dd_in, *job.shape)]


def export_task(job: ExportJob, echo: Callable[[str], None] = print) -> ExportOutcome:
    """Run ast-export's steps for ``job``; ``echo`` gets the lines a user reads (tables, paths)."""
    check_job(job)
    task = get_task(job.task)
    recipe = load_recipe(task.name, job.recipe)
    model, weights = build_job_model(task, job)
    shapes = validation_shapes(job, recipe, model)
    out_dir = job.out if job.out is not None else Path("engines") / task.name
    onnx_path = out_dir / f"{output_stem(task.name, job.shape, job.batch or 1, job.custom_ops)}.onnx"
    report = _export_and_validate(job, task, recipe, model, weights, shapes, onnx_path, echo)
    outcome = ExportOutcome(onnx_path, None, report.passed, [report])
    if not report.passed:
        return outcome
    deploy_path = _reduce_precision(job, recipe, model, shapes, onnx_path, outcome, echo)
    if deploy_path is None:
        return outcome
    outcome.deploy_path = deploy_path
    if job.int8_placement == "ort":  # ONNX Runtime's pattern: UINT8 activations TensorRT cannot take
        echo(f"INT8 for ONNX Runtime's CPU provider (not for TensorRT): run it with\n"
             f"  ast-restore IMAGES -o OUT --onnx {deploy_path}")
        return outcome
    build_engine_or_explain(deploy_path, recipe, echo, shapes[0] if job.shape is not None else None)
    return outcome


def _export_and_validate(job, task, recipe, model, weights, shapes, onnx_path: Path, echo):
    from .export import export_onnx
    from .export.onnx_export import DEFAULT_OPSET

    opset = job.opset or DEFAULT_OPSET
    started = time.perf_counter()
    # One bar: export, clean-up and write, then one tick per inference of the validation.
    bar = Progress(total=3 + 2 * len(shapes), desc=f"ast-export {task.name}", unit="step", quiet=job.quiet)

    def on_stage(name: str) -> None:
        if name != "torch.onnx.export":
            bar.update(1)
        bar.describe(f"ast-export {task.name}: {name}")

    try:
        result = export_onnx(model, onnx_path, shape=job.shape, batch=job.batch or 1, opset=opset,
                             custom_ops=job.custom_ops, progress=on_stage,
                             metadata=export_metadata(model.size_multiple, task.name))
        bar.update(1)
        bar.describe(f"ast-export {task.name}: validate (pytorch, onnxruntime)")
        report = validate_onnx(model, onnx_path, shapes, recipe.tolerance("fp32"), seed=job.seed,
                               on_infer=lambda: bar.update(1))
    finally:
        bar.close()
    total = time.perf_counter() - started
    report.extra = {
        "task": task.name, "weights": str(weights) if weights else "random-init", "opset": opset,
        "custom_ops": job.custom_ops, "input_shape": result.input_shape, "nodes": result.stats.nodes,
        "inlined_nodes": result.stats.inlined_nodes, "custom_nodes": result.stats.custom_nodes,
        "seconds": {**{k: round(v, 2) for k, v in result.seconds.items()}, "total": round(total, 2)},
        "recipe": str(recipe.path),
    }
    report_path = write_json(report, onnx_path.with_suffix(".validation.json"))
    echo(f"{onnx_path}: {result.stats.nodes} nodes ({result.stats.custom_nodes} ast:: custom nodes, "
         f"{result.stats.inlined_nodes} with their functions inlined), input {result.input_shape}, opset {opset}")
    echo(export_table(report))
    echo(f"report: {report_path}  ({total:.0f} s)")
    if not report.passed:
        _stderr(f"error: the exported model is beyond the {recipe.path.name} tolerance; the ONNX is kept for "
                "inspection but should not be deployed")
    return report


def _reduce_precision(job, recipe, model, shapes, onnx_path: Path, outcome: ExportOutcome, echo) -> Path | None:
    """The FP16 / INT8 model (checked against PyTorch), the FP32 one for fp32, None when it fails."""
    deploy_path = apply_precision(onnx_path, job.precision, recipe=recipe, calib_dir=job.calib,
                                  size_multiple=model.size_multiple,
                                  placement=job.int8_placement or DEFAULT_PLACEMENT)
    if deploy_path == onnx_path:
        return deploy_path
    report = validate_onnx(model, deploy_path, shapes, recipe.tolerance(job.precision), precision=job.precision,
                           seed=job.seed)
    write_json(report, deploy_path.with_suffix(".validation.json"))
    echo(export_table(report))
    outcome.reports.append(report)
    outcome.passed = report.passed
    return deploy_path if report.passed else None
