"""Does the engine compute in the precision the ONNX asks for? Checks of the layer report
(:mod:`.layers`) against the ONNX graph and the ``*.precision.json`` that ``ast-export --fp16`` writes.

- INT8 ONNX (Q/DQ nodes): every Conv / ConvTranspose / MatMul / Gemm with a DequantizeLinear input
  must run in an INT8 layer (TensorRT fuses the Q/DQ pairs into it); one that does not is reported
  with the layer and type it runs in.
- FP16 ONNX: every matrix layer runs FP16 unless one of its nodes is an FP32 island that ``--fp16``
  kept (``kept_fp32`` in the precision report); every kept node runs in a layer that computes in
  FP32 (alone or beside FP16 where a Cast is fused), never in an FP16-only layer.
- FP32 ONNX: no layer runs in a lower precision.

Each mismatch is one line naming the ONNX node; ``ast-build`` prints them as warnings.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..metadata import onnx_precision
from .layers import MATRIX_TYPES, graph_node

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _by_node(layers) -> dict[str, list[dict]]:
    index: dict[str, list[dict]] = {}
    for layer in layers:
        for name in layer["onnx"]:
            for key in {name, graph_node(name)}:
                index.setdefault(key, []).append(layer)
    return index


def precision_report_path(onnx_path) -> Path:
    path = Path(onnx_path)
    return path.with_suffix(".precision.json")


def check_int8(layers, model) -> list[str]:
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    index = _by_node(layers)
    problems = []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or not dequantized & set(node.input):
            continue
        found = index.get(node.name, [])
        if not found:
            problems.append(f"{node.name} ({node.op_type}, Q/DQ in the ONNX): not found in the engine's layer report")
        elif not any(layer["precision"] == "INT8" for layer in found):
            where = ", ".join(f"{layer['name']} ({layer['type']}, {layer['precision']})" for layer in found[:2])
            problems.append(f"{node.name} ({node.op_type}, Q/DQ in the ONNX): the Q/DQ pair did not fuse, it runs "
                            f"in {where}")
    return problems


def check_fp16(layers, kept_fp32) -> list[str]:
    kept = set(kept_fp32)
    index = _by_node(layers)
    problems = []
    for layer in layers:
        if layer["type"].lower() not in MATRIX_TYPES or layer["precision"] == "FP16":
            continue
        nodes = {graph_node(n) for n in layer["onnx"]} | set(layer["onnx"])
        if not nodes & kept:
            named = next((graph_node(n) for n in layer["onnx"] if "QuantizeLinear" not in n), layer["name"])
            problems.append(f"{named}: matrix layer {layer['name']} ({layer['type']}) runs {layer['precision']}, "
                            "the FP16 ONNX asks for FP16")
    for name in sorted(kept):
        found = index.get(name, [])
        if not found:
            problems.append(f"{name}: kept FP32 by --fp16, but not found in the engine's layer report")
        elif all("FP32" not in layer["precision"].split("+") for layer in found):
            problems.append(f"{name}: kept FP32 by --fp16, but runs {found[0]['precision']} in {found[0]['name']}")
    return problems


def check_fp32(layers) -> list[str]:
    low = [layer for layer in layers if layer["precision"] not in ("FP32", "-")]
    return [f"{(layer['onnx'] or [layer['name']])[0]}: runs {layer['precision']} in {layer['name']} "
            "(the ONNX is FP32)" for layer in low]


def check_layers(layers, onnx_path) -> dict:
    """``{"onnx_precision", "mismatches": [...]}`` for an engine built from ``onnx_path``."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    kind = onnx_precision(model)
    if kind == "int8":
        problems = check_int8(layers, model)
    elif kind == "fp16":
        report = precision_report_path(onnx_path)
        try:
            kept = [entry["name"] for entry in json.loads(report.read_text()).get("kept_fp32", [])]
        except (OSError, ValueError):
            kept = []
        problems = check_fp16(layers, kept)
    else:
        problems = check_fp32(layers)
    return {"onnx_precision": kind, "mismatches": problems}
