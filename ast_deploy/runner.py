"""``Runner``: one call that restores images with any backend, whatever their size.

    runner = Runner("AST_derain.pth", task="derain")          # PyTorch, official protocol
    restored = runner(Image.open("rainy.png"))                  # PIL in, PIL out

A Runner may be shared between threads: the protocol and the input conversion keep no state, and
each backend documents its own thread safety (the PyTorch one needs nothing).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .images import quantize, to_rgb, to_unit_float
from .protocols import Protocol, fit_to_shape_range, parse_protocol
from .backends import backend_kind, hw_range
from .backends import open_backend as open_file_backend
from .tasks import get_task

CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin", ".tar"}


def build_torch_model(source, task: str | None = None, config: dict | None = None):
    """An ``AST`` from a checkpoint path. Without ``config``, the architecture is the one among the
    task's, the released ones and the demo model's whose keys and shapes the checkpoint has (so the
    demo weights run with ``task="derain"``); when none fits, the task's, to explain the mismatch."""
    from .demo import DEMO_CONFIG
    from .model import ARCHITECTURES, AST, read_state_dict
    from .model.checkpoint import guess_architecture, load_state_dict_strict

    state_dict = read_state_dict(source)
    if config is None:
        known = {**({"task": get_task(task).architecture} if task else {}), **ARCHITECTURES, "demo": DEMO_CONFIG}
        name = guess_architecture(state_dict, known)
        if name is not None:
            config = known[name]
        elif task is not None:
            config = known["task"]
        else:
            raise ValueError(f"{source}: say which architecture the checkpoint has (task=... or config=...); "
                             "its keys match no released architecture")
    return load_state_dict_strict(AST(**config), state_dict, source)


def open_backend(source, task=None, config=None, device="cpu", kernels=None, max_batch=None):
    from .backends import Backend
    from .backends.triton_client import is_server_url, open_server_backend

    if isinstance(source, Backend):  # an opened backend (the serving front model's BLS one)
        return source
    if is_server_url(source):  # http(s)://host:port/MODEL or grpc://host:port/MODEL
        return open_server_backend(source)
    import torch

    if isinstance(source, torch.nn.Module):
        model = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        if path.suffix.lower() in CHECKPOINT_SUFFIXES:
            model = build_torch_model(path, task, config)
        elif backend_kind(path) is not None:  # .onnx, .plan / .engine
            return open_file_backend(path, device=device)
        else:
            raise ValueError(f"{path}: unknown model file type {path.suffix!r} "
                             f"(a checkpoint {sorted(CHECKPOINT_SUFFIXES)}, .onnx, or a TensorRT .plan/.engine)")
    else:
        raise TypeError(f"Runner takes an nn.Module or a model file path, not {type(source).__name__}")
    if kernels is not None:
        model.set_ops_impl(assa=kernels, partial_conv=kernels)
    from .backends.pytorch import TorchBackend

    return TorchBackend(model, device, **({"max_batch": max_batch} if max_batch else {}))


class Runner:
    def __init__(self, source, task: str | None = None, protocol: str | Protocol | None = None,
                 device: str = "cpu", *, config: dict | None = None, kernels: str | None = None,
                 max_batch: int | None = None):
        self.backend = open_backend(source, task=task, config=config, device=device, kernels=kernels,
                                    max_batch=max_batch)
        if protocol is None:
            protocol = get_task(task).protocol if task else (getattr(self.backend, "default_protocol", None)
                                                             or f"pad:{self.backend.size_multiple}")
        self.protocol = parse_protocol(protocol)
        self.protocol.check(self.backend.size_multiple)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        step = self.backend.max_batch or len(batch)  # None: the backend takes any batch
        return np.concatenate([self.backend.infer(batch[i : i + step]) for i in range(0, len(batch), step)])

    def protocol_for(self, h: int, w: int, protocol: str | Protocol | None = None) -> Protocol:
        """The protocol an h x w image runs with: ``protocol`` (default: the runner's) if the backend
        takes the sizes it makes, else tiles the backend takes."""
        protocol = self.protocol if protocol is None else parse_protocol(protocol)
        return fit_to_shape_range(protocol, h, w, hw_range(self.backend.shape_range), self.backend.size_multiple)

    def run_nchw(self, x: np.ndarray, protocol: str | Protocol | None = None) -> np.ndarray:
        """Float32 [B, 3, H, W] in [0, 1] -> restored float32 [B, 3, H, W] (not clipped)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a [B, 3, H, W] batch, got shape {x.shape}")
        h, w = x.shape[2:]
        plan = self.protocol_for(h, w, protocol)
        if getattr(self.backend, "applies_protocol", False):  # a server: it runs the plan on whole images
            return self.backend.run_protocol(np.ascontiguousarray(x, dtype=np.float32), plan)
        return plan.run(np.ascontiguousarray(x, dtype=np.float32), self._infer)

    def __call__(self, x):
        """Restore an image or a batch, returned as the same kind it came as:

        - a PIL image, or a uint8 / uint16 H x W x 3 array (an image file's pixels);
        - a float32 C x H x W or N x C x H x W array or tensor with values in [0, 1].
        """
        import torch

        try:
            from PIL import Image as PILImage
        except ImportError:  # pragma: no cover - Pillow is a dependency
            PILImage = None
        if PILImage is not None and isinstance(x, PILImage.Image):
            return PILImage.fromarray(self(np.asarray(x if x.mode in ("RGB", "RGBA", "L", "LA") else x.convert("RGB"))))
        if isinstance(x, torch.Tensor):
            out = self(x.detach().cpu().numpy())
            return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)
        x = np.asarray(x)
        if x.dtype in (np.uint8, np.uint16):
            pixels, depth = to_unit_float(to_rgb(x, "input"))
            restored = self.run_nchw(pixels.transpose(2, 0, 1)[None])[0]
            return quantize(restored.transpose(1, 2, 0), depth)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"unsupported pixel type {x.dtype}: give uint8/uint16 HWC or float CHW/NCHW")
        if x.ndim == 3:
            return self.run_nchw(x[None])[0]
        if x.ndim == 4:
            return self.run_nchw(x)
        raise ValueError(f"expected a C x H x W or N x C x H x W float array, got shape {x.shape}")
