"""``build_model``: the one place an AST is made, from an architecture name, a config, or a task,
with or without weights."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..tasks import TASKS, get_task
from .ast import AST
from .checkpoint import guess_architecture, load_state_dict_strict, read_state_dict
from .configs import ARCHITECTURES


def resolve_config(arch: str | Mapping) -> dict:
    """Constructor keywords of ``arch``: a config mapping (copied), an architecture name
    (``AST_B``, ``AST_T``, ``demo``) or a task name (its architecture)."""
    if isinstance(arch, Mapping):
        return dict(arch)
    if arch in ARCHITECTURES:
        return dict(ARCHITECTURES[arch])
    if arch in TASKS:
        return dict(ARCHITECTURES[TASKS[arch].architecture])
    raise ValueError(f"unknown architecture {arch!r}: give a config, an architecture "
                     f"({', '.join(ARCHITECTURES)}) or a task ({', '.join(TASKS)})")


def build_model(arch: str | Mapping | None = None, weights: str | os.PathLike | None = None, *,
                task: str | None = None, seed: int | None = None) -> AST:
    """An ``AST`` in eval mode.

    ``arch``: a config, an architecture name or a task name. Without it, the architecture is read
    from ``weights``: the one among ``task``'s, the known ones (released and demo) whose keys and
    shapes the checkpoint has (so the demo weights run with ``task="derain"``); when none fits, the
    task's, so that the strict load explains the mismatch. ``weights`` are loaded strictly
    (``CheckpointError`` says what does not fit); without them the model is randomly initialised
    (``seed`` makes that reproducible). A config AST cannot take is a ValueError."""
    state_dict = read_state_dict(weights) if weights is not None else None
    if arch is None:
        arch = _guess(state_dict, task, weights)
    config = resolve_config(arch)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = AST(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"cannot build the model from {config}: {e}") from e
    if state_dict is not None:
        load_state_dict_strict(model, state_dict, weights)
    return model.eval()


def _guess(state_dict, task: str | None, weights) -> str:
    if state_dict is None:
        if task is None:
            raise ValueError("say which model to build: an architecture, a config, a task or weights")
        return get_task(task).architecture
    known = {**({get_task(task).architecture: None} if task else {}), **ARCHITECTURES}
    name = guess_architecture(state_dict, {k: ARCHITECTURES[k] for k in known})
    if name is not None:
        return name
    if task is not None:
        return get_task(task).architecture
    raise ValueError(f"{os.fspath(weights)}: say which architecture the checkpoint has (task=... or config=...); "
                     "its keys match no released architecture")
