"""The reference AST model and its checkpoints.

``AST`` and the checkpoint helpers import torch, so they load on first use: ``ast_deploy.tasks``
reads the architectures (``configs``) without torch, as the server environment of ``ast-serve`` has none.
"""

from .configs import ARCHITECTURES, AST_B, AST_T

_LAZY = {"AST": "ast", "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "read_state_dict": "checkpoint"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AST", "ARCHITECTURES", "AST_B", "AST_T", "CheckpointError", "load_checkpoint", "read_state_dict"]
