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
from .protocols import Protocol, Tiles, hw_range, parse_protocol
from .tasks import get_task


class Runner:
    """``max_memory``: the backend's memory budget (bytes, ``"4G"``, ``"unlimited"``; None: automatic,
    see ast_deploy.budget); an image whose protocol does not fit runs as feathered tiles that do.
    ``tile="SIZE[:OVERLAP]"`` forces square tiles. ``progress(done, total)`` is called after every
    batch of tiles of an image that runs tiled."""

    def __init__(self, source, task: str | None = None, protocol: str | Protocol | None = None,
                 device: str = "cpu", *, config: dict | None = None, kernels: str | None = None,
                 max_batch: int | None = None, max_memory=None, tile=None, progress=None):
        self.backend = open_backend(source, device, task=task, config=config, kernels=kernels, max_batch=max_batch)
        if protocol is None:
            protocol = get_task(task).protocol if task else (getattr(self.backend, "default_protocol", None)
                                                             or f"pad:{self.backend.size_multiple}")
        self.protocol = parse_protocol(protocol)
        self.protocol.check(self.backend.size_multiple)
        # --- memory budget and plans (ast_deploy.budget, ast_deploy.planning) ---
        from .budget import resolve_budget
        from .planning import parse_tile

        budget_device = str(getattr(self.backend, "device", device))  # a TensorRT engine is on a GPU
        if "CUDA" in str(getattr(self.backend, "provider", "")):
            budget_device = device if str(device).startswith("cuda") else "cuda"
        # a server applies its own budget (ast-serve repo --max-memory); the client only sends whole images
        serves = getattr(self.backend, "applies_protocol", False)
        self.budget = float("inf") if serves else resolve_budget(max_memory, budget_device)
        self.tile = parse_tile(tile)
        self.progress = progress
        self._cost = None
        self.tiled_photos: dict = {}  # (tiles, reason) -> photos, for the one message per run

    @property
    def cost(self):
        """The backend's measured working set per call (a probe run the first time; cached)."""
        if self._cost is None:
            from .budget import measure_cost

            self._cost = measure_cost(self.backend)
        return self._cost

    def limits(self):
        from .planning import Limits

        cost = None if self.budget == float("inf") else self.cost
        return Limits(self.budget, cost, hw_range(self.backend.shape_range), self.backend.max_batch)

    def plan_for(self, h: int, w: int, protocol: str | Protocol | None = None, others=(), images: int = 1):
        """The plan of an h x w image: the protocol (default: the runner's) where it fits this
        backend's budget and profile and those of ``others`` (Limits of backends that must run the
        same plan), else tiles that fit them all."""
        from .planning import make_plan

        protocol = self.protocol if protocol is None else parse_protocol(protocol)
        return make_plan(h, w, protocol, [self.limits(), *others], self.backend.size_multiple, self.tile, images)

    def protocol_for(self, h: int, w: int, protocol: str | Protocol | None = None) -> Protocol:
        """The protocol an h x w image runs with (the plan's)."""
        return self.plan_for(h, w, protocol).protocol

    def _infer_in(self, step: int):
        step = min(step, self.backend.max_batch or step)

        def infer(batch: np.ndarray) -> np.ndarray:
            return np.concatenate([self.backend.infer(batch[i : i + step]) for i in range(0, len(batch), step)])

        return infer

    def _run_plan(self, source, plan, pixels_out=None):
        """Run ``plan`` on a planning source; float32 NCHW result, or, with ``pixels_out`` (an
        H x W x 3 integer array), the quantized result written into it band by band."""
        from .budget import release_memory
        from .planning import run_tiles, run_tiles_to_array

        if plan.tiled:
            key = (str(plan.protocol), plan.reason)
            self.tiled_photos[key] = self.tiled_photos.get(key, 0) + source.images
        try:
            if pixels_out is not None:
                depth = 8 if pixels_out.dtype == np.uint8 else 16

                def sink(b, top, rows):
                    pixels_out[top : top + rows.shape[1]] = quantize(rows.transpose(1, 2, 0), depth)

                run_tiles(source, plan.protocol, self._infer_in(plan.batch), plan.batch, sink, self.progress)
                return pixels_out
            return run_tiles_to_array(source, plan.protocol, self._infer_in(plan.batch), plan.batch,
                                      self.progress if plan.tiled else None)
        finally:
            release_memory()

    def run_nchw(self, x: np.ndarray, protocol: str | Protocol | None = None, plan=None) -> np.ndarray:
        """Float32 [B, 3, H, W] in [0, 1] -> restored float32 [B, 3, H, W] (not clipped)."""
        from .budget import release_memory
        from .planning import ArraySource

        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a [B, 3, H, W] batch, got shape {x.shape}")
        h, w = x.shape[2:]
        plan = plan or self.plan_for(h, w, protocol, images=len(x))
        x = np.ascontiguousarray(x, dtype=np.float32)
        if getattr(self.backend, "applies_protocol", False):  # a server: it runs the plan on whole images
            return self.backend.run_protocol(x, plan.protocol)
        if isinstance(plan.protocol, Tiles):
            return self._run_plan(ArraySource(x), plan)
        try:
            return plan.protocol.run(x, self._infer_in(plan.batch))
        finally:
            release_memory()

    def tiling_note(self) -> str | None:
        """One line saying how many photos ran as tiles and why (None when none did)."""
        from .planning import summary_line

        return summary_line(self.tiled_photos, self.budget)

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
            rgb = to_rgb(x, "input")
            plan = self.plan_for(*rgb.shape[:2])
            if isinstance(plan.protocol, Tiles):  # tiles read and write the photo's own pixels
                from .planning import PixelSource

                return self._run_plan(PixelSource(rgb), plan, np.empty(rgb.shape, dtype=rgb.dtype))
            pixels, depth = to_unit_float(rgb)
            restored = self.run_nchw(pixels.transpose(2, 0, 1)[None])[0]
            return quantize(restored.transpose(1, 2, 0), depth)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"unsupported pixel type {x.dtype}: give uint8/uint16 HWC or float CHW/NCHW")
        if x.ndim == 3:
            return self.run_nchw(x[None])[0]
        if x.ndim == 4:
            return self.run_nchw(x)
        raise ValueError(f"expected a C x H x W or N x C x H x W float array, got shape {x.shape}")
