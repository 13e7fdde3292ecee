"""What every inference backend offers the Runner: one ``infer`` on float32 NCHW batches, plus the
sizes it accepts, so the caller can pad or tile images before calling it.

Backends follow Polygraphy's split: a *loader* (a cheap, lazy callable that does the heavy work
when called: building a session, deserializing an engine) and a *backend* that owns what the
loader returned. Heavy modules (onnxruntime, tensorrt, torch.cuda) are imported inside them.
"""

from __future__ import annotations

import abc

import numpy as np

from ..metadata import DEFAULT_SIZE_MULTIPLE
from ..shapes import ShapeRange, format_shape_range, shape_in_range


class BackendError(RuntimeError):
    """A backend that cannot be opened or cannot run (missing runtime, bad file, wrong machine)."""


class ShapeError(ValueError):
    """A batch the backend cannot take (wrong layout, size outside the range it was built for)."""


class Backend(abc.ABC):
    """Runs AST on float32 batches ``[B, 3, H, W]`` and returns ``[B, 3, H, W]`` float32.

    Subclasses set ``name``, ``size_multiple`` and ``shape_range`` and implement ``_infer``;
    ``infer`` validates the batch first, so a wrong size fails with a message that says what fits.
    """

    name: str = "backend"
    size_multiple: int = DEFAULT_SIZE_MULTIPLE
    shape_range: ShapeRange | None = None  # None: any batch and any multiple of size_multiple
    batch_limit: int | None = None  # a cap on the batch set by the caller (open_backend's max_batch)

    @property
    def max_batch(self) -> int | None:
        """Largest batch one ``infer`` call takes (the shape range's and ``batch_limit``); None when unbounded."""
        limits = [b for b in (None if self.shape_range is None else self.shape_range[1][0], self.batch_limit)
                  if b is not None]
        return min(limits) if limits else None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.check_batch(batch.shape)
        return self._infer(batch)

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:
        """Release the session / engine; the backend cannot be used afterwards."""

    def check_batch(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[1] != 3:
            raise ShapeError(f"{self.name}: expected a float32 batch [B, 3, H, W], got shape {tuple(shape)}")
        b, _, h, w = shape
        if h % self.size_multiple or w % self.size_multiple:
            source = getattr(self, "size_multiple_source", None)  # say where the number comes from
            raise ShapeError(f"{self.name}: H and W must be multiples of {self.size_multiple}"
                             + (f" ({source})" if source else "") + f", got {h}x{w} "
                             "(pad or tile the image first; ast_deploy.Runner does it)")
        if self.batch_limit is not None and b > self.batch_limit:
            raise ShapeError(f"{self.name}: batch {b} is larger than the limit of {self.batch_limit} set for it")
        if self.shape_range is not None and not shape_in_range((b, h, w), self.shape_range):
            raise ShapeError(f"{self.name}: batch of shape (B, H, W) = {(b, h, w)} is outside the range this "
                             f"model takes: {format_shape_range(self.shape_range)}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        rng = "any size" if self.shape_range is None else format_shape_range(self.shape_range)
        return f"<{type(self).__name__} {self.name}: multiple of {self.size_multiple}, {rng}>"

