"""FRFN run channels-first (``backends.channels_first``), the graph rewrite the OpenVINO backend makes in
memory: every FRFN of an ``ast-export`` graph is rewritten, the rewritten graph computes what the
exported one does (ONNX Runtime on both), INT8 Q/DQ blocks keep their quantization, a block with
another reader is left alone, and OpenVINO runs the demo model's FP32, FP16 and INT8 exports through
it within their tolerances.

Subject: the demo model's exports as ``ast-export`` makes them (conftest's shared ``demo_onnx``,
``fp16`` and ``int8``); references: ONNX Runtime on the file as exported and PyTorch."""

import functools
import hashlib

import numpy as np
import onnx
import onnx.inliner
import pytest

from ast_deploy.checks.synthetic import synthetic_image
from ast_deploy.checks.tolerances import DEFAULT_TOLERANCES
from ast_deploy.backends.channels_first import frfn_channels_first

ort = pytest.importorskip("onnxruntime")


def psnr(a, b):  # written out here, independently of ast_deploy.checks
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@functools.cache
def frfn_blocks() -> int:
    """How many FRFN modules the demo model has (from PyTorch, not from the graph)."""
    from ast_deploy.demo import build_demo_model
    from ast_deploy.model.ast import FRFN

    return sum(isinstance(m, FRFN) for m in build_demo_model().modules())


def run_ort(model_or_path, x, optimize=True):
    """ONNX Runtime's output; ``optimize=False``: each node as written (no fusions: ONNX Runtime fuses
    DQ -> MatMul and DQ -> Conv into different integer kernels, which round differently)."""
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def batch():
    return np.stack([synthetic_image(128, 256, seed) for seed in (3, 4)])  # batch 2, not square


def ops(model, op_type):
    return [n for n in model.graph.node if n.op_type == op_type]


def test_every_frfn_is_rewritten_and_computes_the_same(demo_onnx, batch):
    model = onnx.inliner.inline_local_functions(onnx.load(str(demo_onnx)))
    matmuls, transposes = len(ops(model, "MatMul")), len(ops(model, "Transpose"))
    rewritten = frfn_channels_first(model)
    assert rewritten == frfn_blocks() > 0
    onnx.checker.check_model(model, full_check=True)
    pointwise = [n for n in ops(model, "Conv")
                 if [a.ints for a in n.attribute if a.name == "kernel_shape"] == [[1, 1]]]
    assert len(pointwise) == 3 * rewritten  # the three linear layers of each block
    assert len(ops(model, "MatMul")) == matmuls - 3 * rewritten
    # out: the two around the dw conv and the two around the partial conv's Conv; in: one at each end
    assert len(ops(model, "Transpose")) == transposes - 2 * rewritten
    exported = run_ort(demo_onnx, batch)
    assert np.max(np.abs(run_ort(model, batch) - exported)) <= 1e-5 * np.max(np.abs(exported))


def test_int8_qdq_blocks_keep_their_quantization(int8, demo_onnx, batch):
    """The Q/DQ pairs come along (per tensor: the input's after the new Transpose, each weight's on
    the transposed weight), so node by node the graph computes the same numbers."""
    path, _report = int8
    model = onnx.inliner.inline_local_functions(onnx.load(str(path)))
    quantizers = len(ops(model, "QuantizeLinear"))
    assert frfn_channels_first(model) == frfn_blocks()
    onnx.checker.check_model(model, full_check=True)
    assert len(ops(model, "QuantizeLinear")) == quantizers  # each pair moved or copied, none lost or added
    pointwise = [n for n in ops(model, "Conv")
                 if [a.ints for a in n.attribute if a.name == "kernel_shape"] == [[1, 1]]]
    assert len(pointwise) == 3 * frfn_blocks()
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    assert all(producer[n.input[1]] == "DequantizeLinear" for n in pointwise)  # integer weights still
    as_exported = run_ort(path, batch, optimize=False)
    assert np.max(np.abs(run_ort(model, batch, optimize=False) - as_exported)) <= 1e-5 * np.max(np.abs(as_exported))
    assert psnr(run_ort(model, batch), run_ort(demo_onnx, batch)) >= DEFAULT_TOLERANCES["int8"].psnr_min


def test_a_block_with_another_reader_is_left_alone(demo_onnx, batch):
    model = onnx.inliner.inline_local_functions(onnx.load(str(demo_onnx)))
    # read one block's gated half (channels-last) from outside: that block must not change layout
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    gated = next(n for n in ops(model, "Mul") if sorted(producer.get(i, "") for i in n.input) == ["Gelu", "Transpose"])
    side = next(i for i in gated.input if producer[i] == "Gelu")
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(side))
    before = run_ort(model, batch)
    assert frfn_channels_first(model) == frfn_blocks() - 1
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    restored = session.run(None, {session.get_inputs()[0].name: batch})[0]
    assert np.max(np.abs(restored - before)) <= 1e-5 * np.max(np.abs(before))


@pytest.fixture()
def runner_class(tmp_path, monkeypatch):
    """``Runner``, with OpenVINO installed and a private cache."""
    pytest.importorskip("openvino")
    from ast_deploy import Runner

    monkeypatch.setenv("AST_DEPLOY_CACHE", str(tmp_path / "cache"))
    return Runner


def test_openvino_runs_the_rewritten_fp32_graph_at_the_fp32_tolerance(demo_onnx, batch, runner_class):
    from ast_deploy.backends.options import OpenVINOOptions

    before = hashlib.sha256(demo_onnx.read_bytes()).hexdigest()
    runner = runner_class(demo_onnx, runtime=OpenVINOOptions(threads=2), max_memory="unlimited")
    assert runner.backend.inference_precision == "f32"
    assert runner.backend.channels_first_ffn == frfn_blocks()
    out = runner(batch)
    as_exported = runner_class(demo_onnx, runtime=OpenVINOOptions(threads=2, channels_first_ffn=False),
                               max_memory="unlimited")
    assert as_exported.backend.channels_first_ffn == 0
    fp32_min = DEFAULT_TOLERANCES["fp32"].psnr_min
    assert psnr(out, run_ort(demo_onnx, batch)) >= fp32_min
    assert psnr(out, as_exported(batch)) >= fp32_min
    assert hashlib.sha256(demo_onnx.read_bytes()).hexdigest() == before  # rewritten in memory only


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_openvino_runs_the_rewritten_fp16_and_int8_graphs_within_their_tolerance(precision, request, demo_onnx,
                                                                                 batch, runner_class):
    path, _report = request.getfixturevalue(precision)  # conftest's fp16 / int8 exports of the demo model
    runner = runner_class(path, runtime="openvino", max_memory="unlimited")
    assert runner.backend.precision == precision and runner.backend.channels_first_ffn == frfn_blocks()
    assert psnr(runner(batch), run_ort(demo_onnx, batch)) >= DEFAULT_TOLERANCES[precision].psnr_min
    if precision == "int8":  # the rewritten linears run as convolutions on integers
        executed = runner.backend.compiled.get_runtime_model().get_ops()
        integer = {op.get_friendly_name().split("/")[0] for op in executed  # OpenVINO appends /WithoutBiases
                   if op.get_rt_info()["layerType"].astype(str) == "Convolution"
                   and op.get_rt_info()["runtimePrecision"].astype(str) in ("i8", "u8")}
        assert len({name for name in integer if name.endswith("_1x1")}) == 3 * frfn_blocks()
