"""Per-task export recipes: the TOML files in the repository's top-level ``export/`` folder.

A recipe holds deployment settings only: the TensorRT shape profile, the validation sizes and the
accuracy tolerances per precision. The architecture and the inference protocol belong to the task
(``ast_deploy.tasks.TASKS``) and are not repeated here.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..tasks import Task, get_task

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPES_DIR = Path(__file__).resolve().parents[2] / "export"
PRECISIONS = ("fp32", "fp16", "int8")


class RecipeError(ValueError):
    """A recipe that cannot be found, parsed or that is inconsistent."""


@dataclass(frozen=True)
class Tolerance:
    psnr_db: float  # minimum PSNR of the exported output against PyTorch's
    max_rel: float  # maximum of max|out - ref| / max|ref|


@dataclass(frozen=True)
class Profile:
    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]


@dataclass(frozen=True)
class Recipe:
    task: Task
    profile: Profile
    validation_sizes: tuple[tuple[int, int], ...]
    validation_batch: int
    tolerances: dict[str, Tolerance] = field(repr=False)
    path: Path | None = None

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


def recipe_path(task: str) -> Path:
    return RECIPES_DIR / f"{task}.toml"


def load_recipe(task: str, path: str | os.PathLike | None = None) -> Recipe:
    """Load the recipe of ``task`` from ``export/<task>.toml`` or from ``path``."""
    task_obj = get_task(task)
    source = Path(path) if path is not None else recipe_path(task)
    if not source.is_file():
        where = "" if path is not None else f" (looked in {RECIPES_DIR}; outside a source checkout pass --recipe PATH)"
        raise RecipeError(f"recipe {source} not found{where}")
    try:
        data = tomllib.loads(source.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe {source} is not valid TOML: {e}") from e
    return _parse(data, task_obj, source)


def _parse(data: dict, task: Task, source: Path) -> Recipe:
    def fail(msg: str):
        raise RecipeError(f"recipe {source}: {msg}")

    if data.get("task") != task.name:
        fail(f"is for task {data.get('task')!r}, not {task.name!r}")
    unknown = set(data) - {"task", "profile", "validation", "tolerance"}
    if unknown:
        fail(f"unknown keys {sorted(unknown)} (architecture and protocol come from ast_deploy.tasks)")

    prof = data.get("profile", {})
    shapes = {}
    for key in ("min", "opt", "max"):
        shape = prof.get(key)
        if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape)):
            fail(f"[profile] {key} must be a list of 4 positive integers (N, C, H, W), got {shape!r}")
        if shape[1] != 3:
            fail(f"[profile] {key} must have 3 channels, got {shape[1]}")
        shapes[key] = tuple(shape)
    if not all(a <= o <= b for a, o, b in zip(shapes["min"], shapes["opt"], shapes["max"])):
        fail(f"[profile] needs min <= opt <= max in every dimension, got {shapes}")

    val = data.get("validation", {})
    sizes = val.get("sizes")
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s) for s in sizes)):
        fail(f"[validation] sizes must list at least two [H, W] pairs, got {sizes!r}")
    if all(h == w for h, w in sizes):
        fail("[validation] sizes need at least one non-square size")
    batch = val.get("batch", 2)
    if not (isinstance(batch, int) and batch >= 1):
        fail(f"[validation] batch must be a positive integer, got {batch!r}")

    tolerances = {}
    for precision, tol in data.get("tolerance", {}).items():
        if precision not in PRECISIONS:
            fail(f"unknown precision [tolerance.{precision}]; use {', '.join(PRECISIONS)}")
        try:
            psnr, rel = float(tol["psnr_db"]), float(tol["max_rel"])
        except (KeyError, TypeError, ValueError):
            fail(f"[tolerance.{precision}] needs numbers psnr_db and max_rel, got {tol!r}")
        if not (math.isfinite(psnr) and rel > 0):
            fail(f"[tolerance.{precision}] needs a finite psnr_db and a positive max_rel")
        tolerances[precision] = Tolerance(psnr, rel)
    if "fp32" not in tolerances:
        fail("needs a [tolerance.fp32] table")
    return Recipe(task, Profile(**shapes), tuple(tuple(s) for s in sizes), batch, tolerances, source)
