"""ONNX files for the runtime tests (backends, engines, CLIs), exported once per test session.

The TorchScript exporter (``dynamo=False``) is used because it exports the tiny model in ~10 s
where ``dynamo=True`` takes ~30 s (static) to ~90 s (dynamic) on the 2-core test machine; the
exporter itself is tested elsewhere. The model has its default initialisation, so its output is
an image (input + a small residual) and PSNR thresholds mean what they mean for real checkpoints.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from conftest import TINY_CONFIG

_TMP = tempfile.TemporaryDirectory(prefix="ast-runtime-tests-")
TMP = Path(_TMP.name)


def have_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
        return True
    except (ImportError, OSError):
        return False


@functools.cache
def image_model():
    from ast_deploy.model import AST

    torch.manual_seed(0)
    return AST(**TINY_CONFIG).eval()


def torch_infer(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return image_model()(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def set_metadata(model: onnx.ModelProto, **entries) -> onnx.ModelProto:
    props = {p.key: p.value for p in model.metadata_props} | {k: str(v) for k, v in entries.items()}
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    return model


@functools.cache
def dynamic_onnx() -> Path:
    """Tiny AST with dynamic batch, H and W (exported from a 256 x 256 example: a 128 x 128 one
    specializes the shifted-window levels to 128)."""
    path = TMP / "tiny_dynamic.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(image_model(), (torch.rand(1, 3, 256, 256),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["restored"],
                          dynamic_axes={"image": axes, "restored": axes})
    onnx.save(set_metadata(onnx.load(str(path)), **{"ast.size_multiple": 128}), str(path))
    return path


def with_fixed_input(src: Path, dst: Path, shape) -> Path:
    """A copy of ``src`` whose input and output declare the static ``shape``."""
    model = onnx.load(str(src))
    for value in (model.graph.input[0], model.graph.output[0]):
        for dim, size in zip(value.type.tensor_type.shape.dim, shape):
            dim.Clear()
            dim.dim_value = size
    onnx.save(model, str(dst))
    return dst


@functools.cache
def static_onnx() -> Path:
    return with_fixed_input(dynamic_onnx(), TMP / "tiny_static.onnx", (1, 3, 128, 128))


def damaged_copy(src: Path, dst: Path, name: str = "output_proj.proj.0.weight", scale: float = 1.1) -> Path:
    """A copy of ``src`` with one weight initializer 10 % off: a wrong export that still runs. (The
    output projection: most other weights feed a LayerNorm, which would undo a uniform scaling.)"""
    model = onnx.load(str(src))
    (init,) = [t for t in model.graph.initializer if t.name == name]
    weights = onnx.numpy_helper.to_array(init)
    init.CopyFrom(onnx.numpy_helper.from_array((weights * scale).astype(weights.dtype), init.name))
    onnx.save(model, str(dst))
    return dst


@functools.cache
def checkpoint() -> Path:
    """``image_model``'s weights as a plain state-dict checkpoint (architecture: TINY_CONFIG)."""
    path = TMP / "tiny.pth"
    torch.save(image_model().state_dict(), path)
    return path
