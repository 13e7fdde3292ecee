"""The reference AST model and its checkpoints."""

from .ast import AST
from .checkpoint import CheckpointError, load_checkpoint, read_state_dict
from .configs import ARCHITECTURES, AST_B, AST_DEMO, AST_T
from .factory import build_model, resolve_config

__all__ = ["AST", "ARCHITECTURES", "AST_B", "AST_DEMO", "AST_T", "CheckpointError", "build_model", "load_checkpoint",
           "read_state_dict", "resolve_config"]
