"""A task's export recipe (``export/<task>.toml``, read by ``ast_deploy.export.recipes``) for the
engine builder's shape profile and the parity check's tolerances, when there is one."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class RecipeUnavailable(ValueError):
    pass


def task_recipe(task: str | None, *, required: bool = False):
    """The recipe of ``task``, or None (no task, or no loadable recipe). A recipe that
    was asked for explicitly (``required``) and cannot be loaded is a RecipeUnavailable error; an
    implicit one only logs a warning, and the caller falls back to its defaults."""
    if task is None:
        return None
    from .recipes import load_recipe

    try:
        return load_recipe(task)
    except ValueError as e:  # RecipeError (missing file in an installed package, bad TOML), unknown task
        problem = str(e)
    if required:
        raise RecipeUnavailable(f"cannot load the recipe of task {task!r}: {problem}")
    log.warning("no recipe for task %r, using defaults: %s", task, problem)
    return None
