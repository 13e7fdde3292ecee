"""``config.pbtxt`` of the two models ``ast-serve repo`` writes, as text in Triton's model-config
schema, and its validation against Triton's own protobuf (``model_config_pb2``, shipped in
``tritonclient.grpc``; text format parsed by ``google.protobuf.text_format``).

The core model ``NAME_core`` runs the network on float batches ``[B, 3, H, W]`` with dynamic
batching; the front model ``NAME`` (Python backend) takes one whole photo per request and applies
the protocol, calling the core model through BLS. The front model's contract:

- inputs, exactly one per request: ``IMAGE`` UINT8 / ``IMAGE16`` UINT16 ``[H, W, 3]`` (the pixels of
  an image file) or ``INPUT`` FP32 ``[3, H, W]`` in [0, 1]; optional ``PROTOCOL`` (BYTES ``[1]``,
  e.g. ``tiles:384:80``) names the protocol for that request instead of the served one;
- outputs, of the same kind: ``OUTPUT_IMAGE`` / ``OUTPUT_IMAGE16`` ``[H, W, 3]`` for ``IMAGE`` /
  ``IMAGE16``, ``OUTPUT`` FP32 ``[3, H, W]`` (not clipped) for ``INPUT``.

The python core also has the output ``COST`` (FP64 ``[4]`` per image): the answer to a cost query,
with which the front model (and a client) plan, and the measured peak of an image request that asks
for it too (``ast_deploy.serving.core``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

TYPE_NAMES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
BACKENDS = ("tensorrt", "onnxruntime", "python")
FRONT_INPUTS = {"IMAGE": ("TYPE_UINT8", [-1, -1, 3]), "IMAGE16": ("TYPE_UINT16", [-1, -1, 3]),
                "INPUT": ("TYPE_FP32", [3, -1, -1]), "PROTOCOL": ("TYPE_STRING", [1])}
FRONT_OUTPUTS = {"OUTPUT_IMAGE": ("TYPE_UINT8", [-1, -1, 3]), "OUTPUT_IMAGE16": ("TYPE_UINT16", [-1, -1, 3]),
                 "OUTPUT": ("TYPE_FP32", [3, -1, -1])}
OUTPUT_FOR = {"IMAGE": "OUTPUT_IMAGE", "IMAGE16": "OUTPUT_IMAGE16", "INPUT": "OUTPUT"}
COST_OUTPUT = "COST"  # python core only: [bytes per pixel, constant, budget, measured peak] (serving.core)
DEFAULT_QUEUE_DELAY_US = 2000


class ConfigError(ValueError):
    """A config.pbtxt that Triton's model-config schema rejects."""


@dataclass
class CoreSpec:
    """What the front model must know of the core model, and what its config says."""
    backend: str                   # tensorrt | onnxruntime | python
    input_name: str
    output_name: str
    dtype: str                     # float32 | float16: the core's input and output tensors
    dims: list                     # [3, H, W] with -1 for dynamic sides (batch dim excluded when batched)
    max_batch_size: int            # 0: the model is not batched by Triton (static batch)
    size_multiple: int
    shape_range: list | None       # [[min B, H, W], [max B, H, W]] (None: any), as Backend.shape_range
    kind: str = "KIND_CPU"
    count: int = 1
    model_file: str = "model.onnx"  # python core: the file in the version folder
    parameters: dict = field(default_factory=dict)


def _dims(values) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def _tensor(name: str, dtype: str, dims, optional: bool = False) -> str:
    extra = "\n    optional: true" if optional else ""
    return f'  {{\n    name: "{name}"\n    data_type: {dtype}\n    dims: {_dims(dims)}{extra}\n  }}'


def _parameters(params: dict) -> str:
    return "".join(f'parameters {{\n  key: "{k}"\n  value: {{ string_value: {json.dumps(str(v))} }}\n}}\n'
                   for k, v in params.items())


def core_config(name: str, core: CoreSpec, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US) -> str:
    head = {"tensorrt": 'platform: "tensorrt_plan"', "onnxruntime": 'backend: "onnxruntime"',
            "python": 'backend: "python"'}[core.backend]
    dtype = TYPE_NAMES[core.dtype]
    dims = core.dims if core.max_batch_size else [1, *core.dims]
    outputs = [_tensor(core.output_name, dtype, dims)]
    if core.backend == "python":  # the cost query's answer (serving.core)
        outputs.append(_tensor(COST_OUTPUT, "TYPE_FP64", [4] if core.max_batch_size else [-1, 4]))
    text = (f'name: "{name}"\n{head}\nmax_batch_size: {core.max_batch_size}\n'
            f'input [\n{_tensor(core.input_name, dtype, dims)}\n]\n'
            f'output [\n' + ",\n".join(outputs) + '\n]\n')
    if core.max_batch_size:
        text += f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
    text += f"instance_group [\n  {{\n    count: {core.count}\n    kind: {core.kind}\n  }}\n]\n"
    if core.backend == "tensorrt":
        text += 'default_model_filename: "model.plan"\n'
    elif core.backend == "onnxruntime":
        text += 'default_model_filename: "model.onnx"\n'
    return text + _parameters(core.parameters)


def front_config(name: str, parameters: dict, count: int = 1) -> str:
    inputs = ",\n".join(_tensor(n, t, d, optional=True) for n, (t, d) in FRONT_INPUTS.items())
    outputs = ",\n".join(_tensor(n, t, d) for n, (t, d) in FRONT_OUTPUTS.items())
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\ninput [\n{inputs}\n]\noutput [\n{outputs}\n]\n'
            f"instance_group [\n  {{\n    count: {count}\n    kind: KIND_CPU\n  }}\n]\n" + _parameters(parameters))


def parse_config(text: str):
    """Parse ``config.pbtxt`` text into Triton's ``ModelConfig`` message (raises ConfigError)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise ConfigError(f"validating config.pbtxt needs tritonclient[grpc] (pip install -e '.[serving]'): {e}") from e
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise ConfigError(f"config.pbtxt does not follow Triton's model-config schema: {e}") from e


def validate_config(text: str):
    """Parse and check what the schema alone does not: a name, a platform or backend, tensors with
    dims, dynamic batching only on a batched model. Returns the ModelConfig."""
    config = parse_config(text)
    problems = []
    if not config.name:
        problems.append("no name")
    if not (config.platform or config.backend):
        problems.append("neither platform nor backend")
    for tensor in list(config.input) + list(config.output):
        if not tensor.dims:
            problems.append(f"tensor {tensor.name!r} has no dims")
        if any(d < -1 or d == 0 for d in tensor.dims):
            problems.append(f"tensor {tensor.name!r} has bad dims {list(tensor.dims)}")
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        problems.append("dynamic batching on a model with max_batch_size 0")
    if problems:
        raise ConfigError(f"config.pbtxt of {config.name or '?'}: " + "; ".join(problems))
    return config


