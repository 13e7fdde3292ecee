"""What the engine builder needs to know about an ONNX file, read once."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import metadata as meta
from ..ops.names import PLUGIN_NAMESPACE


def file_sha256(*paths: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of the files' contents, in order (a model and its external-data files)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def external_data_files(model, directory: Path) -> list[Path]:
    """The files holding the initializers a model keeps outside its .onnx (models over 2 GB)."""
    from onnx.external_data_helper import uses_external_data

    locations = set()
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            locations |= {e.value for e in tensor.external_data if e.key == "location"}
    return [directory / loc for loc in sorted(locations)]


@dataclass(frozen=True)
class OnnxInfo:
    path: Path
    sha256: str
    input_name: str
    input_dims: tuple  # an int per static dim, None per dynamic one
    metadata: dict = field(default_factory=dict)  # metadata_props written by the exporter
    plugin_ops: tuple[str, ...] = ()  # op types of the nodes TensorRT can map to AST plugins

    @property
    def size_multiple(self) -> int:
        return meta.size_multiple(self.metadata)

    @property
    def task(self) -> str | None:
        return meta.task(self.metadata)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.input_dims)


def inspect_onnx(path: str | os.PathLike) -> OnnxInfo:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {str(path)!r} does not exist")
    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one image input, found {[i.name for i in inputs]}")
    dims = tuple(d.dim_value if d.HasField("dim_value") else None
                 for d in inputs[0].type.tensor_type.shape.dim)
    # onnx-tensorrt maps a node to a plugin by op_type when it carries plugin_namespace (TensorRT >= 10.10
    # also by its domain): onnx-tensorrt ModelImporter.cpp (parseNode, plugin lookup) and TensorRT's
    # samples/python/quickly_deployable_plugins/README.md ("Using plugins in ONNX models").
    plugin_ops = sorted({n.op_type for n in model.graph.node
                         if n.domain == PLUGIN_NAMESPACE
                         or any(a.name == "plugin_namespace" for a in n.attribute)})
    digest = file_sha256(path, *external_data_files(model, path.parent))  # weights are part of the engine
    return OnnxInfo(path=path, sha256=digest, input_name=inputs[0].name, input_dims=dims,
                    metadata={p.key: p.value for p in model.metadata_props}, plugin_ops=tuple(plugin_ops))
