"""Real TensorRT-RTX engines built here, on a machine without a GPU, from the project's own exports.

NVIDIA's TensorRT-RTX (``rtx_wheels.py``: installed, or downloaded from PyPI into a cache; skipped
when neither works) parses the demo model's FP32, FP16 and INT8 ONNX (``ast-export --task derain``'s
graphs, shared with test_precision.py through conftest) and builds them ahead of time for named
compute capabilities, once per session at a small profile. The tests check the engines' records and
their per-layer report against the ONNX: the precision each layer runs in comes from the builder
itself. Deserializing, running and refitting an engine need a GPU (``gpu`` marks).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import rtx_wheels

pytest.importorskip("skimage")  # the demo's calibration and held-out images (conftest's fp16 / int8)

from ast_deploy.engines import build_engine  # noqa: E402
from ast_deploy.engines.cache import read_sidecar  # noqa: E402
from ast_deploy.engines.layers import MATRIX_TYPES, graph_node  # noqa: E402
from ast_deploy.engines.plugins import PluginError  # noqa: E402
from ast_deploy.engines.runtimes import parse_compute_capabilities  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL = "1x3x64x64:1x3x128x128:1x3x128x128"  # the demo model's size multiple is 64
FAST = dict(target="rtx", shapes=SMALL, opt_level=0)  # level 0: no slower to build, no worse to check
CAPABILITIES = {"fp32": "86,89,120", "fp16": "89", "int8": "89"}


@pytest.fixture(scope="session")
def rtx():
    try:
        return rtx_wheels.load()
    except rtx_wheels.Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def fp16_with_report(fp16):
    """The FP16 graph with its ``.precision.json`` beside it, as ``ast-export --fp16`` leaves them."""
    path, report = fp16
    from ast_deploy.checks.report import json_safe

    path.with_suffix(".precision.json").write_text(json.dumps(json_safe(report)))
    return path, report


@pytest.fixture(scope="session")
def engines(rtx, demo_onnx, fp16_with_report, int8):
    """The three demo engines, built once per session: {"fp32": (onnx, plan), ...}."""
    sources = {"fp32": demo_onnx, "fp16": fp16_with_report[0], "int8": int8[0]}
    return {name: (path, build_engine(path, compute_capabilities=CAPABILITIES[name], **FAST))
            for name, path in sources.items()}


def layers_of(plan):
    return read_sidecar(plan)["layers"]


def matrix_layers(layers):
    return [layer for layer in layers if layer["type"].lower() in MATRIX_TYPES]


# ---------------------------------------------------------------- building, caching, recording


def test_rtx_engines_are_built_cached_and_recorded(rtx, engines):
    for name, (onnx_path, plan) in engines.items():
        sidecar = read_sidecar(plan)
        assert plan.is_file() and plan.stat().st_size > 1_000_000, name
        assert ".rtx." in plan.name and sidecar["cache_key"] in plan.name
        assert sidecar["runtime"] == "TensorRT-RTX" and sidecar["tensorrt"] == rtx.__version__
        assert sidecar["compute_capabilities"] == [f"{c // 10}.{c % 10}" for c in
                                                   parse_compute_capabilities(CAPABILITIES[name])]
        assert sidecar["profile"] == {"min": [1, 3, 64, 64], "opt": [1, 3, 128, 128], "max": [1, 3, 128, 128]}
        assert sidecar["options"]["opt_level"] == 0 and sidecar["plugins"]["used"] is False
    onnx_path, plan = engines["fp32"]
    mtime = plan.stat().st_mtime_ns
    assert build_engine(onnx_path, compute_capabilities="120,86,89", **FAST) == plan  # same set: a cache hit
    assert plan.stat().st_mtime_ns == mtime
    from ast_deploy.engines.cache import cache_key
    from ast_deploy.engines.target import Target

    s = read_sidecar(plan)  # the key follows the runtime, its version and the GPU set

    def key(**changes):
        fields = {"tensorrt": s["tensorrt"], "gpu": s["gpu"], "compute_capability": s["compute_capability"],
                  "runtime": s["runtime"]}
        return cache_key(s["onnx"]["sha256"], Target(**(fields | changes)), s["options"])

    assert key() == s["cache_key"]
    assert len({key(), key(compute_capability="8.9"), key(runtime="TensorRT"), key(tensorrt="1.6.1.120")}) == 4


def test_rtx_and_tensorrt_engines_never_share_a_name(engines):
    from ast_deploy.engines.cache import default_engine_path
    from ast_deploy.engines.runtimes import FILE_TAGS

    onnx_path, plan = engines["fp32"]
    key = read_sidecar(plan)["cache_key"]
    assert default_engine_path(onnx_path, key, FILE_TAGS["tensorrt"]) != plan
    assert default_engine_path(onnx_path, key, FILE_TAGS["rtx"]) == plan


# ---------------------------------------------------------------- the per-layer report


def test_fp32_engine_runs_fp32(engines):
    record = layers_of(engines["fp32"][1])
    matrices = matrix_layers(record["layers"])
    assert len(matrices) >= 50 and {layer["precision"] for layer in matrices} == {"FP32"}
    assert set(record["summary"]) <= {"FP32", "-"} and record["checks"]["mismatches"] == []


def test_fp16_engine_runs_matmuls_and_convs_fp16_and_keeps_the_fp32_islands(engines, fp16_with_report):
    record = layers_of(engines["fp16"][1])
    layers = record["layers"]
    matrices = matrix_layers(layers)
    assert len(matrices) >= 50 and {layer["precision"] for layer in matrices} == {"FP16"}
    kept = [entry["name"] for entry in fp16_with_report[1]["kept_fp32"]]
    assert kept, "the demo's --fp16 keeps its LayerNorms in FP32"
    for name in kept:
        holding = [layer for layer in layers if name in {graph_node(n) for n in layer["onnx"]}]
        assert holding, f"{name} is in no engine layer"
        assert all("FP32" in layer["precision"].split("+") for layer in holding), (name, holding)
    assert record["checks"] == {"onnx_precision": "fp16", "mismatches": []}


def test_int8_engine_fuses_qdq_into_int8_matmuls_and_convs_or_says_which_did_not(engines):
    onnx_path, plan = engines["int8"]
    record = layers_of(plan)
    model = onnx.load(str(onnx_path), load_external_data=False)
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized = {n.name: n.op_type for n in model.graph.node
                 if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and dequantized & set(n.input)}
    int8_nodes = {graph_node(n) for layer in record["layers"] if layer["precision"] == "INT8" for n in layer["onnx"]}
    assert len(quantized) >= 80 and len(int8_nodes & set(quantized)) >= 80
    reported = {problem.split(" ", 1)[0] for problem in record["checks"]["mismatches"]}
    assert set(quantized) - int8_nodes == reported  # every quantized node not in an INT8 layer is named
    # TensorRT-RTX 1.7 keeps ConvTranspose (the decoder's upsampling) in FP32: its Q/DQ do not fuse
    assert {quantized[name] for name in reported} <= {"ConvTranspose"}


def test_ast_build_rtx_prints_the_layer_table_and_warns_per_node(engines, capsys):
    from ast_deploy.cli.build import main

    onnx_path, plan = engines["int8"]
    assert main([str(onnx_path), "--target", "rtx", "--compute-capability", "89", "--shapes", SMALL,
                 "--opt-level", "0"]) == 0  # a cache hit: the session's engine
    out, err = capsys.readouterr()
    assert out.strip() == str(plan)
    assert "precision" in err and "INT8" in err and "gemm" in err
    warnings = [line for line in err.splitlines() if line.startswith("ast-build: warning:")]
    assert warnings and all("did not fuse" in line for line in warnings)
    assert len(warnings) == len(layers_of(plan)["checks"]["mismatches"])


# ---------------------------------------------------------------- parser, plugins, options


def _parse_warnings(rtx, onnx_path, inline):
    from ast_deploy.engines.parser_input import parser_input

    messages = []

    class Logger(rtx.ILogger):
        def __init__(self):
            rtx.ILogger.__init__(self)

        def log(self, severity, msg):
            if severity == rtx.ILogger.WARNING:
                messages.append(msg)

    logger = Logger()
    network = rtx.Builder(logger).create_network(0)
    parser = rtx.OnnxParser(network, logger)
    assert parser.parse(parser_input(onnx_path, inline), str(onnx_path))
    return messages, network


def test_parser_sees_unique_node_names_in_the_inlined_functions(rtx, demo_onnx):
    # inlined first: TensorRT logs a message only once per process, so the raw file's warnings would
    # hide the same ones here
    inlined, network = _parse_warnings(rtx, demo_onnx, inline=True)
    assert not [m for m in inlined if "already exists" in m]
    raw, _ = _parse_warnings(rtx, demo_onnx, inline=False)
    assert any("already exists" in m for m in raw)  # the exported file's shared function bodies
    names = [network.get_layer(i).name for i in range(network.num_layers)]
    assert any(n.startswith("node__symbolic_15/ast_pconv_Conv") for n in names)  # call site / body node


def test_ast_plugins_cannot_register_with_tensorrt_rtx(rtx, demo_onnx):
    """The real library's answer (see ast_deploy/engines/rtx_plugins.py): it finds and creates the
    plugin, then aborts the process before calling any shape, type or format function."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), rtx_wheels.pythonpath()) if p))
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "rtx_plugin_probe.py"), str(demo_onnx)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE")]
    assert "PROBE registered PartialConv True" in lines and "PROBE network_has_add_plugin_v3 False" in lines
    assert any("Successfully created plugin: PartialConv" in line for line in lines)
    assert proc.returncode != 0 and "terminate called" in proc.stderr
    assert not [line for line in lines if line.split()[1] in ("shapes", "types", "formats", "parsed", "built")]
    with pytest.raises(PluginError, match="--plugins on: TensorRT-RTX has no plugin layers"):
        build_engine(demo_onnx, plugins="on", compute_capabilities="89", **FAST)


def test_rtx_needs_named_gpus_without_one_and_refuses_tensorrt_only_options(rtx, demo_onnx):
    from ast_deploy.engines.target import describe_gpu

    if describe_gpu(0)[0] == "unknown":
        with pytest.raises(ValueError, match="name the GPUs with --compute-capability"):
            build_engine(demo_onnx, **FAST)
    with pytest.raises(ValueError, match="cannot build for compute capability 70"):
        build_engine(demo_onnx, compute_capabilities="70,89", **FAST)
    with pytest.raises(ValueError, match="--dla-core is for --target tensorrt"):
        build_engine(demo_onnx, compute_capabilities="89", dla_core=0, **FAST)
    with pytest.raises(ValueError, match="--compute-capability is for --target rtx"):
        build_engine(demo_onnx, compute_capabilities="89", shapes=SMALL)


def test_weight_stripped_rtx_engine_needs_a_gpu_to_build(rtx, tmp_path):
    """TensorRT-RTX 1.7.1 builds refittable engines only with a GPU: the builder's own error, named."""
    from ast_deploy.engines.rtx_builder import BuildFailed
    from ast_deploy.engines.target import describe_gpu

    if describe_gpu(0)[0] != "unknown":
        pytest.skip("a GPU is present: the stripped build is checked by test_rtx_strip_weights_on_gpu")
    model = _conv_onnx(tmp_path / "conv.onnx")
    assert build_engine(model, compute_capabilities="89", **(FAST | {"shapes": "1x3x64x64"})).is_file()
    with pytest.raises(BuildFailed, match="refittable engines only with a GPU.*CUDA_SUCCESS"):
        build_engine(model, compute_capabilities="89", strip_weights=True, **(FAST | {"shapes": "1x3x64x64"}))


def _conv_onnx(path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 3, "h", "w"])
    y = helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["b", 3, "h", "w"])
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 3, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["image", "w"], ["restored"], pads=[1, 1, 1, 1])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [weight]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="ast.size_multiple", value="64")
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("text,values", [("86,89,120", (86, 89, 120)), ("8.9", (89,)), ("sm_120, 86", (86, 120)),
                                         ("89,89", (89,))])
def test_compute_capability_lists(text, values):
    assert parse_compute_capabilities(text) == values


@pytest.mark.parametrize("text", ["", "ampere", "8.x"])
def test_bad_compute_capability_lists(text):
    with pytest.raises(ValueError, match="compute.capabilit"):
        parse_compute_capabilities(text)


# ---------------------------------------------------------------- AST-B (slow) and the GPU side


@pytest.fixture(scope="session")
def ast_b_onnx(tmp_path_factory):
    import torch

    from ast_deploy.export import export_onnx
    from ast_deploy.model import AST, AST_B

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ast_b") / "ast_b.onnx"
    export_onnx(AST(**AST_B).eval(), path)  # random weights: the build does not depend on them
    return path


@pytest.mark.slow
def test_ast_b_fp32_and_fp16_engines_build_and_report(rtx, ast_b_onnx, calib):
    from ast_deploy.precision.fp16 import convert_fp16

    fp16_path = ast_b_onnx.with_name("ast_b.fp16.onnx")
    report = convert_fp16(ast_b_onnx, fp16_path, calib)
    fp16_path.with_suffix(".precision.json").write_text(json.dumps({"kept_fp32": report["kept_fp32"]}))
    shapes = "1x3x128x128:1x3x256x256:1x3x256x256"
    for path, precision in ((ast_b_onnx, "FP32"), (fp16_path, "FP16")):
        plan = build_engine(path, target="rtx", compute_capabilities="89", shapes=shapes)
        record = layers_of(plan)
        assert {layer["precision"] for layer in matrix_layers(record["layers"])} == {precision}
        assert record["checks"]["mismatches"] == []


@pytest.mark.gpu
def test_rtx_strip_weights_on_gpu(rtx, tmp_path):
    """On an RTX GPU: the stripped engine is smaller than the full one."""
    model = _conv_onnx(tmp_path / "conv.onnx")
    full = build_engine(model, target="rtx", shapes="1x3x64x64")
    stripped = build_engine(model, target="rtx", shapes="1x3x64x64", strip_weights=True)
    assert stripped != full and stripped.stat().st_size < full.stat().st_size


@pytest.mark.gpu
def test_runner_refits_a_weight_stripped_engine(rtx, tmp_path):
    """On an RTX GPU: a stripped engine refuses to run without its weights, and computes the ONNX's
    function once refitted from it (ONNX Runtime as the reference)."""
    import numpy as np
    import onnxruntime as ort

    from ast_deploy.backends.base import BackendError
    from ast_deploy.backends.options import TensorRTOptions
    from ast_deploy.backends.tensorrt import TensorRTBackend

    model = _conv_onnx(tmp_path / "conv.onnx")
    stripped = build_engine(model, target="rtx", shapes="1x3x64x64", strip_weights=True)
    with pytest.raises(BackendError, match="without its weights"):
        TensorRTBackend(stripped)
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with TensorRTBackend(stripped, options=TensorRTOptions(refit_from=model)) as backend:
        assert np.abs(backend.infer(x) - expected).max() < 1e-3
