"""FP16 overflow from calibrated ranges, checked directly.

onnxruntime's CPU provider runs many FP16 nodes in FP32 behind inserted casts, so a converted
model that runs fine there can still overflow on a GPU. This reads the FP32 model's calibrated
ranges instead: every tensor (function internals included) whose magnitude passes FP16's largest
finite value (65504) or comes near it is listed with the node that computes it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .graph import INTERNAL_SEP, tensor_producers
from .ranges import Ranges, collect_ranges, load_model

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0 ** -14


def fp16_overflow_report(model, calib, *, near: float = 2.0 ** 14, decisions: dict | None = None) -> dict:
    """``calib``: a :class:`~.calibration.CalibrationSet` or already collected :class:`~.ranges.Ranges`.
    ``decisions`` (from :func:`~.fp16.plan_fp16`) marks each finding as covered when the node that
    computes it stays FP32. ``ok`` is False when an overflow lands in a node that would run FP16."""
    model = load_model(model)
    ranges = calib if isinstance(calib, Ranges) else collect_ranges(model, calib)
    producers = {name: node for name, node in tensor_producers(model.graph).items()}
    overflow, close = [], []
    for name, entry in ranges.tensors.items():
        absmax = entry["absmax"]
        if not absmax > near:
            continue
        node_name = ranges.owners.get(name) or (producers[name].name if name in producers else None)
        node = next((n for n in model.graph.node if n.name == node_name), None)
        item = dict(tensor=name, absmax=absmax, node=node_name,
                    op_type=None if node is None else (f"{node.domain}::{node.op_type}" if node.domain else node.op_type),
                    inside_function=INTERNAL_SEP in name)
        if decisions is not None and node_name in decisions:
            item["node_precision"] = decisions[node_name].precision
        (overflow if not absmax <= FP16_MAX else close).append(item)
    for items in (overflow, close):
        items.sort(key=lambda i: -i["absmax"])
    unsafe = [i for i in overflow if i.get("node_precision", "fp16") == "fp16"]
    return dict(fp16_max=FP16_MAX, near=near, overflow=overflow, near_max=close,
                weights_underflow=_weight_underflow(model), ok=not unsafe,
                unsafe=[i["tensor"] for i in unsafe])


def _weight_underflow(model: onnx.ModelProto, min_fraction: float = 0.01) -> list[dict]:
    """Float weights of which a noticeable fraction becomes subnormal or zero in FP16."""
    out = []
    for tensor in model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        array = np.abs(numpy_helper.to_array(tensor))
        nonzero = array[array > 0]
        if nonzero.size == 0:
            continue
        fraction = float(np.mean(nonzero < FP16_MIN_NORMAL))
        if fraction >= min_fraction:
            out.append(dict(initializer=tensor.name, subnormal_or_zero_fraction=round(fraction, 4)))
    return out
