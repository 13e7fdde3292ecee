"""One Triton kernel, run compiled on CUDA or under Triton's interpreter on CPU.

Triton fixes the mode of a whole process when it is imported: its own helpers (``tl.max``,
``tl.sum``, ...) are decorated then, as compiled or as interpreted functions, according to
``TRITON_INTERPRET``. A kernel must match them, so the kernels here are plain functions wrapped on
first use in the mode Triton was imported in, not in whatever mode the environment says when this
module happens to be imported. Emitting PTX (``triton.compile``) needs a process in compiled mode.
"""

from __future__ import annotations

import os
import sys
from functools import cached_property

import torch

INTERPRET_ENV = "TRITON_INTERPRET"


def _env_flag() -> bool:
    return os.environ.get(INTERPRET_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


def require_triton() -> None:
    try:
        import triton  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only where triton is missing
        raise RuntimeError("the 'triton' kernels need the triton package: pip install 'ast-deploy[kernels]'") from e


def interpreter_enabled() -> bool:
    """Whether Triton runs in interpreter mode in this process (decided at its import)."""
    if "triton.language" not in sys.modules:
        return _env_flag()  # triton will follow the environment when it is imported
    from triton.language import standard
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(standard.max, InterpretedFunction)


class TritonKernel:
    def __init__(self, fn):
        self.fn = fn
        self.__name__ = fn.__name__

    @cached_property
    def jit(self):
        require_triton()
        if interpreter_enabled():
            raise RuntimeError(f"cannot compile {self.__name__}: triton was imported with {INTERPRET_ENV}=1 in this "
                               f"process; compile in a process started without it")
        from triton.runtime.jit import JITFunction

        return JITFunction(self.fn)

    @cached_property
    def interpreted(self):
        require_triton()
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(self.fn)

    def for_device(self, device: torch.device):
        """The launchable kernel for tensors on ``device``, or a clear error where there is none."""
        require_triton()
        if interpreter_enabled():
            return self.interpreted  # also takes CUDA tensors (through host copies)
        if device.type == "cuda":
            return self.jit
        raise RuntimeError(
            f"the Triton kernel {self.__name__} needs CUDA tensors, got tensors on {device}. To run it on the CPU "
            f"(slowly, for testing) start the process with {INTERPRET_ENV}=1: Triton reads it when it is "
            f"imported. Otherwise use the 'reference' ops.")
