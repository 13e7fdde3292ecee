"""The reference AST model, its architectures and checkpoints.

The architectures (``configs``) import nothing; the model, the checkpoint reader and the factory
import torch, so they are loaded on first use (a task's or the demo's config needs no torch)."""

import importlib

from .configs import ARCHITECTURES, AST_B, AST_DEMO, AST_T

_LAZY = {"AST": ".ast", "CheckpointError": ".checkpoint", "load_checkpoint": ".checkpoint",
         "read_state_dict": ".checkpoint", "build_model": ".factory", "resolve_config": ".factory"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AST", "ARCHITECTURES", "AST_B", "AST_DEMO", "AST_T", "CheckpointError", "build_model", "load_checkpoint",
           "read_state_dict", "resolve_config"]
