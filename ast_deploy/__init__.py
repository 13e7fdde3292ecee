"""ast-deploy: the Adaptive Sparse Transformer from PyTorch to verified ONNX and TensorRT engines."""

from .tasks import TASKS, get_task

__all__ = ["Runner", "TASKS", "get_task", "restore_file"]


def __getattr__(name):  # the Runner pulls in ONNX Runtime, Pillow and the backends: load it on first use
    if name == "Runner":
        from .runner import Runner

        return Runner
    if name == "restore_file":
        from .images import restore_file

        return restore_file
    raise AttributeError(f"module 'ast_deploy' has no attribute {name!r}")
