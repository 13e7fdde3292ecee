"""Explicit symmetric INT8 Q/DQ for TensorRT's strongly typed mode, via onnxruntime's QDQ quantizer.

Placement ``"tensorrt"`` (the default) follows NVIDIA's explicit-quantization guidance (TensorRT
developer guide, "Explicit Quantization", Q/DQ layer-placement recommendations:
https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html):
Q/DQ on all inputs of the weighted operators (Conv, ConvTranspose, MatMul/Gemm; activation and
weight), none on their outputs, zero points 0; weights stay FP32 behind a Q/DQ pair (TensorRT
quantizes them at build time with the Q scale); activations per-tensor; Conv / ConvTranspose weights
per output channel (axis 0 of [K, C, R, S], axis 1 of [C, K, R, S]); MatMul
/ Gemm weights per-tensor, since TensorRT documents per-channel weight scales for MatMul only where
both inputs are 2-D and AST's MatMuls are batched 3-D x 2-D. This is also how NVIDIA Model
Optimizer configures onnxruntime for TensorRT (``AddQDQPairToWeight``, Conv axis 0), except that
ModelOpt leaves MatMul weights on onnxruntime's per-channel default (axis 1).

Placement ``"ort"`` is the one ONNX Runtime's CPU provider runs fastest (measured with
``benchmarks/bench_speed.py``; the pattern check is ``tests/test_precision.py``): ONNX Runtime
1.32 fuses DequantizeLinear -> MatMul into its integer ``MatMulIntegerToFloat`` kernel for every
MatMul only when the activation is UINT8 (asymmetric, zero point from the calibrated range) and the
weight an INT8 initializer (symmetric, per column: axis 1); with INT8 activations (TensorRT's
choice) it fuses about a third of AST's MatMuls and runs the others as DequantizeLinear + float
MatMul, which is why the TensorRT placement is no faster than FP32 on a CPU. Convolutions stay FP32
under ``"ort"``: without a QuantizeLinear on their output ONNX Runtime has no integer Conv to fuse
into, and DequantizeLinear + float Conv only costs time. Where it differs from ``"tensorrt"``:
UINT8 asymmetric activations (TensorRT takes INT8 with zero point 0 only), per-column MatMul weights
(TensorRT: per-tensor), INT8 weight initializers (TensorRT: FP32 weights behind Q/DQ), no Conv Q/DQ.
A TensorRT engine is built from a ``"tensorrt"`` export, an ONNX Runtime CPU deployment from an
``"ort"`` one.

Placement ``"ort-per-channel"`` is the earlier scheme (INT8 weight initializers, per-channel along
axis 1 for MatMul), kept for comparison: ``benchmarks/bench_int8_placement.py`` measures both.

Calibration ranges are cached by model hash and image-set key. When the accuracy budget is missed,
the nodes with the worst local quantization SNR are excluded (kept float) in growing steps until it
holds; the report names them.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..checks.tolerances import DEFAULT_TOLERANCES
from ..fileio import atomic_write
from ..ort_session import open_session
from .calibration import CalibrationSet, cache_dir
from .graph import model_hash, tensor_producers
from .ranges import load_model
from .validate import compare_models, run

WEIGHTED_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# The axis of a weight that indexes output channels: [K, C, R, S] for Conv, [C, K, R, S] for ConvTranspose.
OUTPUT_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1}
PLACEMENTS = ("tensorrt", "ort", "ort-per-channel")
ORT_OP_TYPES = ("MatMul", "Gemm")  # what the "ort" placement quantizes
DEFAULT_PLACEMENT = "tensorrt"
SCHEMES = {
    "tensorrt": ("INT8 symmetric, Q/DQ on weighted-op inputs only, FP32 weights behind Q/DQ pairs, per-channel "
                 "Conv/ConvTranspose weights (output-channel axis), per-tensor MatMul/Gemm weights"),
    "ort": ("UINT8 asymmetric activations, INT8 symmetric per-column MatMul/Gemm weights (initializers), Q/DQ on "
            "MatMul/Gemm inputs only, convolutions FP32 (ONNX Runtime CPU's MatMulIntegerToFloat pattern)"),
    "ort-per-channel": "INT8 symmetric, Q/DQ on weighted-op inputs only, INT8 per-channel weights (MatMul axis 1)",
}
DEFAULT_MIN_PSNR = DEFAULT_TOLERANCES["int8"].psnr_min  # dB vs the FP32 model, worst validation case


class _Reader:
    """onnxruntime CalibrationDataReader over a CalibrationSet."""

    def __init__(self, input_name: str, calib: CalibrationSet):
        self.input_name, self.batches, self.i = input_name, calib.batches, 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.input_name: self.batches[self.i - 1]}

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield {self.input_name: batch}


def quantizable_nodes(model: onnx.ModelProto, op_types=WEIGHTED_OP_TYPES) -> list[onnx.NodeProto]:
    """Weighted nodes: Conv/MatMul/Gemm whose second input is a constant initializer."""
    init = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in op_types and not n.domain
            and len(n.input) > 1 and n.input[1] in init]


def _float_for_other_consumers(model: onnx.ModelProto, op_types) -> int:
    """Give every consumer of a Q/DQ'd activation that is not a quantized weighted node its float
    input back. onnxruntime rewires all consumers of a quantized tensor to the DequantizeLinear
    output, which would, for instance, quantize the image in the model's final ``x + y`` residual."""
    producers = tensor_producers(model.graph)
    rewired = 0
    for node in model.graph.node:
        quantized_weighted = (node.op_type in op_types and len(node.input) > 1 and node.input[1] in producers
                              and producers[node.input[1]].op_type == "DequantizeLinear")
        if quantized_weighted:
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in producers:
                continue
            q = producers[dq.input[0]]
            if q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
                rewired += 1
    return rewired


def _save_model(model: onnx.ModelProto, path: Path) -> None:
    """An ONNX written through the package's atomic writer (never a half-written file at ``path``)."""
    atomic_write(path, model.SerializeToString())


def _quantize(model: onnx.ModelProto, out_path: Path, calib: CalibrationSet, op_types, exclude,
              cache_path: Path, placement: str = DEFAULT_PLACEMENT) -> None:
    # An explicit node list: onnxruntime's QDQ MatMul ignores MatMulConstBOnly and would also
    # quantize the attention's activation-by-activation products.
    nodes = [n.name for n in quantizable_nodes(model, op_types) if n.name not in set(exclude)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a "consider pre-processing" warning on every call
    try:
        with tempfile.TemporaryDirectory(prefix="ast-int8-") as tmp:
            # A path, never the ModelProto: quantize_static saves a ModelProto it is given with external
            # data into a temporary folder, which rewrites that object's initializers as references to a
            # folder deleted on return (the next call then fails when the calibration cache is cold).
            src, dst = Path(tmp) / "model.onnx", Path(tmp) / "quantized.onnx"
            onnx.save(model, str(src))
            _quantize_static(src, dst, calib, nodes, exclude, op_types, cache_path, model, placement)
            quantized = onnx.load(str(dst))
    finally:
        root.setLevel(level)
    _float_for_other_consumers(quantized, op_types)
    _save_model(quantized, out_path)


def _quantize_static(model_path, out_path, calib, nodes, exclude, op_types, cache_path, model, placement) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if placement not in PLACEMENTS:
        raise ValueError(f"INT8 placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}")
    symmetric_activations = placement != "ort"
    options = dict(ActivationSymmetric=symmetric_activations, WeightSymmetric=True, QuantizeBias=False, MatMulConstBOnly=True,
                   DedicatedQDQPair=False, OpTypesToExcludeOutputQuantization=list(op_types))
    if placement == "tensorrt":
        per_tensor = {n.input[1]: [{"symmetric": True}] for n in quantizable_nodes(model, op_types)
                      if n.op_type in ("MatMul", "Gemm") and n.name in set(nodes)}
        options.update(AddQDQPairToWeight=True, QDQOpTypePerChannelSupportToAxis=dict(OUTPUT_CHANNEL_AXIS),
                       TensorQuantOverrides=per_tensor)
    else:
        options.update(QDQOpTypePerChannelSupportToAxis={"MatMul": 1, "Gemm": 0, **OUTPUT_CHANNEL_AXIS})
    activation_type = QuantType.QUInt8 if placement == "ort" else QuantType.QInt8
    quantize_static(
        str(model_path), str(out_path), _Reader(model.graph.input[0].name, calib),
        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types), per_channel=True,
        activation_type=activation_type, weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes, nodes_to_exclude=list(exclude), calibrate_method=CalibrationMethod.MinMax,
        calibration_cache_path=str(cache_path), extra_options=options,
    )


def local_sensitivity(model: onnx.ModelProto, calib: CalibrationSet, op_types=WEIGHTED_OP_TYPES,
                      placement: str = DEFAULT_PLACEMENT) -> list[dict]:
    """Quantization SNR (dB) each weighted node would see locally: symmetric per-tensor INT8 on its
    activation input (range from the calibration images) plus INT8 on its weight with the scales
    ``placement`` gives it (per output channel, or per tensor for MatMul under "tensorrt"). One FP32
    run; worst first. A proxy for quantizing one node at a time, which costs a quantization and a
    validation per node."""
    nodes = quantizable_nodes(model, op_types)
    init = {t.name: t for t in model.graph.initializer}
    wanted = list(dict.fromkeys(n.input[0] for n in nodes))
    probe = load_model(model)
    graph_inputs = {i.name for i in probe.graph.input}
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in graph_inputs)
    session = open_session(probe, optimize=False)
    names = [o.name for o in session.get_outputs()]
    acts: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    input_name = probe.graph.input[0].name
    for batch in calib.batches:
        values = dict(zip(names, session.run(names, {input_name: batch})))
        values[input_name] = batch
        for n in wanted:
            acts[n].append(values[n].ravel())
    rows = []
    for node in nodes:
        x = np.concatenate(acts[node.input[0]]).astype(np.float64)
        scale = max(np.abs(x).max(), 1e-12) / 127.0
        act_noise = np.mean((np.clip(np.round(x / scale), -128, 127) * scale - x) ** 2) / max(np.mean(x ** 2), 1e-30)
        w = numpy_helper.to_array(init[node.input[1]]).astype(np.float64)
        axis = OUTPUT_CHANNEL_AXIS.get(node.op_type, 0 if node.op_type == "Gemm" else w.ndim - 1)
        wmax = np.maximum(np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(axis=1), 1e-12)
        if placement == "tensorrt" and node.op_type not in OUTPUT_CHANNEL_AXIS:
            wmax = np.full_like(wmax, wmax.max())  # one scale for the whole MatMul/Gemm weight
        shape = [1] * w.ndim
        shape[axis] = -1
        ws = (wmax / 127.0).reshape(shape)
        w_noise = np.mean((np.clip(np.round(w / ws), -127, 127) * ws - w) ** 2) / max(np.mean(w ** 2), 1e-30)
        rows.append(dict(node=node.name, op_type=node.op_type,
                         snr_db=round(float(-10 * np.log10(act_noise + w_noise + 1e-30)), 2),
                         activation_snr_db=round(float(-10 * np.log10(act_noise + 1e-30)), 2),
                         weight_snr_db=round(float(-10 * np.log10(w_noise + 1e-30)), 2)))
    return sorted(rows, key=lambda r: r["snr_db"])


def quantize_int8(onnx_in, onnx_out, calib: CalibrationSet, *, validate=None, min_psnr: float = DEFAULT_MIN_PSNR,
                  op_types=WEIGHTED_OP_TYPES, nodes_to_exclude=(), max_excluded: int | None = None,
                  use_cache: bool = True, placement: str = DEFAULT_PLACEMENT) -> dict:
    """Quantize ``onnx_in`` to ``onnx_out`` and return a report.

    With ``validate`` (validation cases, see :mod:`.validate`) the result is checked against the
    FP32 model in onnxruntime; below ``min_psnr`` dB on the worst case, the most sensitive nodes
    are excluded (1, 2, 4, ... up to ``max_excluded``, default a quarter of the weighted nodes)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"INT8 placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}")
    if placement == "ort":
        op_types = tuple(t for t in op_types if t in ORT_OP_TYPES)
    model = load_model(onnx_in)
    candidates = quantizable_nodes(model, op_types)
    key = f"{model_hash(model)}-{calib.key}-{'-'.join(op_types)}-minmax" + ("" if placement == "ort" else "-sym")
    cache_path = cache_dir() / f"int8-{key}.json"
    if not use_cache and cache_path.exists():
        cache_path.unlink()
    out = Path(onnx_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    exclude = list(nodes_to_exclude)
    attempts = []
    reference = run(model, validate) if validate else None
    sensitivity = None
    limit = len(candidates) // 4 if max_excluded is None else max_excluded
    steps = iter([0] + [2 ** i for i in range(0, 16) if 2 ** i < limit] + [limit])
    auto: list[str] = []
    while True:
        _quantize(model, out, calib, op_types, exclude + auto, cache_path, placement)
        result = compare_models(model, str(out), validate, reference_outputs=reference) if validate else None
        attempts.append(dict(excluded=list(auto), min_psnr_vs_fp32=result and result["min_psnr_vs_fp32"]))
        if result is None or result["min_psnr_vs_fp32"] >= min_psnr:
            break
        if sensitivity is None:
            sensitivity = [r for r in local_sensitivity(model, calib, op_types, placement) if r["node"] not in exclude]
        k = next(steps, None)
        while k is not None and k <= len(auto):
            k = next(steps, None)
        if k is None or k > len(sensitivity):
            break
        auto = [r["node"] for r in sensitivity[:k]]
    report = _report(out, placement, op_types, candidates, calib, cache_path, nodes_to_exclude, auto,
                     sensitivity, min_psnr, attempts)
    if validate:
        report["validation"] = result
        report["budget_met"] = result["min_psnr_vs_fp32"] >= min_psnr
    return report


def _report(out: Path, placement, op_types, candidates, calib, cache_path, nodes_to_exclude, auto, sensitivity,
            min_psnr, attempts) -> dict:
    """What quantize_int8 did: the scheme, the Q/DQ counts of the checked output, the exclusions."""
    quantized = onnx.load(str(out))
    onnx.checker.check_model(quantized)
    q_nodes = {n.op_type: 0 for n in quantized.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    for n in quantized.graph.node:
        if n.op_type in q_nodes:
            q_nodes[n.op_type] += 1
    return dict(
        output=str(out), placement=placement,
        scheme=SCHEMES[placement],
        op_types=list(op_types), weighted_nodes=len(candidates),
        quantized_nodes=len(_quantized_consumers(quantized, op_types)),
        qdq_nodes=q_nodes, calibration=dict(folder=str(calib.folder), images=len(calib), key=calib.key,
                                            cache=str(cache_path)),
        excluded_by_request=list(nodes_to_exclude), excluded_for_accuracy=auto,
        excluded_sensitivity=[r for r in (sensitivity or []) if r["node"] in auto],
        min_psnr_budget=min_psnr, attempts=attempts,
    )


def _quantized_consumers(model: onnx.ModelProto, op_types) -> list[str]:
    """Weighted nodes whose weight arrives through a DequantizeLinear."""
    producers = tensor_producers(model.graph)
    return [n.name for n in model.graph.node if n.op_type in op_types and len(n.input) > 1
            and n.input[1] in producers and producers[n.input[1]].op_type == "DequantizeLinear"]
