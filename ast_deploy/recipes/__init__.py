"""Per-task deployment recipes: the TOML files beside this module (``ast_deploy/recipes/<task>.toml``),
shipped in the wheel and read with ``importlib.resources``; ``--recipe PATH`` reads another file.

A recipe holds deployment settings only: the TensorRT shape profile, the validation sizes and the
accuracy tolerances per precision. The architecture and the inference protocol belong to the task
(``ast_deploy.tasks.TASKS``) and are not repeated here.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..checks.tolerances import PRECISIONS, Tolerance
from ..shapes import ProfileError, ShapeProfile
from ..tasks import Task, get_task

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)


class RecipeError(ValueError):
    """A recipe that cannot be found, parsed or that is inconsistent."""


@dataclass(frozen=True)
class Recipe:
    task: Task
    profile: ShapeProfile
    validation_sizes: tuple[tuple[int, int], ...]
    validation_batch: int
    tolerances: dict[str, Tolerance] = field(repr=False)
    path: Path | None = None  # the file it was read from (inside the package for a shipped recipe)

    def tolerance(self, precision: str) -> Tolerance:
        if precision not in self.tolerances:
            raise RecipeError(f"recipe {self.path} has no [tolerance.{precision}] table")
        return self.tolerances[precision]

    def check_size_multiple(self, multiple: int) -> None:
        """Raise if a profile or validation size is not a multiple of the model's ``size_multiple``."""
        sizes = [s[2:] for s in (self.profile.min, self.profile.opt, self.profile.max)] + list(self.validation_sizes)
        bad = [f"{h}x{w}" for h, w in sizes if h % multiple or w % multiple]
        if bad:
            raise RecipeError(f"recipe {self.path}: sizes {', '.join(bad)} are not multiples of {multiple}, "
                              "which the model needs")


def shipped_recipes() -> list[str]:
    """Tasks with a recipe in the package."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".toml"))


def load_recipe(task: str | None = None, path: str | os.PathLike | None = None, *,
                required: bool = True) -> Recipe | None:
    """The recipe of ``task`` (the one shipped in the package), or the file ``path``.

    ``required=False`` is for callers with defaults of their own: no task gives None, and a recipe
    that cannot be loaded logs a warning and gives None. ``required=True`` raises RecipeError."""
    if task is None and path is None:
        if required:
            raise RecipeError("no task and no recipe file given")
        return None
    try:
        return _load(task, path)
    except ValueError as e:  # RecipeError, ProfileError, an unknown task
        if required:
            raise e if isinstance(e, RecipeError) else RecipeError(f"cannot load the recipe of task {task!r}: {e}") from e
        log.warning("no recipe for task %r, using defaults: %s", task, e)
        return None


def _load(task: str | None, path) -> Recipe:
    if path is not None:
        source = Path(path)
        if not source.is_file():
            raise RecipeError(f"recipe {source} not found")
        text = source.read_text()
    else:
        task_obj = get_task(task)  # an unknown task is a ValueError naming the known ones
        entry = resources.files(__name__) / f"{task_obj.name}.toml"
        if not entry.is_file():
            raise RecipeError(f"no recipe for task {task_obj.name!r} in this installation "
                              f"(shipped: {', '.join(shipped_recipes()) or 'none'}); pass --recipe PATH")
        source, text = Path(str(entry)), entry.read_text()
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe {source} is not valid TOML: {e}") from e
    if task is None:
        task = data.get("task")
        if not isinstance(task, str):
            raise RecipeError(f"recipe {source}: needs a task = \"...\" line")
    return _parse(data, get_task(task), source)


def _parse(data: dict, task: Task, source: Path) -> Recipe:
    def fail(msg: str):
        raise RecipeError(f"recipe {source}: {msg}")

    if data.get("task") != task.name:
        fail(f"is for task {data.get('task')!r}, not {task.name!r}")
    unknown = set(data) - {"task", "profile", "validation", "tolerance"}
    if unknown:
        fail(f"unknown keys {sorted(unknown)} (architecture and protocol come from ast_deploy.tasks)")
    try:
        profile = _profile(data.get("profile", {}))
    except ProfileError as e:
        fail(f"[profile] {e}")
    sizes, batch = _validation(data.get("validation", {}), fail)
    tolerances = {precision: _tolerance(precision, tol, fail) for precision, tol in data.get("tolerance", {}).items()}
    if "fp32" not in tolerances:
        fail("needs a [tolerance.fp32] table")
    return Recipe(task, profile, sizes, batch, tolerances, source)


def _profile(prof: dict) -> ShapeProfile:
    shapes = []
    for key in ("min", "opt", "max"):
        shape = prof.get(key)
        if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape)):
            raise ProfileError(f"{key} must be a list of 4 positive integers (N, C, H, W), got {shape!r}")
        if shape[1] != 3:
            raise ProfileError(f"{key} must have 3 channels, got {shape[1]}")
        shapes.append(tuple(shape))
    if not all(a <= o <= b for a, o, b in zip(*shapes)):
        raise ProfileError(f"needs min <= opt <= max in every dimension, got {shapes}")
    return ShapeProfile(*shapes)


def _validation(val: dict, fail):
    sizes = val.get("sizes")
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s) for s in sizes)):
        fail(f"[validation] sizes must list at least two [H, W] pairs, got {sizes!r}")
    if all(h == w for h, w in sizes):
        fail("[validation] sizes need at least one non-square size")
    batch = val.get("batch", 2)
    if not (isinstance(batch, int) and batch >= 1):
        fail(f"[validation] batch must be a positive integer, got {batch!r}")
    return tuple(tuple(s) for s in sizes), batch


def _tolerance(precision: str, tol, fail) -> Tolerance:
    """``[tolerance.<precision>]``: psnr_db (minimum PSNR, data range 1) and max_rel."""
    if precision not in PRECISIONS:
        fail(f"unknown precision [tolerance.{precision}]; use {', '.join(PRECISIONS)}")
    try:
        psnr, rel = float(tol["psnr_db"]), float(tol["max_rel"])
    except (KeyError, TypeError, ValueError):
        fail(f"[tolerance.{precision}] needs numbers psnr_db and max_rel, got {tol!r}")
    if not (math.isfinite(psnr) and rel > 0):
        fail(f"[tolerance.{precision}] needs a finite psnr_db and a positive max_rel")
    return Tolerance(psnr_min=psnr, max_rel=rel)


__all__ = ["Recipe", "RecipeError", "load_recipe", "shipped_recipes"]
