"""The per-layer report of an engine, from the builder itself.

With ``ProfilingVerbosity.DETAILED`` the builder logs, at the end of a build (VERBOSE severity), one
line per engine layer: ``Name: ..., LayerType: gemm, Inputs: [ { Name: ..., Dimensions: [...], ...,
Datatype: Half, ... } ], Constants: [...], Outputs: [...], TacticName: ..., Metadata: [ONNX Layer:
node_a][ONNX Layer: node_b]`` - the same information as ``IEngineInspector``'s one-line format,
which needs a deserialized engine and so a GPU. (TensorRT builds, through Polygraphy, record no layer
report yet: its logger keeps the build log.) Each layer becomes ``{"name", "type", "onnx",
"precision", "inputs", "outputs"}``: the ONNX nodes fused into it (the parser's metadata) and its
precision, read from the data types of what it computes on:

- matrix products and convolutions (``gemm``, ``correlation``, ``deconv``, and TensorRT's
  ``MatrixMultiply``/``Convolution``...): INT8 when an input or weight is INT8, else their first input's type;
- other layers: the one floating type of their non-scalar inputs, weights and outputs, or e.g.
  ``FP32+FP16`` for a kernel that fuses a Cast; ``-`` for shape-only layers.
"""

from __future__ import annotations

import re
from collections import Counter

DTYPES = {"float": "FP32", "half": "FP16", "bfloat16": "BF16", "int8": "INT8", "fp8": "FP8", "int4": "INT4",
          "fp4": "FP4", "fp32": "FP32", "fp16": "FP16", "bf16": "BF16"}
_ORDER = ("FP32", "TF32", "BF16", "FP16", "FP8", "INT8", "INT4", "FP4")
MATRIX_TYPES = frozenset({"gemm", "correlation", "deconv", "matrixmultiply", "convolution", "deconvolution",
                          "fullyconnected"})

_TENSOR = re.compile(r"\{ Name: (?P<name>.*?), (?:Location: \w+, )?Dimensions: \[(?P<dims>[^\]]*)\]"
                     r"(?P<rest>.*?)\}")
_DATATYPE = re.compile(r"Datatype: (\w+)")
_SECTION = re.compile(r"(Inputs|Constants|Outputs): \[(.*?)\](?=, (?:Constants|Outputs|TacticName|ParameterType"
                      r"|StreamId|Metadata)|$)")


def _tensors(section: str) -> list[tuple[str, str | None]]:
    """(dims, precision or None) of each tensor of an Inputs/Constants/Outputs section."""
    out = []
    for match in _TENSOR.finditer(section):
        dtype = _DATATYPE.search(match["rest"])
        out.append((match["dims"], DTYPES.get(dtype[1].lower()) if dtype else None))
    return out


def _combine(kinds) -> str:
    kinds = sorted(set(k for k in kinds if k), key=lambda k: _ORDER.index(k) if k in _ORDER else 99)
    return "+".join(kinds) if kinds else "-"


def layer_precision(layer_type: str, inputs, constants, outputs) -> str:
    """The precision a layer computes in (see the module docstring); arguments are ``_tensors`` lists."""
    weights = [p for dims, p in constants if dims.strip() not in ("1", "")]  # scalars (alpha, beta) aside
    if layer_type.lower() in MATRIX_TYPES:
        operands = [p for _, p in inputs] + weights
        if "INT8" in operands:
            return "INT8"
        first = next((p for p in operands if p), None)
        return first or "-"
    return _combine([p for _, p in inputs] + weights + [p for _, p in outputs])


def parse_layer_line(line: str) -> dict | None:
    """One ``Name: ..., LayerType: ...`` line of the builder's layer log as a report entry."""
    head = re.match(r"Name: (?P<name>.*?), LayerType: (?P<type>[^,]+), ", line)
    if not head:
        return None
    sections = {key: _tensors(body) for key, body in _SECTION.findall(line)}
    inputs, constants, outputs = (sections.get(k, []) for k in ("Inputs", "Constants", "Outputs"))
    meta = line.rsplit("Metadata: ", 1)[1] if "Metadata: " in line else ""
    return {"name": head["name"], "type": head["type"], "onnx": re.findall(r"\[ONNX Layer: (.*?)\]", meta),
            "precision": layer_precision(head["type"], inputs, constants, outputs),
            "inputs": [p or "-" for _, p in inputs], "outputs": [p or "-" for _, p in outputs]}


def layers_from_log(messages) -> list[dict] | None:
    """The layers of the builder's ``Layers:`` message (from a DETAILED build's VERBOSE log), or None."""
    for message in reversed(list(messages)):
        text = message.lstrip()
        if text.startswith("Layers:"):
            return [entry for line in text.splitlines()[1:] if (entry := parse_layer_line(line.strip()))]
    return None


def graph_node(onnx_name: str) -> str:
    """The model-graph node an ONNX name in a layer's metadata belongs to: a node inside an inlined
    call (``call/local``, see parser_input) or a local-function body (``inner | call (Function)``)
    belongs to its calling node."""
    if " | " in onnx_name:
        return onnx_name.split(" | ", 1)[1].rsplit(" (", 1)[0]
    return onnx_name.split("/", 1)[0]


def summary(layers) -> dict:
    """Layers per precision, e.g. ``{"FP16": 125, "FP32+FP16": 46, "-": 2}``."""
    return dict(Counter(layer["precision"] for layer in layers).most_common())


def table(layers, limit: int = 12) -> str:
    """A short table for ast-build: the layer counts per precision and type, then the matrix layers."""
    rows = Counter((layer["precision"], layer["type"]) for layer in layers)
    lines = [f"{'precision':<12}{'layer type':<18}{'layers':>7}", "-" * 37]
    lines += [f"{p:<12}{t:<18}{n:>7}" for (p, t), n in sorted(rows.items(), key=lambda r: (-r[1], r[0]))][:limit]
    lines.append(f"{'total':<30}{len(layers):>7}")
    return "\n".join(lines)
