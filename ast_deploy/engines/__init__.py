"""TensorRT and TensorRT-RTX engines: building (TensorRT with Polygraphy, TensorRT-RTX with its builder API),
the engine cache, its sidecar records and the per-layer precision report."""

from .build import build_engine
from .plugins import PluginError
from ..shapes import ProfileError, ShapeProfile
from .target import TensorRTNotInstalled

__all__ = ["PluginError", "ProfileError", "ShapeProfile", "TensorRTNotInstalled", "build_engine"]
