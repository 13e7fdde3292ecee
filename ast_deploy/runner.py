"""``Runner``: one call that restores images with any backend, whatever their size.

    runner = Runner("AST_derain.pth", task="derain")          # PyTorch, official protocol
    restored = runner(Image.open("rainy.png"))                  # PIL in, PIL out

A Runner may be shared between threads: the protocol and the input conversion keep no state, and
each backend documents its own thread safety (the PyTorch one needs nothing).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image as PILImage

from .backends import backend_kind, open_backend
from .budget import measure_cost, release_memory, resolve_budget
from .images import pil_to_array, quantize, to_rgb, to_unit_float
from .planning import Limits, make_plan, parse_tile, summary_line
from .protocols import Protocol, Tiles, hw_range, parse_protocol
from .tasks import get_task
from .tiling import ArraySource, PixelSource, run_tiles, run_tiles_to_array

DEVICES = "cpu, cuda or cuda:N"


def check_device(device) -> str:
    """``device`` as the Runner takes it ("cpu", "cuda", "cuda:N"); anything else is a ValueError (an
    unknown device must not silently run on the CPU)."""
    text = str(device).strip().lower()
    kind, sep, index = text.partition(":")
    if kind == "cpu" and not sep or kind == "cuda" and (not sep or index.isdigit()):
        return text
    raise ValueError(f"unknown device {str(device)!r}: use {DEVICES}")


def check_finite(x: np.ndarray) -> None:
    """A ValueError saying where the first NaN / Inf of a float batch is (attention would spread one
    such value through its window and beyond, giving an all-NaN picture)."""
    finite = np.isfinite(x)
    if finite.all():
        return
    count = int(x.size - np.count_nonzero(finite))
    first = np.unravel_index(int(np.argmin(finite)), x.shape)
    where = ", ".join(f"{name}={int(i)}" for name, i in zip(("batch", "channel", "y", "x")[-x.ndim:], first))
    raise ValueError(f"the input holds {count} non-finite value(s) (NaN or Inf); the first is {x[first]} at "
                     f"[{where}]: replace them (np.nan_to_num) before restoring")


class Runner:
    """``max_memory``: the backend's memory budget (bytes, ``"4G"``, ``"unlimited"``; None: automatic,
    see ast_deploy.budget); an image whose protocol does not fit runs as feathered tiles that do.
    ``tile="SIZE[:OVERLAP]"`` forces square tiles. ``progress(done, total)`` is called after every
    batch of tiles of an image that runs tiled.
``size_multiple``: the H and W multiple of an ONNX model without ``ast.size_multiple`` metadata
    (a model not made by ast-export is refused without it, and then needs ``task`` or ``protocol``).
    An ONNX whose ``ast.task`` metadata names another task than ``task`` is refused unless ``force``;
    without ``task``, the metadata's task gives the protocol.
    ``runtime`` runs an ONNX model on the CPU: "auto" (measured once per model file and cached:
    ``ast_deploy.runtime_choice``; ``runtime_choice`` then holds the figures), "onnxruntime",
    "openvino", or an ``OpenVINOOptions`` for OpenVINO's own settings."""

    def __init__(self, source, task: str | None = None, protocol: str | Protocol | None = None,
                 device: str = "cpu", *, config: dict | None = None, kernels: str | None = None,
                 max_batch: int | None = None, max_memory=None, tile=None, progress=None,
                 size_multiple: int | None = None, force: bool = False, runtime="auto"):
        device = check_device(device)
        if task is not None:
            get_task(task)  # an unknown task fails before a model is loaded
        # --size-multiple is for ONNX models without metadata; for others it is checked against theirs below
        onnx_options = ({"size_multiple": size_multiple} if size_multiple is not None
                        and isinstance(source, (str, os.PathLike)) and backend_kind(source) == "onnx" else {})
        self.backend = open_backend(source, device, task=task, config=config, kernels=kernels, max_batch=max_batch,
                                    runtime=runtime, **onnx_options)
        self.runtime_choice = getattr(self.backend, "runtime_choice", None)  # what runtime="auto" measured
        if size_multiple is not None and size_multiple != self.backend.size_multiple:
            raise ValueError(f"{source}: size multiple {size_multiple} was given, the model's is "
                             f"{self.backend.size_multiple}")
        metadata = getattr(self.backend, "metadata", None) or {}
        model_task = metadata.get("ast.task") or None
        if task and model_task and task != model_task and not force:
            raise ValueError(f"{source} was exported for task {model_task!r}, not {task!r} (a model trained for "
                             f"one degradation does not restore another); use --task {model_task}, or --force "
                             "(force=True) to run it anyway")
        if protocol is None:
            if task or model_task:
                protocol = get_task(task or model_task).protocol
            elif "no metadata" in str(getattr(self.backend, "size_multiple_source", "")):
                raise ValueError(f"{source}: a model without ast-export metadata needs its protocol: give --task "
                                 f"or --protocol (e.g. pad:{self.backend.size_multiple})")
            else:
                protocol = getattr(self.backend, "default_protocol", None) or f"pad:{self.backend.size_multiple}"
        self.protocol = parse_protocol(protocol)
        self.protocol.check(self.backend.size_multiple)
        # --- memory budget and plans (ast_deploy.budget, ast_deploy.planning) ---

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

            self._cost = measure_cost(self.backend)
        return self._cost

    def limits(self):

        cost = None if self.budget == float("inf") else self.cost
        return Limits(self.budget, cost, hw_range(self.backend.shape_range), self.backend.max_batch)

    def plan_for(self, h: int, w: int, protocol: str | Protocol | None = None, others=(), images: int = 1):
        """The plan of an h x w image: the protocol (default: the runner's) where it fits this
        backend's budget and profile and those of ``others`` (Limits of backends that must run the
        same plan), else tiles that fit them all."""

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

        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a [B, 3, H, W] batch, got shape {x.shape}")
        check_finite(x)
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

        return summary_line(self.tiled_photos, self.budget)

    def __call__(self, x):
        """Restore an image or a batch, returned as the same kind it came as:

        - a PIL image, or a uint8 / uint16 H x W x 3 array (an image file's pixels);
        - a float32 C x H x W or N x C x H x W array or tensor with values in [0, 1].
        """
        if isinstance(x, PILImage.Image):
            # Every mode through images.pil_to_array, 16-bit ones at full precision; Pillow has no 16-bit
            # RGB mode, so the restored PIL image is 8-bit RGB (give a uint16 array for 16-bit output).
            pixels, _ = to_unit_float(to_rgb(pil_to_array(x, f"PIL image (mode {x.mode})"), "PIL image"))
            restored = self.run_nchw(pixels.transpose(2, 0, 1)[None])[0]
            return PILImage.fromarray(quantize(restored.transpose(1, 2, 0), 8))
        torch = sys.modules.get("torch")  # a tensor exists only once torch is imported: never import it here
        if torch is not None and isinstance(x, torch.Tensor):
            out = self(x.detach().cpu().numpy())
            return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)
        x = np.asarray(x)
        if x.dtype.kind == "u" and x.dtype.itemsize == 2:
            x = x.astype(np.uint16)  # big-endian 16-bit (as some decoders give it) in native order
        if x.dtype in (np.uint8, np.uint16):
            rgb = to_rgb(x, "input")
            plan = self.plan_for(*rgb.shape[:2])
            if isinstance(plan.protocol, Tiles):  # tiles read and write the photo's own pixels

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
