"""``Runner``: one call that restores images with any backend, whatever their size.

    runner = Runner("AST_derain.pth", task="derain")          # PyTorch, official protocol
    restored = runner(Image.open("rainy.png"))                  # PIL in, PIL out

A Runner may be shared between threads: the protocol and the input conversion keep no state, and
each backend documents its own thread safety (the PyTorch one needs nothing).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import replace
import threading

import numpy as np
from PIL import Image as PILImage

from .backends import backend_kind, open_backend
from .backends.options import OpenVINOOptions
from .budget import (BudgetError, BudgetWarning, format_size, measure_cost, release_memory, remember_cost,
                     resolve_budget, scaled_cost)
from .images import pil_to_array, quantize, to_rgb, to_unit_float
from .memcheck import GuardedInfer, is_out_of_memory, meter_for
from .planning import (Limits, halved_plan, make_plan, parse_tile, protocol_need, suggest_budget,
                       summary_line)
from .protocols import Protocol, Tiles, hw_range, parse_protocol
from .tasks import get_task
from .tiling import ArraySource, PixelSource, count_tiles, run_tiles, run_tiles_to_array

DEVICES = "cpu, cuda or cuda:N"


class AllocationError(MemoryError):
    """A photo that failed to allocate memory, also after the one smaller retry."""


class _Replan(Exception):
    """Raised out of a run whose measured cost calls for a smaller plan: ``plan`` runs instead."""

    def __init__(self, plan):
        super().__init__(str(plan.protocol))
        self.plan = plan


def _input_area(plan, h: int, w: int) -> int:
    t_h, t_w = plan.protocol.model_input_size(h, w)
    return t_h * t_w


def _unit(source: PixelSource) -> np.ndarray:
    """A pixel source's photo as one float32 [1, 3, H, W] array in [0, 1]."""
    return np.ascontiguousarray(to_unit_float(source.pixels)[0].transpose(2, 0, 1)[None])


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
    see ast_deploy.budget). A ``protocol`` given here is never re-planned (over an explicit
    ``max_memory`` it is a BudgetError, a ValueError); the task's default protocol, where an image
    does not fit, runs as feathered tiles that do, with one BudgetWarning per Runner. Every backend
    call is measured against the plan (ast_deploy.memcheck). ``tile="SIZE[:OVERLAP]"`` forces square tiles. ``progress(done, total)`` is called after every
    batch of tiles of an image that runs tiled.
``size_multiple``: the H and W multiple of an ONNX model without ``ast.size_multiple`` metadata
    (a model not made by ast-export is refused without it, and then needs ``task`` or ``protocol``).
    An ONNX whose ``ast.task`` metadata names another task than ``task`` is refused unless ``force``;
    without ``task``, the metadata's task gives the protocol. ``options``: the backend's options
    dataclass (``ast_deploy.backends.options``), e.g. ``TensorRTOptions(refit_from="model.onnx")`` for a
    weight-stripped engine.
    ``runtime`` runs an ONNX model on the CPU: "auto" (measured once per model file and cached:
    ``ast_deploy.runtime_choice``; ``runtime_choice`` then holds the figures), "onnxruntime",
    "openvino", or an ``OpenVINOOptions`` for OpenVINO's own settings."""

    def __init__(self, source, task: str | None = None, protocol: str | Protocol | None = None,
                 device: str = "cpu", *, config: dict | None = None, kernels: str | None = None,
                 max_batch: int | None = None, max_memory=None, tile=None, progress=None,
                 size_multiple: int | None = None, force: bool = False, runtime="auto", options=None):
        device = check_device(device)
        if task is not None:
            get_task(task)  # an unknown task fails before a model is loaded
        # --size-multiple is for ONNX models without metadata; for others it is checked against theirs below
        onnx_options = ({"size_multiple": size_multiple} if size_multiple is not None
                        and isinstance(source, (str, os.PathLike)) and backend_kind(source) == "onnx" else {})
        if isinstance(options, OpenVINOOptions):  # OpenVINO's options also name the runtime
            runtime, options = options, None
        if options is not None:  # one dataclass per backend (ast_deploy.backends.options)
            onnx_options["options"] = options
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
        named_protocol = protocol is not None
        if protocol is None:
            if task or model_task:
                protocol = get_task(task or model_task).protocol
            elif "no metadata" in str(getattr(self.backend, "size_multiple_source", "")):
                raise ValueError(f"{source}: a model without ast-export metadata needs its protocol: give --task "
                                 f"or --protocol (e.g. pad:{self.backend.size_multiple})")
            else:
                protocol = getattr(self.backend, "default_protocol", None) or f"pad:{self.backend.size_multiple}"
        self.named = named_protocol
        self.protocol = parse_protocol(protocol)
        self.protocol.check(self.backend.size_multiple)
        # --- memory budget and plans (ast_deploy.budget, ast_deploy.planning, ast_deploy.memcheck) ---
        budget_device = str(getattr(self.backend, "device", device))  # a TensorRT engine is on a GPU
        if "CUDA" in str(getattr(self.backend, "provider", "")):
            budget_device = device if str(device).startswith("cuda") else "cuda"
        # a server plans with its own budget (its core model's, reported to the client): whole images go to it
        serves = getattr(self.backend, "applies_protocol", False)
        self.budget = self.backend.budget if serves else resolve_budget(max_memory, budget_device)
        self.explicit_budget = max_memory is not None
        self.tile = parse_tile(tile)
        self.progress = progress
        self._cost = None
        self._replan_warned = False
        self._lock = threading.Lock()  # threads sharing the Runner: one probe, no lost count
        self.tiled_photos: dict = {}  # (tiles, reason) -> photos, for the one message per run
        if self.named and self.explicit_budget and self.tile is None and isinstance(self.protocol, Tiles):
            self._check_named_fits(self.protocol, self.protocol.tile_h, self.protocol.tile_w)

    @property
    def cost(self):
        """The backend's measured working set per call (a probe run the first time; cached)."""
        if self._cost is None:
            with self._lock:  # threads that start together measure once, not in parallel (and wrong)
                if self._cost is None:
                    self._cost = measure_cost(self.backend)
        return self._cost

    def limits(self):
        cost = None if self.budget == float("inf") else self.cost
        return Limits(self.budget, cost, hw_range(self.backend.shape_range), self.backend.max_batch)

    def plan_for(self, h: int, w: int, protocol: str | Protocol | None = None, others=(), images: int = 1):
        """The plan of an h x w image: the protocol (default: the runner's) where it fits this
        backend's budget and profile and those of ``others`` (Limits of backends that must run the
        same plan), else tiles that fit them all. A named protocol (``Runner(protocol=...)``, or one
        given here that differs from the runner's) is never re-planned for the budget: over an
        explicit ``max_memory`` it is a BudgetError (a ValueError), under the automatic budget it
        runs as named. A task's default protocol re-planned as tiles is a BudgetWarning, once."""
        parsed = self.protocol if protocol is None else parse_protocol(protocol)
        named = self.named or parsed != self.protocol
        limits = [self.limits(), *others]
        if named and self.explicit_budget and self.tile is None:
            self._check_named_fits(parsed, h, w)
        plan = make_plan(h, w, parsed, limits, self.backend.size_multiple, self.tile, images, named=named)
        if plan.tiled_to_fit and "budget" in plan.reason and not named:
            self._warn_replanned(plan, parsed, h, w)
        return plan

    def _check_named_fits(self, protocol: Protocol, h: int, w: int) -> None:
        need_h, need_w = protocol.model_input_size(h, w)
        own = self.limits()
        if own.takes(need_h, need_w) and own.batch_for(need_h, need_w) == 0:
            need = protocol_need(protocol, h, w, self.cost)
            photo = "" if isinstance(protocol, Tiles) else f" for a {h}x{w} photo"
            raise BudgetError(f"protocol {protocol} was named: it needs about {format_size(need)} of working memory"
                              f"{photo} (model input {need_h}x{need_w}), over max_memory {format_size(self.budget)}; "
                              f"give max_memory='{suggest_budget(need)}' (--max-memory {suggest_budget(need)}), or "
                              "leave the protocol to the task (it then runs as tiles that fit)")

    def _warn_replanned(self, plan, protocol: Protocol, h: int, w: int) -> None:
        if self._replan_warned:
            return
        self._replan_warned = True
        need = protocol_need(protocol, h, w, self.cost)
        budget = format_size(self.budget) + ("" if self.explicit_budget else ", automatic")
        warnings.warn(f"the default protocol {protocol} does not fit the memory budget ({budget}) for a {h}x{w} photo "
                      f"(about {format_size(need)}): it runs as {plan.protocol}, whose output differs slightly; "
                      f"max_memory='{suggest_budget(need)}' (--max-memory {suggest_budget(need)}) runs {protocol}",
                      BudgetWarning, stacklevel=3)

    def protocol_for(self, h: int, w: int, protocol: str | Protocol | None = None) -> Protocol:
        """The protocol an h x w image runs with (the plan's)."""
        return self.plan_for(h, w, protocol).protocol

    def _infer_in(self, step: int):
        step = min(step, self.backend.max_batch or step)

        def infer(batch: np.ndarray) -> np.ndarray:
            return np.concatenate([self.backend.infer(batch[i : i + step]) for i in range(0, len(batch), step)])

        return infer

    # --- running a plan that checks itself (ast_deploy.memcheck) ---

    def _execute(self, plan, run, h: int, w: int, images: int, fixed: bool):
        """``run(plan, infer)`` under ``plan``, each backend call measured: a call over the budget
        corrects the cost and shrinks the batch, or re-plans the rest of the photo (not a ``fixed``
        plan); an allocation failure is retried once smaller, then fails the photo."""
        retried = False
        while True:
            try:
                result = run(plan, self._guarded(plan, h, w, images, fixed))
                break
            except _Replan as again:
                plan = again.plan
            except Exception as e:
                if not is_out_of_memory(e) or isinstance(e, AllocationError):
                    raise
                plan = self._after_allocation_failure(plan, h, w, images, fixed, retried, e)
                retried = True
            finally:
                release_memory()
        self._count_tiled(plan, images)
        return result

    def _count_tiled(self, plan, images: int) -> None:
        if plan.tiled:
            key = (str(plan.protocol), plan.reason)
            with self._lock:
                self.tiled_photos[key] = self.tiled_photos.get(key, 0) + images

    def _guarded(self, plan, h: int, w: int, images: int, fixed: bool) -> GuardedInfer:
        step = min(plan.batch, self.backend.max_batch or plan.batch)
        meter = None if self.budget == float("inf") else meter_for(self.backend)
        total = count_tiles(h, w, plan.protocol) * images if isinstance(plan.protocol, Tiles) else images
        guard = None

        def on_overrun(n: int, th: int, tw: int, used: float) -> int:
            predicted = self.cost.of(n, th, tw)
            self._cost = scaled_cost(self.cost, used, predicted)
            remember_cost(self.backend, self._cost)
            fit = self.limits().batch_for(th, tw)
            said = (f"a batch of {n} x {th}x{tw} used {format_size(used)}, over the memory budget of "
                    f"{format_size(self.budget)} (planned: {format_size(predicted)}): the cost is corrected")
            if fit >= 1:
                warnings.warn(f"{said}; batches of {fit} from now on", BudgetWarning, stacklevel=2)
                return fit
            left = total - guard.done
            if fixed or left <= 0:
                then = "this plan is fixed (named, --tile, or given) and runs as it is" if fixed else "later photos plan with it"
                warnings.warn(f"{said}; {then}", BudgetWarning, stacklevel=2)
                return guard.step
            new = self.plan_for(h, w, images=images)
            if _input_area(new, h, w) >= _input_area(plan, h, w):  # no smaller plan: the smallest tile
                warnings.warn(f"{said}; no smaller tile exists, the photo runs as planned", BudgetWarning, stacklevel=2)
                return guard.step
            warnings.warn(f"{said}; the rest of this {h}x{w} photo is re-planned as {new.protocol} "
                          f"(batch {new.batch})", BudgetWarning, stacklevel=2)
            raise _Replan(new)

        guard = GuardedInfer(self.backend, step, meter, self.budget, on_overrun, lambda *nhw: self.cost.of(*nhw))
        return guard

    def _after_allocation_failure(self, plan, h: int, w: int, images: int, fixed: bool, retried: bool,
                                  error: Exception):
        items = count_tiles(h, w, plan.protocol) * images if isinstance(plan.protocol, Tiles) else images
        batch = min(plan.batch, items, self.backend.max_batch or items)
        what = f"{h}x{w} photo as {plan.protocol} (batch {batch})"
        text = str(error)
        first = text[text.find("Failed to allocate"):] if "Failed to allocate" in text else text.strip()
        first = (first.splitlines() or [""])[0][:200]
        smaller = None
        if not retried:
            if batch > 1:
                smaller = replace(plan, batch=1)  # the same numbers
            elif not fixed:
                smaller = halved_plan(plan, h, w, self.protocol, self.backend.size_multiple,
                                      hw_range(self.backend.shape_range))
        if smaller is None:
            raise AllocationError(f"out of memory running the {what}{' after a smaller retry' if retried else ''} "
                                  f"({type(error).__name__}: {first}); give a smaller max_memory (--max-memory) "
                                  "or free memory") from None
        warnings.warn(f"out of memory running the {what} ({type(error).__name__}: {first}): retrying as "
                      f"{smaller.protocol} (batch {smaller.batch})", BudgetWarning, stacklevel=3)
        return smaller

    def _run_plan(self, source, plan, pixels_out=None, fixed: bool = False):
        """Run ``plan`` (tiles or whole) on a planning source; float32 NCHW result, or, with
        ``pixels_out`` (an H x W x 3 integer array), the quantized result written into it band by band."""

        def run(p, infer):
            progress = self.progress if p.tiled else None
            if not isinstance(p.protocol, Tiles):
                restored = p.protocol.run(source.x if isinstance(source, ArraySource) else _unit(source), infer)
                if pixels_out is None:
                    return restored
                pixels_out[:] = quantize(restored[0].transpose(1, 2, 0), 8 if pixels_out.dtype == np.uint8 else 16)
                return pixels_out
            if pixels_out is None:
                return run_tiles_to_array(source, p.protocol, infer, p.batch, progress)
            depth = 8 if pixels_out.dtype == np.uint8 else 16

            def sink(b, top, rows):
                pixels_out[top : top + rows.shape[1]] = quantize(rows.transpose(1, 2, 0), depth)

            run_tiles(source, p.protocol, infer, p.batch, sink, progress)
            return pixels_out

        fixed = fixed or plan.named or plan.forced
        return self._execute(plan, run, source.height, source.width, source.images, fixed)

    def run_nchw(self, x: np.ndarray, protocol: str | Protocol | None = None, plan=None) -> np.ndarray:
        """Float32 [B, 3, H, W] in [0, 1] -> restored float32 [B, 3, H, W] (not clipped). A ``plan``
        given here runs as it is (its batch may shrink, its tiles do not)."""

        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a [B, 3, H, W] batch, got shape {x.shape}")
        check_finite(x)
        h, w = x.shape[2:]
        fixed = plan is not None
        plan = plan or self.plan_for(h, w, protocol, images=len(x))
        x = np.ascontiguousarray(x, dtype=np.float32)
        if getattr(self.backend, "applies_protocol", False):  # a server: it runs the plan on whole images
            self._count_tiled(plan, len(x))
            return self.backend.run_protocol(x, plan.protocol)
        return self._run_plan(ArraySource(x), plan, fixed=fixed)

    def restore_pixels(self, rgb: np.ndarray, protocol: str | Protocol | None = None) -> np.ndarray:
        """A uint8 / uint16 H x W x 3 photo -> the restored photo of the same type. Tiles read and
        write the photo's own pixels; a server gets the whole photo and pads or tiles it itself."""
        plan = self.plan_for(*rgb.shape[:2], protocol)
        if getattr(self.backend, "applies_protocol", False):
            self._count_tiled(plan, 1)
            return self.backend.run_pixels(rgb, plan.protocol)
        # tiles read and write the photo's own pixels; a whole run converts it once
        return self._run_plan(PixelSource(rgb), plan, np.empty(rgb.shape, dtype=rgb.dtype))

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
            return self.restore_pixels(to_rgb(x, "input"))
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"unsupported pixel type {x.dtype}: give uint8/uint16 HWC or float CHW/NCHW")
        if x.ndim == 3:
            return self.run_nchw(x[None])[0]
        if x.ndim == 4:
            return self.run_nchw(x)
        raise ValueError(f"expected a C x H x W or N x C x H x W float array, got shape {x.shape}")
