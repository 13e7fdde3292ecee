"""The PyTorch backend: the reference model, eager, on CPU or CUDA."""

from __future__ import annotations

import numpy as np
import torch

from .base import Backend, BackendError


class TorchBackend(Backend):
    """Runs an ``AST`` module. Thread-safe: inference mode keeps no state between calls."""

    name = "pytorch"
    shape_range = None  # any size that is a multiple of size_multiple

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", max_batch: int | None = None):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            why = "is a CPU build" if torch.version.cuda is None else f"(CUDA {torch.version.cuda}) finds no GPU"
            raise BackendError(f"device {str(device)!r}: this PyTorch {torch.__version__} {why}; run on the CPU "
                               "(--device cpu), or install a CUDA build of PyTorch on a machine with an NVIDIA GPU")
        self.model = model.eval().to(self.device)
        self.size_multiple = model.size_multiple
        self.batch_limit = max_batch

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            return self.model(x).float().cpu().numpy()
