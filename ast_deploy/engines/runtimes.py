"""The two engine runtimes ``ast-build`` targets: TensorRT (data-centre GPUs, Jetson) and TensorRT-RTX
(consumer and workstation RTX GPUs), and the GPUs an RTX engine is built for.

TensorRT-RTX (``pip install 'ast-deploy[tensorrt-rtx]'``, NVIDIA's ``tensorrt-rtx-cu12-libs`` and
``-bindings`` wheels, all on PyPI) builds ahead of time on a machine without a GPU: the builder
config names the target GPUs (``IBuilderConfig.set_compute_capability(ComputeCapability.SM89, i)``,
``ComputeCapability.CURRENT`` for the GPU at hand) and the engine's kernels are compiled just in time
on the device when it is first loaded. The bindings import as ``tensorrt_rtx`` where the
``tensorrt-rtx-cu12`` package adds that name, else as ``tensorrt_rtx_bindings``.
"""

from __future__ import annotations

import re

TENSORRT = "tensorrt"
RTX = "rtx"
TARGETS = (TENSORRT, RTX)
RUNTIME_NAMES = {TENSORRT: "TensorRT", RTX: "TensorRT-RTX"}
# The part of an engine's default file name that says which runtime it is for (never shared).
FILE_TAGS = {TENSORRT: "", RTX: ".rtx"}

RTX_MISSING = ("TensorRT-RTX is not installed here (neither 'tensorrt_rtx' nor 'tensorrt_rtx_bindings' imports): "
               "pip install 'ast-deploy[tensorrt-rtx]' (NVIDIA's tensorrt-rtx-cu12-libs and -bindings wheels, "
               "on PyPI; the builder runs on a machine without a GPU).")


def import_tensorrt_rtx():
    """The TensorRT-RTX Python module, or TensorRTNotInstalled saying how to install it."""
    from .target import TensorRTNotInstalled

    errors = []
    for name in ("tensorrt_rtx", "tensorrt_rtx_bindings"):
        try:
            return __import__(name)
        except (ImportError, OSError) as e:  # OSError: the bindings are there but the libraries are not
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise TensorRTNotInstalled(f"{RTX_MISSING}\nDetail: {'; '.join(errors)}")


def rtx_version() -> str | None:
    """The installed TensorRT-RTX version without importing it (for ast-doctor), or None."""
    from importlib import metadata

    for dist in ("tensorrt-rtx-cu12-bindings", "tensorrt-rtx-cu13-bindings", "tensorrt-rtx-cu12", "tensorrt-rtx"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def parse_compute_capabilities(text) -> tuple[int, ...]:
    """``"86,89,120"`` (or ``"8.6,8.9,12.0"``, or a sequence) -> (86, 89, 120): the GPUs to build for."""
    items = text if isinstance(text, (list, tuple)) else [p for p in re.split(r"[,\s]+", str(text).strip()) if p]
    if not items:
        raise ValueError("--compute-capability needs at least one value, e.g. 86,89,120")
    values = []
    for item in items:
        raw = str(item).strip().lower().removeprefix("sm_").removeprefix("sm")
        major, dot, minor = raw.partition(".")
        if not (major.isdigit() and (not dot or minor.isdigit())):
            raise ValueError(f"bad compute capability {item!r}: write e.g. 89 or 8.9 (lists: 86,89,120)")
        values.append(int(major) * 10 + int(minor) if dot else int(major))
    return tuple(sorted(set(values)))


def compute_capability_enums(trt, capabilities) -> list:
    """``trt.ComputeCapability`` members for ``capabilities``; a ValueError naming the supported ones."""
    supported = sorted(n for n in dir(trt.ComputeCapability) if re.fullmatch(r"SM\d+", n))
    missing = [c for c in capabilities if f"SM{c}" not in supported]
    if missing:
        raise ValueError(f"TensorRT-RTX {trt.__version__} cannot build for compute capability "
                         f"{', '.join(map(str, missing))}; it supports {', '.join(s[2:] for s in supported)}")
    return [getattr(trt.ComputeCapability, f"SM{c}") for c in capabilities]


def dotted(capability: int) -> str:
    """89 -> "8.9", 120 -> "12.0" (the spelling of ``Target.compute_capability``)."""
    return f"{capability // 10}.{capability % 10}"
