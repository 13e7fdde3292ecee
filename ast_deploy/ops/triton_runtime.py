"""One Triton kernel, run compiled on CUDA or under Triton's interpreter on CPU.

``@triton.jit`` decides between a compiled and an interpreted function from ``TRITON_INTERPRET``
at decoration time, so one process could not both emit PTX and interpret. Kernels here are plain
functions wrapped on demand instead: ``jit`` (what ``triton.compile`` and CUDA launches need) and
``interpreted`` exist side by side whatever the environment said at import.
"""

from __future__ import annotations

import os
from functools import cached_property

import torch

INTERPRET_ENV = "TRITON_INTERPRET"


def interpreter_enabled() -> bool:
    return os.environ.get(INTERPRET_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


def require_triton() -> None:
    try:
        import triton  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only where triton is missing
        raise RuntimeError("the 'triton' kernels need the triton package: pip install 'ast-deploy[kernels]'") from e


class TritonKernel:
    def __init__(self, fn):
        self.fn = fn
        self.__name__ = fn.__name__

    @cached_property
    def jit(self):
        require_triton()
        from triton.runtime.jit import JITFunction

        return JITFunction(self.fn)

    @cached_property
    def interpreted(self):
        require_triton()
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(self.fn)

    def for_device(self, device: torch.device):
        """The launchable kernel for tensors on ``device``, or a clear error where there is none."""
        if device.type == "cuda":
            return self.jit
        if interpreter_enabled():
            return self.interpreted
        raise RuntimeError(
            f"the Triton kernel {self.__name__} needs a CUDA tensor, got one on {device}. To run it on the CPU "
            f"(slowly, for testing) set {INTERPRET_ENV}=1 in the environment, or use the 'reference' ops.")
