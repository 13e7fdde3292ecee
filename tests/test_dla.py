"""DLA builds (``ast-build --dla-core N [--gpu-fallback]``): the TensorRT / JetPack gate and its
message, the ONNX precision check, and the builder configuration Polygraphy's PostprocessConfig hands
to TensorRT (real Polygraphy loaders; a small stand-in for ``tensorrt`` and the builder objects,
since TensorRT cannot be installed here). A real DLA build needs a Jetson Orin."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ast_deploy.engines import build as build_mod
from ast_deploy.engines import dla
from ast_deploy.engines.build import build_engine, make_loader_chain
from ast_deploy.engines.cache import read_sidecar
from ast_deploy.engines.dla import DLAError, DLAOptions, Platform
from ast_deploy.shapes import ShapeProfile
from ast_deploy.engines.target import Target

AGX = "NVIDIA Jetson AGX Orin Developer Kit"
NX = "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"


# ---------------------------------------------------------------- stand-ins for TensorRT's objects

class Enum:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<{self.name}>"


def fake_trt(version="10.3.0.30"):
    return types.SimpleNamespace(
        __version__=version,
        DeviceType=types.SimpleNamespace(GPU=Enum("GPU"), DLA=Enum("DLA")),
        BuilderFlag=types.SimpleNamespace(GPU_FALLBACK=Enum("GPU_FALLBACK")),
        ProfilingVerbosity=types.SimpleNamespace(DETAILED=Enum("DETAILED")),
        HardwareCompatibilityLevel=types.SimpleNamespace(AMPERE_PLUS="ampere+"),
    )


class Layer:
    def __init__(self, name, kind):
        self.name, self.type = name, Enum(kind)


class Network:
    def __init__(self, layers):
        self.layers = layers

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, i):
        return self.layers[i]


class BuilderConfig:
    """The IBuilderConfig members DLA uses; ``can_run_on_DLA`` says yes to convolutions and
    element-wise layers, as TensorRT's DLA support list does for FP16."""
    DLA_OK = {"CONVOLUTION", "ELEMENTWISE", "ACTIVATION", "POOLING", "SCALE"}

    def __init__(self):
        self.flags, self.devices = set(), {}
        self.default_device_type, self.DLA_core, self.profiling_verbosity = None, -1, None

    def set_flag(self, flag):
        self.flags.add(flag.name)

    def can_run_on_DLA(self, layer):
        return layer.type.name in self.DLA_OK

    def set_device_type(self, layer, device):
        self.devices[layer.name] = device.name


AST_LAYERS = [("conv_in", "CONVOLUTION"), ("act", "ACTIVATION"), ("ln", "NORMALIZATION"), ("qkv", "MATRIX_MULTIPLY"),
              ("attn", "SOFTMAX"), ("assa", "PLUGIN_V3"), ("add", "ELEMENTWISE"), ("conv_out", "CONVOLUTION")]


def ast_network():
    return Network([Layer(n, k) for n, k in AST_LAYERS])


# ---------------------------------------------------------------- the version gate

@pytest.mark.parametrize("version,platform", [
    ("10.3.0.30", Platform(model=NX, jetpack="6.2+b77")),        # JetPack 6: TensorRT 10.3
    ("10.7.0", Platform(model=AGX, jetpack="6.2")),
    ("11.4.1.5", Platform(model=AGX, jetpack="7.2.2")),
    ("11.6.0", Platform(model=AGX, jetpack="7.3.0-b10")),
])
def test_dla_supported(version, platform):
    dla.check_dla_support(version, platform)


@pytest.mark.parametrize("version,platform,why", [
    ("10.8.0.43", Platform(model=AGX, jetpack="6.2"), "no DLA"),
    ("11.1.0", Platform(model=AGX, jetpack="7.1"), "no DLA"),
    ("11.4.0.106", Platform(model=AGX, jetpack="7.2.2"), "no DLA"),
    ("11.4.1", Platform(model=AGX, jetpack="7.2.1"), "only on Jetson AGX Orin with JetPack 7.2.2"),
    ("11.4.1", Platform(model=NX, jetpack="7.2.2"), "only on Jetson AGX Orin with JetPack 7.2.2"),
    ("11.4.1", Platform(model="NVIDIA Jetson AGX Thor Developer Kit", jetpack="7.2.2"), "only on Jetson AGX Orin"),
    ("10.3.0", Platform(), "needs a Jetson"),
])
def test_dla_refused_with_the_reason(version, platform, why):
    with pytest.raises(DLAError, match=why) as e:
        dla.check_dla_support(version, platform)
    assert "up to 10.7" in str(e.value) and "11.4.1 on Jetson AGX Orin with JetPack 7.2.2" in str(e.value)


def test_this_machine_is_not_a_jetson():
    platform = dla.detect_platform()
    if Path("/etc/nv_tegra_release").exists():
        pytest.skip("this is a Jetson")
    assert not platform.is_jetson
    with pytest.raises(DLAError, match="needs a Jetson"):
        dla.check_dla_support("10.3.0", platform)


# ---------------------------------------------------------------- the ONNX's precision

def conv_onnx(path, precision):
    dtype = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16}.get(precision, TensorProto.FLOAT)
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float16 if precision == "fp16" else np.float32), "w")
    nodes, inp = [], "x"
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16))
        inp = "x16"
    if precision == "int8":
        scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
        zero = numpy_helper.from_array(np.array(0, np.int8), "z")
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"])]
        inp = "xd"
    nodes.append(helper.make_node("Conv", [inp, "w"], ["y"], pads=[1, 1, 1, 1]))
    inits = [w] + ([scale, zero] if precision == "int8" else [])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", dtype, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"ast.size_multiple": "8"})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_onnx_precision(tmp_path, precision):
    assert dla.onnx_precision(conv_onnx(tmp_path / "m.onnx", precision)) == precision


def test_fp32_onnx_refused_for_dla(tmp_path):
    model = conv_onnx(tmp_path / "m.onnx", "fp32")
    agx = Platform(model=AGX, jetpack="6.2")
    with pytest.raises(DLAError, match="FP16 and INT8 only.*ast-export --fp16 or --int8"):
        dla.prepare(fake_trt(), model, 0, platform=agx)
    assert dla.prepare(fake_trt(), conv_onnx(tmp_path / "h.onnx", "fp16"), 1, True, agx).to_dict() == \
        {"core": 1, "gpu_fallback": True}
    assert dla.prepare(fake_trt(), model, None) is None
    with pytest.raises(DLAError, match="--gpu-fallback goes with --dla-core"):
        dla.prepare(fake_trt(), model, None, gpu_fallback=True)
    with pytest.raises(DLAError, match="0 or more"):
        dla.prepare(fake_trt(), model, -1, platform=agx)


def test_dla_needs_a_static_profile(tmp_path):
    model = conv_onnx(tmp_path / "h.onnx", "fp16")
    agx = Platform(model=AGX, jetpack="6.2")
    dynamic = ShapeProfile.parse("1x3x128x128:1x3x512x512:1x3x512x512")
    with pytest.raises(DLAError, match="static shapes only.*--shapes 1x3x512x512:1x3x512x512:1x3x512x512"):
        dla.prepare(fake_trt(), model, 0, True, agx, profile=dynamic)
    static = ShapeProfile.parse("2x3x512x512:2x3x512x512:2x3x512x512")
    assert dla.prepare(fake_trt(), model, 0, True, agx, profile=static).core == 0
    with pytest.raises(DLAError, match="up to 8192"):
        dla.check_static_profile(ShapeProfile.parse("1x3x128x9216:1x3x128x9216:1x3x128x9216"))


# ---------------------------------------------------------------- the builder configuration

def test_postprocess_config_sets_dla_on_the_builder_config():
    """Polygraphy's real PostprocessConfig runs our callback on the config TensorRT would build with."""
    from polygraphy.backend import trt as poly_trt

    trt, options, config = fake_trt(), DLAOptions(core=1, gpu_fallback=True), BuilderConfig()
    builder = types.SimpleNamespace(num_DLA_cores=2)
    loader = dla.postprocess_config(poly_trt, config, trt, options)
    assert isinstance(loader, poly_trt.PostprocessConfig)
    assert loader(builder, ast_network()) is config
    assert config.default_device_type is trt.DeviceType.DLA and config.DLA_core == 1
    assert config.flags == {"GPU_FALLBACK"} and config.profiling_verbosity is trt.ProfilingVerbosity.DETAILED
    assert config.devices == {"ln": "GPU", "qkv": "GPU", "attn": "GPU", "assa": "GPU"}
    where = {p["layer"]: p["device"] for p in options.placement}
    assert where == {"conv_in": "DLA", "act": "DLA", "ln": "GPU", "qkv": "GPU", "attn": "GPU", "assa": "GPU",
                     "add": "DLA", "conv_out": "DLA"}
    record = dla.sidecar_record(options, None)
    assert record["planned"]["dla"] == 4 and record["planned"]["gpu"] == 4 and record["core"] == 1


def test_without_gpu_fallback_the_gpu_layers_are_refused():
    trt, config = fake_trt(), BuilderConfig()
    with pytest.raises(DLAError, match=r"without --gpu-fallback: 4 of 8 layers cannot run on DLA \(ln \(NORMALIZATION\)"):
        dla.configure(trt, DLAOptions(core=0), types.SimpleNamespace(num_DLA_cores=2), ast_network(), config)
    assert "GPU_FALLBACK" not in config.flags
    convs = Network([Layer("c", "CONVOLUTION"), Layer("a", "ELEMENTWISE")])
    options = DLAOptions(core=0)
    dla.configure(trt, options, types.SimpleNamespace(num_DLA_cores=1), convs, BuilderConfig())
    assert [p["device"] for p in options.placement] == ["DLA", "DLA"]


@pytest.mark.parametrize("cores,core,message", [(0, 0, "has 0 DLA core"), (2, 2, r"has 2 DLA core\(s\) \(0 to 1\)")])
def test_dla_core_must_exist(cores, core, message):
    with pytest.raises(DLAError, match=message):
        dla.configure(fake_trt(), DLAOptions(core=core, gpu_fallback=True), types.SimpleNamespace(num_DLA_cores=cores),
                      ast_network(), BuilderConfig())


def test_wrap_chain_keeps_the_network_config_and_timing_cache(tmp_path):
    from polygraphy.backend import trt as poly_trt

    profile = ShapeProfile.parse("1x3x128x128:1x3x256x256:1x3x256x256")
    chain = make_loader_chain(poly_trt, tmp_path / "m.onnx", "image", profile, timing_cache=tmp_path / "t.cache")
    assert dla.wrap_chain(poly_trt, fake_trt(), chain, None) is chain
    wrapped = dla.wrap_chain(poly_trt, fake_trt(), chain, DLAOptions(core=0, gpu_fallback=True))
    assert isinstance(wrapped, poly_trt.EngineBytesFromNetwork) and wrapped._network is chain._network
    assert isinstance(wrapped._config, poly_trt.PostprocessConfig) and wrapped._config._config is chain._config
    assert wrapped.timing_cache_path == str(tmp_path / "t.cache")
    config = BuilderConfig()
    wrapped._config._func(types.SimpleNamespace(num_DLA_cores=2), ast_network(), config)  # the callback itself
    assert config.DLA_core == 0 and "GPU_FALLBACK" in config.flags


def test_build_engine_records_dla_in_options_and_sidecar(tmp_path, monkeypatch):
    """build_engine with --dla-core: the DLA options reach the cache key and the chain; the sidecar
    records the planned placement (engine_layers is None: the stand-in engine cannot be inspected)."""
    trt = fake_trt("10.3.0.30")
    monkeypatch.setattr(build_mod, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(build_mod, "current_target", lambda trt, device=0: Target(trt.__version__, "Orin", "8.7"))
    monkeypatch.setattr(dla, "detect_platform", lambda: Platform(model=AGX, jetpack="6.2+b77"))

    class Chain:
        def __init__(self, wrapped=None):
            self.wrapped = wrapped

        def __call__(self):
            config = BuilderConfig()
            self.wrapped._config._func(types.SimpleNamespace(num_DLA_cores=2), ast_network(), config)
            return b"engine"

    monkeypatch.setattr(build_mod, "make_loader_chain", lambda *a, **kw: types.SimpleNamespace(
        _network="net", _config="cfg", timing_cache_path=None))
    made = []

    def wrap(poly, t, chain, options):
        made.append(options)
        if options is None:
            return lambda: b"plain-engine"
        return Chain(types.SimpleNamespace(_config=types.SimpleNamespace(
            _func=lambda b, n, c: dla.configure(t, options, b, n, c))))

    monkeypatch.setattr(dla, "wrap_chain", wrap)
    model = conv_onnx(tmp_path / "m.onnx", "fp16")
    plain = build_engine(model, shapes="1x3x8x8", plugins="off")
    assert made == [None] and "dla" not in read_sidecar(plain)
    out = build_engine(model, shapes="1x3x8x8", plugins="off", dla_core=1, gpu_fallback=True)
    assert out != plain  # DLA is part of the cache key
    sidecar = read_sidecar(out)
    assert sidecar["options"]["dla"] == {"core": 1, "gpu_fallback": True}
    assert sidecar["dla"]["planned"]["dla"] == 4 and sidecar["dla"]["engine_layers"] is None


def test_ast_build_cli_dla_flags(tmp_path, capsys):
    from ast_deploy.cli.build import main, parser
    from runtime_helpers import have_tensorrt

    if have_tensorrt():
        pytest.skip("TensorRT is importable here: the CLI would really build")

    args = parser().parse_args(["m.onnx", "--dla-core", "0", "--gpu-fallback"])
    assert args.dla_core == 0 and args.gpu_fallback is True
    assert parser().parse_args(["m.onnx"]).dla_core is None
    model = conv_onnx(tmp_path / "m.onnx", "fp16")
    assert main([str(model), "--shapes", "1x3x8x8", "--dla-core", "0"]) == 2  # no TensorRT here: a message
    err = capsys.readouterr().err
    assert err.startswith("ast-build: error:") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [model]
