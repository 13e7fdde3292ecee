"""Mixed FP16/FP32 ONNX for TensorRT's strongly typed mode (inputs and outputs stay FP32).

Every top-level node is classified from the calibrated ranges of its inputs, outputs and (for the
``ast::`` custom nodes) the tensors inside its function body: a node stays FP32 when any of those
exceeds ``threshold`` (2**14 by default: a quarter of FP16's 65504, since TensorRT may reorder or
fuse and the calibration images are not every image), when its type is numerically sensitive
(reductions, LayerNormalization: TensorRT warns about FP16 layer norms after attention), or when the
user excludes it. Casts are inserted where the precision changes. A custom node converted to FP16
keeps its op type, domain and attributes and gets FP16 inputs, so its FunctionProto must be type
polymorphic (the check at the end runs the converted model in onnxruntime, which inlines it).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, defs, helper, numpy_helper

from ..fileio import atomic_write
from .graph import FLOAT_TYPES, attribute, local_functions
from .overflow import fp16_overflow_report
from .ranges import Ranges, collect_ranges, load_model
from .validate import compare_models

FP16_MAX = 65504.0
DEFAULT_THRESHOLD = 2.0 ** 14
SENSITIVE_OP_TYPES = ("LayerNormalization", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1",
                      "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "CumSum")
# Accept any input type and produce no float: converting them would only add casts.
TYPE_AGNOSTIC = ("Shape", "Size")


@dataclass
class NodeDecision:
    name: str
    op_type: str
    precision: str  # "fp16", "fp32", or "none" (no float tensors: untouched)
    reason: str = ""
    absmax: float | None = None


def _schema(node: onnx.NodeProto, opset: int):
    try:
        return defs.get_schema(node.op_type, opset, node.domain)
    except defs.SchemaError:
        return None


def _opset(model: onnx.ModelProto, domain: str = "") -> int:
    for entry in model.opset_import:
        if entry.domain in (domain, "ai.onnx" if domain == "" else domain):
            return entry.version
    return 1


def _formal_types(schema, index: int, outputs: bool = False) -> tuple[str, set[str]]:
    """(type string, allowed types) of input/output ``index`` (variadic parameters repeat)."""
    params = schema.outputs if outputs else schema.inputs
    if not params:
        return "", set()
    param = params[min(index, len(params) - 1)]
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    return param.type_str, allowed.get(param.type_str, {param.type_str})


def _float_inputs(model: onnx.ModelProto, node: onnx.NodeProto, ranges: Ranges, init: dict) -> list[int]:
    idx = []
    for i, name in enumerate(node.input):
        if not name:
            continue
        if name in init:
            if init[name].data_type in FLOAT_TYPES:
                idx.append(i)
        elif name in ranges.tensors:
            idx.append(i)
    return idx


def _init_absmax(tensor: TensorProto) -> float:
    array = numpy_helper.to_array(tensor)
    return float(np.max(np.abs(array))) if array.size else 0.0


def plan_fp16(model: onnx.ModelProto, ranges: Ranges, *, threshold: float = DEFAULT_THRESHOLD,
              fp32_op_types=SENSITIVE_OP_TYPES, nodes_to_exclude=()) -> dict[str, NodeDecision]:
    functions = local_functions(model)
    init = {t.name: t for t in model.graph.initializer}
    opset = _opset(model)
    decisions: dict[str, NodeDecision] = {}
    for node in model.graph.node:
        float_in = _float_inputs(model, node, ranges, init)
        float_out = [o for o in node.output if o and o in ranges.tensors]
        d = NodeDecision(node.name, node.op_type if not node.domain else f"{node.domain}::{node.op_type}", "fp16")
        decisions[node.name] = d
        if not float_in and not float_out:
            d.precision = "none"
            continue
        if node.op_type in TYPE_AGNOSTIC and not node.domain:
            d.precision, d.reason = "none", "type-agnostic"
            continue
        values = {node.input[i]: _init_absmax(init[node.input[i]]) if node.input[i] in init
                  else ranges.absmax(node.input[i]) for i in float_in}
        values.update({o: ranges.absmax(o) for o in float_out})
        is_call = (node.domain, node.op_type) in functions
        if is_call:
            values.update(ranges.internal(node.name))
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            worst = max(values, key=values.get)
            d.absmax = values[worst]
        if node.name in nodes_to_exclude:
            d.precision, d.reason = "fp32", "excluded by request"
        elif node.op_type in fp32_op_types and not node.domain:
            d.precision, d.reason = "fp32", f"sensitive op type {node.op_type}"
        elif values and not np.isfinite(d.absmax):
            d.precision, d.reason = "fp32", f"non-finite value in {worst}"
        elif values and d.absmax > threshold:
            where = "inside the function body" if worst in ranges.owners else "at"
            d.precision, d.reason = "fp32", f"range {d.absmax:.4g} > {threshold:.4g} {where} {worst}"
        elif not is_call:
            schema = _schema(node, opset if not node.domain else _opset(model, node.domain))
            if schema is None:
                d.precision, d.reason = "fp32", "no schema and no function body (unknown typing)"
            else:
                for i in float_in:
                    type_str, allowed = _formal_types(schema, i)
                    if type_str != "tensor(float)" and "tensor(float16)" not in allowed:
                        d.precision, d.reason = "fp32", f"{node.op_type} has no FP16 variant"
                        break
    return decisions


def _cast(name_in: str, name_out: str, to: int) -> onnx.NodeProto:
    return helper.make_node("Cast", [name_in], [name_out], name=f"{name_out}_cast", to=to)


@dataclass
class _Rewrite:
    """What apply_fp16 tracks while it walks the graph."""
    graph: onnx.GraphProto
    init: dict
    precision: dict = field(default_factory=dict)  # tensor -> "fp32" / "fp16" as produced
    fp16_inits: dict = field(default_factory=dict)  # FP32 initializer -> its FP16 copy's name
    fp32_init_users: set = field(default_factory=set)  # initializers still read as FP32
    casts: dict = field(default_factory=dict)  # (tensor, precision) -> the Cast's output
    new_nodes: list = field(default_factory=list)

    def cast_to(self, name: str, want: str) -> str:
        key = (name, want)
        if key not in self.casts:
            self.casts[key] = f"{name}__to_{want}"
            self.new_nodes.append(_cast(name, self.casts[key], TensorProto.FLOAT16 if want == "fp16" else TensorProto.FLOAT))
        return self.casts[key]

    def fp16_initializer(self, name: str) -> str:
        if name not in self.fp16_inits:
            self.fp16_inits[name] = f"{name}__fp16"
            array = numpy_helper.to_array(self.init[name]).astype(np.float16)
            self.graph.initializer.append(numpy_helper.from_array(array, self.fp16_inits[name]))
        return self.fp16_inits[name]


def apply_fp16(model: onnx.ModelProto, decisions: dict[str, NodeDecision]) -> tuple[onnx.ModelProto, int]:
    """Rewrite ``model`` (a copy) by the decisions; return it and the number of casts inserted."""
    model = load_model(model)
    graph = model.graph
    functions = local_functions(model)
    opset = _opset(model)
    r = _Rewrite(graph, {t.name: t for t in graph.initializer}, {i.name: "fp32" for i in graph.input})
    for node in graph.node:
        d = decisions.get(node.name)
        if d is None or d.precision == "none":
            r.fp32_init_users.update(name for name in node.input if name in r.init)
            for o in node.output:
                r.precision.setdefault(o, "fp32")
            r.new_nodes.append(node)
            continue
        is_call = (node.domain, node.op_type) in functions
        schema = None if is_call else _schema(node, opset if not node.domain else _opset(model, node.domain))
        converted_vars = _rewrite_inputs(node, d.precision, schema, r)
        for k, out in enumerate(node.output):
            if out:
                fp16_out = d.precision == "fp16" and _output_follows(node, k, is_call, schema, converted_vars)
                r.precision[out] = "fp16" if fp16_out else "fp32"
        if d.precision == "fp16":
            _retype_attributes(node)
        r.new_nodes.append(node)
    _finish(graph, r)
    return model, len(r.casts)


def _rewrite_inputs(node: onnx.NodeProto, want: str, schema, r: _Rewrite) -> set[str]:
    """Point ``node``'s float inputs at tensors of the precision it runs in (FP16 initializer copies,
    Casts); return the schema's type variables that became FP16."""
    converted_vars: set[str] = set()
    for i, name in enumerate(node.input):
        if not name:
            continue
        is_float_init = name in r.init and r.init[name].data_type == TensorProto.FLOAT
        if not is_float_init and name not in r.precision:
            continue  # an integer tensor, or a float tensor with no range (never computed)
        need = want
        if schema is not None:
            type_str, allowed = _formal_types(schema, i)
            if type_str == "tensor(float)" or "tensor(float16)" not in allowed:
                need = "fp32"  # a concretely typed input, e.g. Resize's scales
            elif need == "fp16":
                converted_vars.add(type_str)
        if is_float_init:
            if need == "fp16":
                node.input[i] = r.fp16_initializer(name)
            else:
                r.fp32_init_users.add(name)
        elif name not in r.init and r.precision[name] != need:
            node.input[i] = r.cast_to(name, need)
    return converted_vars


def _output_follows(node: onnx.NodeProto, k: int, is_call: bool, schema, converted_vars: set[str]) -> bool:
    """Whether output ``k`` of a node converted to FP16 is FP16 (its type follows a converted input)."""
    return (is_call or schema is None or _formal_types(schema, k, outputs=True)[0] in converted_vars
            or (node.op_type == "Cast" and attribute(node, "to") == TensorProto.FLOAT)
            or node.op_type in ("Constant", "ConstantOfShape"))


def _finish(graph: onnx.GraphProto, r: _Rewrite) -> None:
    """The rewritten node list, unused FP32 initializers dropped, FP32 graph outputs, stale types gone."""
    del graph.node[:]
    graph.node.extend(r.new_nodes)
    kept = [t for t in graph.initializer if t.name not in r.fp16_inits or t.name in r.fp32_init_users]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for out in graph.output:
        if r.precision.get(out.name) == "fp16":
            inner = f"{out.name}__fp16"
            for node in graph.node:
                node.input[:] = [inner if n == out.name else n for n in node.input]
                node.output[:] = [inner if n == out.name else n for n in node.output]
            graph.node.append(_cast(inner, out.name, TensorProto.FLOAT))
            r.casts[(out.name, "output")] = out.name
    # Recorded intermediate types are stale now; shape inference (or the runtime) recomputes them.
    keep_vi = [vi for vi in graph.value_info if r.precision.get(vi.name) != "fp16" and not vi.name.endswith("__fp16")]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)


def _apply_checked(model: onnx.ModelProto, decisions: dict[str, NodeDecision]) -> tuple[onnx.ModelProto, int]:
    """:func:`apply_fp16`, then a full type check. A local function whose body does not type-check
    with FP16 inputs (a float constant not routed through CastLike) sends its calls back to FP32."""
    functions = local_functions(model)
    for _ in range(len(functions) + 1):
        converted, n_casts = apply_fp16(model, decisions)
        try:
            onnx.checker.check_model(converted, full_check=True)
            return converted, n_casts
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            message = str(e)
            culprits = {name for (domain, name) in functions if f"(op_type:{name}," in message}
            calls = [n for n in model.graph.node if n.op_type in culprits and
                     decisions[n.name].precision == "fp16" and (n.domain, n.op_type) in functions]
            if not calls:
                raise
            for n in calls:
                decisions[n.name].precision = "fp32"
                decisions[n.name].reason = "its function body does not type-check with FP16 inputs"
    raise RuntimeError("FP16 conversion did not converge on a type-correct model")


def _retype_attributes(node: onnx.NodeProto) -> None:
    """Attributes that carry the float type themselves (Cast's ``to``, constants' values)."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16
        elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
    if node.op_type == "Constant":
        for attr in list(node.attribute):
            if attr.name in ("value_float", "value_floats"):
                value = np.array(helper.get_attribute_value(attr), dtype=np.float16)
                node.attribute.remove(attr)
                node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))


def convert_fp16(onnx_in: str | os.PathLike | onnx.ModelProto, onnx_out: str | os.PathLike, calib, *,
                 threshold: float = DEFAULT_THRESHOLD, fp32_op_types=SENSITIVE_OP_TYPES,
                 nodes_to_exclude=(), validate=None, use_cache: bool = True) -> dict:
    """Write a mixed-precision copy of ``onnx_in`` to ``onnx_out`` and return a report.

    ``calib`` is a :class:`CalibrationSet`; ``validate`` an optional list of validation cases
    (see :mod:`.validate`) for PSNR against the FP32 model in onnxruntime."""
    model = load_model(onnx_in)
    ranges = collect_ranges(model, calib, use_cache=use_cache)
    decisions = plan_fp16(model, ranges, threshold=threshold, fp32_op_types=fp32_op_types,
                          nodes_to_exclude=set(nodes_to_exclude))
    converted, n_casts = _apply_checked(model, decisions)
    atomic_write(onnx_out, converted.SerializeToString())  # a reader never sees half a model
    counts = {p: sum(d.precision == p for d in decisions.values()) for p in ("fp16", "fp32", "none")}
    custom = {}
    for node in converted.graph.node:
        if node.domain not in ("", "ai.onnx") and node.op_type != "Cast":
            d = decisions.get(node.name)
            entry = custom.setdefault(f"{node.domain}::{node.op_type}", {"fp16": 0, "fp32": 0})
            entry[d.precision if d else "fp32"] += 1
    report = dict(
        output=str(onnx_out), threshold=threshold, calibration=dict(folder=str(calib.folder), images=len(calib),
                                                                    key=calib.key),
        nodes=counts, casts_inserted=n_casts, custom_nodes=custom,
        kept_fp32=[asdict(d) for d in decisions.values() if d.precision == "fp32"],
        overflow=fp16_overflow_report(model, ranges, decisions=decisions),
    )
    if validate is not None:
        report["validation"] = compare_models(model, converted, validate)
    return report
