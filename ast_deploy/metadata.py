"""What an exported ONNX says about itself: ``metadata_props`` keys written by the exporter and read
by the backends and the engine builder (the engine's sidecar keeps the same facts); and the string
parameters a model served by ``ast-serve repo`` carries in its Triton config (read by both the server's
models and the client backend)."""

from __future__ import annotations

from collections.abc import Mapping

SIZE_MULTIPLE_KEY = "ast.size_multiple"  # H and W must be multiples of it
TASK_KEY = "ast.task"  # the task the model was exported for (optional)

DEFAULT_SIZE_MULTIPLE = 128  # every released AST takes H and W in multiples of 128


def size_multiple(metadata: Mapping[str, str], default: int = DEFAULT_SIZE_MULTIPLE) -> int:
    """The model's size multiple from its metadata (``default`` when absent)."""
    value = metadata.get(SIZE_MULTIPLE_KEY)
    if value is None:
        return default
    try:
        multiple = int(value)
    except (TypeError, ValueError):
        multiple = 0
    if multiple < 1:
        raise ValueError(f"metadata {SIZE_MULTIPLE_KEY} = {value!r} is not a positive integer")
    return multiple


def task(metadata: Mapping[str, str]) -> str | None:
    """The task named in the metadata, or None."""
    return metadata.get(TASK_KEY) or None


def export_metadata(multiple: int, task_name: str | None = None) -> dict[str, str]:
    """The metadata an export writes."""
    return {SIZE_MULTIPLE_KEY: str(int(multiple)), **({TASK_KEY: task_name} if task_name else {})}


def config_parameters(config) -> dict:
    """The string parameters of a ModelConfig message, or of the JSON the Python backend and the HTTP
    client give (``{"parameters": {"key": {"string_value": ...}}}``)."""
    if isinstance(config, dict):
        return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    return {k: v.string_value for k, v in config.parameters.items()}


def onnx_precision(model) -> str:
    """What an export computes in, from the graph itself: "int8" (Q/DQ nodes), "fp16" (FP16 weights or
    casts, in the main graph or the ``ast::`` function bodies) or "fp32". ``model``: an
    ``onnx.ModelProto`` or a path (read without external data)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    graphs = [model.graph, *model.functions]
    ops = {n.op_type for g in graphs for n in g.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8"
    fp16 = onnx.TensorProto.FLOAT16
    if any(i.data_type == fp16 for i in model.graph.initializer):
        return "fp16"
    casts = (a.i for g in graphs for n in g.node if n.op_type == "Cast" for a in n.attribute if a.name == "to")
    return "fp16" if fp16 in casts else "fp32"
