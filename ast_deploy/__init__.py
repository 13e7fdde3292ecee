"""ast-deploy: the Adaptive Sparse Transformer from PyTorch to verified ONNX and TensorRT engines."""

from .tasks import TASKS, get_task

__all__ = ["BudgetWarning", "Runner", "TASKS", "get_task", "restore_file"]


def __getattr__(name):  # the Runner pulls in ONNX Runtime, Pillow and the backends: load it on first use
    if name == "Runner":
        from .runner import Runner

        return Runner
    if name == "BudgetWarning":  # the memory budget changed how a photo runs (ast_deploy.budget)
        from .budget import BudgetWarning

        return BudgetWarning
    if name == "restore_file":
        from .images import restore_file

        return restore_file
    raise AttributeError(f"module 'ast_deploy' has no attribute {name!r}")
