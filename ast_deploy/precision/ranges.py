"""Calibrated value ranges of every floating-point tensor, function internals included.

The FP32 model is run in onnxruntime with every intermediate tensor exposed as an output. Calls of
model-local functions (``ast::AdaptiveSparseAttention``, ``ast::PartialConv``) are inlined first,
so the tensors inside them (the attention logits and their squared ReLU) get ranges too, each
traced back to its call node. Results are cached on disk by model hash and image-set key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..fileio import atomic_write
from ..ort_session import open_session
from .calibration import CalibrationSet, cache_dir
from .graph import ensure_node_names, inline_with_owners, model_hash

RANGES_VERSION = 1


@dataclass
class Ranges:
    """``tensors[name] = {"min", "max", "absmax"}`` over all calibration images; ``owners`` maps a
    function-internal tensor (``"<call>::<name>"``) to its top-level call node."""
    tensors: dict[str, dict[str, float]]
    owners: dict[str, str] = field(default_factory=dict)
    key: str = ""

    def absmax(self, name: str) -> float | None:
        entry = self.tensors.get(name)
        return None if entry is None else entry["absmax"]

    def internal(self, call_name: str) -> dict[str, float]:
        """absmax of every tensor inside the function call ``call_name``."""
        return {t: self.tensors[t]["absmax"] for t, owner in self.owners.items()
                if owner == call_name and t in self.tensors}

    def to_json(self) -> str:
        return json.dumps(dict(version=RANGES_VERSION, key=self.key, tensors=self.tensors, owners=self.owners))

    @classmethod
    def from_json(cls, text: str) -> "Ranges":
        data = json.loads(text)
        if data.get("version") != RANGES_VERSION:
            raise ValueError("stale range cache")
        return cls(data["tensors"], data["owners"], data["key"])


def load_model(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return ensure_node_names(copy)
    return ensure_node_names(onnx.load(str(model)))


def collect_ranges(model: onnx.ModelProto | str | Path, calib: CalibrationSet, *, use_cache: bool = True,
                   max_outputs: int = 2000) -> Ranges:
    model = load_model(model)
    key = f"{model_hash(model)}-{calib.key}"
    cache = cache_dir() / f"ranges-{key}.json"
    if use_cache and cache.is_file():
        try:
            return Ranges.from_json(cache.read_text())
        except (ValueError, KeyError):
            pass
    inlined, owners = inline_with_owners(model)
    graph_outputs = {o.name for o in inlined.graph.output}
    names = [o for n in inlined.graph.node for o in n.output if o and o not in graph_outputs]
    names = list(dict.fromkeys(names)) + [o.name for o in inlined.graph.output] + [i.name for i in inlined.graph.input]
    input_name = inlined.graph.input[0].name
    stats: dict[str, dict[str, float]] = {}
    # Several sessions with a slice of the outputs each bound the memory of one run.
    for start in range(0, len(names), max_outputs):
        chunk = names[start:start + max_outputs]
        probe = onnx.ModelProto()
        probe.CopyFrom(inlined)
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in chunk if n != input_name)
        if not probe.graph.output:
            continue
        session = open_session(probe, optimize=False)
        wanted = [o.name for o in session.get_outputs() if o.type in ("tensor(float)", "tensor(double)", "tensor(float16)")]
        for batch in calib.batches:
            for name, value in zip(wanted, session.run(wanted, {input_name: batch})):
                _update(stats, name, value)
    for batch in calib.batches:
        _update(stats, input_name, batch)
    ranges = Ranges(stats, {k: v for k, v in owners.items() if k in stats}, key)
    if use_cache:
        atomic_write(cache, ranges.to_json())
    return ranges


def _update(stats: dict, name: str, value: np.ndarray) -> None:
    if value.size == 0:
        return
    value = value.astype(np.float64, copy=False)
    lo, hi = float(np.min(value)), float(np.max(value))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        finite = value[np.isfinite(value)]
        lo = float("-inf") if np.isneginf(value).any() else (float(finite.min()) if finite.size else 0.0)
        hi = float("inf") if np.isposinf(value).any() or np.isnan(value).any() else (float(finite.max()) if finite.size else 0.0)
    entry = stats.get(name)
    if entry is None:
        stats[name] = dict(min=lo, max=hi, absmax=max(abs(lo), abs(hi)))
    else:
        entry["min"], entry["max"] = min(entry["min"], lo), max(entry["max"], hi)
        entry["absmax"] = max(abs(entry["min"]), abs(entry["max"]))
