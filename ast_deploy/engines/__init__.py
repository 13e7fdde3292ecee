"""TensorRT engines: building (with Polygraphy), the engine cache and its sidecar records."""

from .build import build_engine
from .plugins import PluginError
from ..shapes import ProfileError, ShapeProfile
from .target import TensorRTNotInstalled

__all__ = ["PluginError", "ProfileError", "ShapeProfile", "TensorRTNotInstalled", "build_engine"]
