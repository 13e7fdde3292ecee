"""``Runner``: one call that restores images with any backend, whatever their size.

    runner = Runner("AST_derain.pth", task="derain")          # PyTorch, official protocol
    restored = runner(Image.open("rainy.png"))                  # PIL in, PIL out

A Runner may be shared between threads: the protocol and the input conversion keep no state, and
each backend documents its own thread safety (the PyTorch one needs nothing).
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image as PILImage

from .backends import open_backend
from .images import quantize, to_rgb, to_unit_float
from .protocols import Protocol, fit_to_shape_range, hw_range, parse_protocol
from .tasks import get_task


class Runner:
    def __init__(self, source, task: str | None = None, protocol: str | Protocol | None = None,
                 device: str = "cpu", *, config: dict | None = None, kernels: str | None = None,
                 max_batch: int | None = None):
        self.backend = open_backend(source, device, task=task, config=config, kernels=kernels, max_batch=max_batch)
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
        if isinstance(x, PILImage.Image):
            return PILImage.fromarray(self(np.asarray(x if x.mode in ("RGB", "RGBA", "L", "LA") else x.convert("RGB"))))
        torch = sys.modules.get("torch")  # a tensor exists only once torch is imported: never import it here
        if torch is not None and isinstance(x, torch.Tensor):
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
