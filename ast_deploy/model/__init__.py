"""The reference AST model and its checkpoints.

``AST``, the checkpoint helpers and the factory import torch, so they load on first use:
``ast_deploy.tasks`` and the runtime read the architectures (``configs``) without torch, as running an
ONNX or an engine needs none (and the server environment of ``ast-serve`` has none).
"""

from .configs import ARCHITECTURES, AST_B, AST_DEMO, AST_T

_LAZY = {"AST": "ast", "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint",
         "read_state_dict": "checkpoint", "build_model": "factory", "resolve_config": "factory"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AST", "ARCHITECTURES", "AST_B", "AST_DEMO", "AST_T", "CheckpointError", "build_model", "load_checkpoint",
           "read_state_dict", "resolve_config"]
