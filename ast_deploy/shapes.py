"""Sizes and shapes, spelt one way across the tools.

- an image size is ``HxW`` (``--shape``, ``--sizes``); a list of sizes is ``HxW,HxW``;
- a TensorRT profile is ``BxCxHxW:BxCxHxW:BxCxHxW`` (MIN:OPT:MAX, ``--shapes``): ``ShapeProfile``;
- a backend's accepted range is a ``ShapeRange`` ``((min B, H, W), (max B, H, W))``.

``parse_size`` / ``parse_sizes`` / ``parse_shape`` share one parser of ``x``-separated positive
integers and raise ``ValueError`` with a message that says how to write the value.
"""

from __future__ import annotations

from dataclasses import dataclass

Shape = tuple[int, int, int, int]
Size = tuple[int, int]

# ((min_batch, min_h, min_w), (max_batch, max_h, max_w)); None in the max tuple: unbounded.
ShapeRange = tuple[tuple[int, int, int], tuple["int | None", "int | None", "int | None"]]


class ProfileError(ValueError):
    """A shape profile that cannot be built (bad syntax, wrong order, sizes the model cannot take)."""


def _parse_dims(text: str, count: int, min_value: int = 1) -> tuple[int, ...] | None:
    """``"AxBx..."`` with exactly ``count`` integers >= ``min_value`` (spaces and ``X`` allowed), else None."""
    parts = str(text).strip().lower().split("x")
    if len(parts) != count or not all(p.strip().isdigit() for p in parts):
        return None
    dims = tuple(int(p) for p in parts)
    return dims if min(dims) >= min_value else None


def parse_size(text: str, min_side: int = 1) -> Size:
    """``"512x384"`` -> ``(512, 384)`` (H x W); sides must be integers of at least ``min_side``."""
    dims = _parse_dims(text, 2, max(1, min_side))
    if dims is None:
        least = "positive integers" if min_side <= 1 else f"sides of at least {min_side} pixels"
        raise ValueError(f"bad size {str(text).strip()!r}: write HxW with {least}, e.g. 512x384")
    return dims


def parse_sizes(text: str, min_side: int = 1) -> list[Size]:
    """``"256x256,512x384"`` -> ``[(256, 256), (512, 384)]``."""
    sizes = [parse_size(part, min_side) for part in str(text).split(",") if part.strip()]
    if not sizes:
        raise ValueError("no sizes given: write them as HxW[,HxW...], e.g. 256x256,512x384")
    return sizes


def format_size(size) -> str:
    return "x".join(str(int(d)) for d in size)


def parse_shape(text: str) -> Shape:
    """``"1x3x512x512"`` -> ``(1, 3, 512, 512)``."""
    dims = _parse_dims(text, 4)
    if dims is None:
        raise ProfileError(f"bad shape {text!r}: write BxCxHxW with positive integers, e.g. 1x3x512x512")
    return dims


def format_shape(shape) -> str:
    return "x".join(str(d) for d in shape)


@dataclass(frozen=True)
class ShapeProfile:
    min: Shape
    opt: Shape
    max: Shape

    @classmethod
    def parse(cls, spec: str) -> "ShapeProfile":
        """``"1x3x128x128:1x3x512x512:4x3x1024x1024"`` (MIN:OPT:MAX); a single shape means a static one."""
        parts = spec.split(":")
        if len(parts) == 1:
            parts = parts * 3
        if len(parts) != 3:
            raise ProfileError(f"bad shapes {spec!r}: write MIN:OPT:MAX, e.g. 1x3x128x128:1x3x512x512:4x3x1024x1024")
        return cls(*(parse_shape(p) for p in parts))

    @classmethod
    def static(cls, shape) -> "ShapeProfile":
        shape = tuple(int(d) for d in shape)
        return cls(shape, shape, shape)

    def validate(self, size_multiple: int, input_dims=None) -> "ShapeProfile":
        """Check the profile against the model: 3 channels, H and W multiples of ``size_multiple``,
        min <= opt <= max in every dim, and equal to the ONNX input's static dims (``input_dims``:
        ints for static dims, anything else for dynamic ones)."""
        named = {"min": self.min, "opt": self.opt, "max": self.max}
        for label, shape in named.items():
            if shape[1] != 3:
                raise ProfileError(f"{label} shape {format_shape(shape)}: AST takes 3 channels (BxCxHxW with C = 3)")
            bad = [axis for axis, d in (("H", shape[2]), ("W", shape[3])) if d % size_multiple]
            if bad:
                raise ProfileError(f"{label} shape {format_shape(shape)}: {' and '.join(bad)} must be multiples of "
                                   f"{size_multiple}, the size this model takes")
        for axis, name in enumerate("BCHW"):
            lo, mid, hi = self.min[axis], self.opt[axis], self.max[axis]
            if not lo <= mid <= hi:
                raise ProfileError(f"shapes {self}: {name} must satisfy min <= opt <= max, got {lo}, {mid}, {hi}")
        if input_dims is not None:
            for axis, (name, dim) in enumerate(zip("BCHW", input_dims)):
                if isinstance(dim, int) and dim > 0 and {self.min[axis], self.opt[axis], self.max[axis]} != {dim}:
                    raise ProfileError(f"shapes {self}: the ONNX input has a fixed {name} = {dim}; export it with a "
                                       f"dynamic {name} or use {name} = {dim} in min, opt and max")
        return self

    @property
    def shape_range(self):
        """((min B, H, W), (max B, H, W)), the Backend.shape_range of an engine with this profile."""
        return (self.min[0], self.min[2], self.min[3]), (self.max[0], self.max[2], self.max[3])

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def __str__(self) -> str:
        return ":".join(format_shape(s) for s in (self.min, self.opt, self.max))


def shape_in_range(bhw: tuple[int, int, int], shape_range: ShapeRange) -> bool:
    low, high = shape_range
    return all(lo <= v and (hi is None or v <= hi) for v, lo, hi in zip(bhw, low, high))


def format_shape_range(shape_range: ShapeRange) -> str:
    (b0, h0, w0), (b1, h1, w1) = shape_range

    def span(lo, hi):
        return str(lo) if lo == hi else f"{lo}..{'any' if hi is None else hi}"

    return f"batch {span(b0, b1)}, H {span(h0, h1)}, W {span(w0, w1)}"
