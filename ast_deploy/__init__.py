"""ast-deploy: the Adaptive Sparse Transformer from PyTorch to verified ONNX and TensorRT engines."""

from .tasks import TASKS, get_task

__all__ = ["Runner", "TASKS", "get_task", "restore_file"]


def __getattr__(name):  # keep `import ast_deploy` light: torch and friends load on first use
    if name == "Runner":
        from .runner import Runner

        return Runner
    if name == "restore_file":
        from .images import restore_file

        return restore_file
    raise AttributeError(f"module 'ast_deploy' has no attribute {name!r}")
