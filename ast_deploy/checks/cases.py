"""What a parity check runs on: named NCHW batches, with ground truth where it is known.

One ``Case`` for every check: ast-check's images (a folder, or generated), ast-export's seeded
random batches of the recipe's shapes, and the FP16 / INT8 conversion's held-out pairs. A case is
one batch [N, 3, H, W] and is judged as a whole (ast-export's batch-2 validation runs its batch
through the model at once, as deployed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .synthetic import synthetic_image


@dataclass(frozen=True)
class Case:
    name: str
    image: np.ndarray  # [N, 3, H, W] float32 in [0, 1]
    target: np.ndarray | None = None  # the same shape: the ground truth, if known

    def __post_init__(self):
        if np.ndim(self.image) != 4:
            raise ValueError(f"case {self.name!r}: images are [N, C, H, W] batches, got shape {np.shape(self.image)}")
        if self.target is not None and np.shape(self.target) != np.shape(self.image):
            raise ValueError(f"case {self.name!r}: target shape {np.shape(self.target)} differs from the "
                             f"image's {np.shape(self.image)}")

    @classmethod
    def from_chw(cls, name: str, image: np.ndarray, target: np.ndarray | None = None) -> "Case":
        """A one-image case from a CHW image (and target)."""
        def batch(a):
            return None if a is None else np.ascontiguousarray(np.asarray(a, np.float32)[None])

        return cls(name, batch(image), batch(target))


def random_cases(shapes: Sequence[Sequence[int]], seed: int = 0) -> list[Case]:
    """Uniform random batches of the NCHW ``shapes``, one seeded generator for all (ast-export)."""
    rng = np.random.default_rng(seed)
    return [Case("random-" + "x".join(map(str, s)), rng.random(tuple(s), dtype=np.float32)) for s in shapes]


def synthetic_cases(sizes: Sequence[tuple[int, int]], seed: int = 0) -> list[Case]:
    """One generated photo-like image per (H, W), seeds ``seed``, ``seed + 1``, ... (ast-check)."""
    return [Case.from_chw(f"synthetic-{h}x{w}-seed{seed + i}", synthetic_image(h, w, seed + i))
            for i, (h, w) in enumerate(sizes)]
