"""The reference AST model and its checkpoints."""

from .ast import AST
from .checkpoint import CheckpointError, load_checkpoint, read_state_dict
from .configs import ARCHITECTURES, AST_B, AST_T

__all__ = ["AST", "ARCHITECTURES", "AST_B", "AST_T", "CheckpointError", "load_checkpoint", "read_state_dict"]
