import dataclasses
import hashlib
import json
import os
import sys
import types
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from ast_deploy.engines import build as build_mod
from ast_deploy.engines.build import build_engine, build_options, hardware_compat_level, make_loader_chain, resolve_profile
from ast_deploy.engines.cache import (atomic_write, cache_key, default_engine_path, is_cached, read_sidecar,
                                      sidecar_content, sidecar_path, write_engine)
from ast_deploy.engines.onnx_info import OnnxInfo, inspect_onnx
from ast_deploy.engines.plugins import PluginError, resolve_plugins
from ast_deploy.recipes import RecipeError, load_recipe
from ast_deploy.shapes import ProfileError, ShapeProfile
from ast_deploy.engines.target import Target, TensorRTNotInstalled
from runtime_helpers import have_tensorrt


def tiny_onnx(path: Path, dims=("batch", 3, "h", "w"), plugin_node=False, **metadata) -> Path:
    """A one-node ONNX with the AST interface: enough for everything but running real TensorRT."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("restored", TensorProto.FLOAT, list(dims))
    if plugin_node:
        node = helper.make_node("PartialConv", ["image"], ["restored"], domain="ast", plugin_namespace="ast")
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ast", 1)]
    else:
        node, opsets = helper.make_node("Identity", ["image"], ["restored"]), [helper.make_opsetid("", 17)]
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)
    for key, value in metadata.items():
        model.metadata_props.add(key=key.replace("_", ".", 1), value=str(value))
    onnx.save(model, str(path))
    return path


def info(dims=(None, 3, None, None), metadata=None, plugin_ops=()) -> OnnxInfo:
    return OnnxInfo(Path("m.onnx"), "0" * 64, "image", dims, metadata or {}, plugin_ops)


TARGET = Target("10.8.0.43", "NVIDIA A100-SXM4-40GB", "8.0")


# ---------------------------------------------------------------- profiles

def test_parse_profile():
    p = ShapeProfile.parse("1x3x128x128:1x3x512x512:4x3x1024x1024")
    assert (p.min, p.opt, p.max) == ((1, 3, 128, 128), (1, 3, 512, 512), (4, 3, 1024, 1024))
    assert str(p) == "1x3x128x128:1x3x512x512:4x3x1024x1024"
    assert p.shape_range == ((1, 128, 128), (4, 1024, 1024))
    assert ShapeProfile.parse("2x3x256x384") == ShapeProfile.static((2, 3, 256, 384))


@pytest.mark.parametrize("spec,message", [
    ("1x3x128x128:1x3x512x512", "MIN:OPT:MAX"),
    ("1x3x128:1x3x128x128:1x3x128x128", "BxCxHxW"),
    ("1x3x128x128:1x3xAx128:1x3x128x128", "BxCxHxW"),
    ("0x3x128x128", "positive"),
])
def test_parse_profile_rejects_bad_syntax(spec, message):
    with pytest.raises(ProfileError, match=message):
        ShapeProfile.parse(spec)


@pytest.mark.parametrize("spec,message", [
    ("1x3x128x128:1x3x500x512:4x3x1024x1024", r"opt shape 1x3x500x512: H must be multiples of 128"),
    ("1x3x128x100:1x3x512x512:4x3x1024x1024", r"min shape .*: W must be multiples of 128"),
    ("1x3x512x512:1x3x256x256:4x3x1024x1024", r"H must satisfy min <= opt <= max, got 512, 256, 1024"),
    ("4x3x128x128:1x3x128x128:4x3x128x128", r"B must satisfy min <= opt <= max"),
    ("1x1x128x128:1x1x128x128:1x1x128x128", "3 channels"),
])
def test_profile_validation(spec, message):
    with pytest.raises(ProfileError, match=message):
        ShapeProfile.parse(spec).validate(128)


def test_profile_must_keep_static_onnx_dims():
    profile = ShapeProfile.parse("1x3x128x128:1x3x256x256:2x3x256x256")
    profile.validate(128, (None, 3, None, None))
    with pytest.raises(ProfileError, match="fixed B = 1"):
        profile.validate(128, (1, 3, None, None))
    with pytest.raises(ProfileError, match="fixed H = 256"):
        profile.validate(128, (None, 3, 256, None))


def test_resolve_profile_order():
    recipe = dataclasses.replace(load_recipe("derain"), profile=ShapeProfile.parse("1x3x128x128:1x3x256x256:1x3x512x512"))
    flags = "1x3x256x256:1x3x256x256:2x3x256x256"
    assert str(resolve_profile(info(), flags, recipe)) == flags
    assert str(resolve_profile(info(), None, recipe)) == "1x3x128x128:1x3x256x256:1x3x512x512"
    assert resolve_profile(info((1, 3, 256, 384)), None, None) == ShapeProfile.static((1, 3, 256, 384))
    with pytest.raises(ProfileError, match=r"dynamic input \(image: \?x3x\?x\?\).*--shapes"):
        resolve_profile(info(), None, None)
    with pytest.raises(ProfileError, match="multiples of 256"):
        resolve_profile(info(metadata={"ast.size_multiple": "256"}), "1x3x128x128", None)


def test_inspect_onnx(tmp_path):
    plain = inspect_onnx(tiny_onnx(tmp_path / "a.onnx", ast_size_multiple=64, ast_task="derain"))
    assert (plain.input_name, plain.input_dims, plain.plugin_ops) == ("image", (None, 3, None, None), ())
    assert (plain.size_multiple, plain.task, plain.is_static) == (64, "derain", False)
    assert len(plain.sha256) == 64
    plugged = inspect_onnx(tiny_onnx(tmp_path / "b.onnx", dims=(1, 3, 128, 128), plugin_node=True))
    assert plugged.plugin_ops == ("PartialConv",) and plugged.is_static and plugged.size_multiple == 128
    with pytest.raises(FileNotFoundError):
        inspect_onnx(tmp_path / "missing.onnx")


# ---------------------------------------------------------------- cache key and sidecar

def test_cache_key_depends_on_everything_the_engine_depends_on():
    profile = ShapeProfile.parse("1x3x128x128:1x3x256x256:1x3x512x512")
    options = build_options(profile, "image", False, None, False)
    key = cache_key("a" * 64, TARGET, options)
    assert key == cache_key("a" * 64, TARGET, dict(options)) and len(key) == 16
    variants = [
        cache_key("b" * 64, TARGET, options),
        cache_key("a" * 64, Target("10.9.0.34", TARGET.gpu, TARGET.compute_capability), options),
        cache_key("a" * 64, Target(TARGET.tensorrt, "NVIDIA H100 80GB HBM3", "9.0"), options),
        cache_key("a" * 64, Target(TARGET.tensorrt, TARGET.gpu, "8.6"), options),
        cache_key("a" * 64, TARGET, build_options(ShapeProfile.parse("1x3x128x128"), "image", False, None, False)),
        cache_key("a" * 64, TARGET, build_options(profile, "image", True, None, False)),
        cache_key("a" * 64, TARGET, build_options(profile, "image", False, 5, False)),
        cache_key("a" * 64, TARGET, build_options(profile, "image", False, None, True)),
    ]
    assert len({key, *variants}) == len(variants) + 1
    assert default_engine_path("engines/derain/model.onnx", key) == Path(f"engines/derain/model.{key}.plan")


def test_sidecar_records_the_build(tmp_path):
    onnx_info = inspect_onnx(tiny_onnx(tmp_path / "m.onnx", ast_task="derain"))
    profile = ShapeProfile.parse("1x3x128x128:1x3x256x256:2x3x512x512")
    options = build_options(profile, "image", False, 3, False)
    plugins = {"requested": "auto", "used": False, "ops": [], "detail": "the ONNX has no AST plugin nodes"}
    content = sidecar_content(key="k" * 16, engine_path=tmp_path / "m.plan", onnx=onnx_info, target=TARGET,
                              profile=profile, options=options, plugins=plugins, build_seconds=12.3456, now=0)
    assert content["onnx"] == {"path": str((tmp_path / "m.onnx").resolve()), "sha256": onnx_info.sha256,
                               "task": "derain", "metadata": {"ast.task": "derain"}}
    assert (content["tensorrt"], content["gpu"], content["compute_capability"]) == ("10.8.0.43", TARGET.gpu, "8.0")
    assert content["profile"] == {"min": [1, 3, 128, 128], "opt": [1, 3, 256, 256], "max": [2, 3, 512, 512]}
    assert content["options"]["opt_level"] == 3 and content["options"]["strongly_typed"] is True
    assert content["plugins"] == plugins and content["build_seconds"] == 12.346
    assert content["built_at"].startswith("1970-01-01") and content["size_multiple"] == 128
    json.dumps(content)


def test_engine_and_sidecar_writes(tmp_path, monkeypatch):
    engine = tmp_path / "e.plan"
    write_engine(engine, b"old-engine", {"cache_key": "old"})
    assert engine.read_bytes() == b"old-engine" and is_cached(engine, "old") and not is_cached(engine, "new")
    assert read_sidecar(engine) == {"cache_key": "old", "engine_bytes": 10,
                                    "engine_sha256": hashlib.sha256(b"old-engine").hexdigest()}
    assert sidecar_path(engine).name == "e.plan.json"

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_engine(engine, b"new-engine", {"cache_key": "new"})
    monkeypatch.undo()
    # The old engine is intact, no temporary file is left, and the old sidecar is gone: no cache hit
    # for either key until a build completes.
    assert engine.read_bytes() == b"old-engine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.plan"]
    assert not is_cached(engine, "old") and not is_cached(engine, "new")
    atomic_write(tmp_path / "sub" / "f.txt", "text")
    assert (tmp_path / "sub" / "f.txt").read_text() == "text"


def test_a_corrupt_cached_engine_is_not_reused(tmp_path):
    """An engine damaged after it was cached (a flipped byte, a cut copy) is not a cache hit, so
    ast-build rebuilds it, and says why; a sidecar of an older release (no content record) still hits."""
    engine = tmp_path / "e.plan"
    write_engine(engine, b"engine-bytes" * 100, {"cache_key": "k"})
    assert is_cached(engine, "k")
    damaged = bytearray(engine.read_bytes())
    damaged[500] ^= 1
    engine.write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match="e.plan is corrupt.*rebuilding"):
        assert not is_cached(engine, "k")
    engine.write_bytes(b"engine-bytes" * 50)  # cut short
    with pytest.warns(UserWarning, match="corrupt"):
        assert not is_cached(engine, "k")
    sidecar_path(engine).write_text(json.dumps({"cache_key": "k"}))
    assert is_cached(engine, "k")


# ---------------------------------------------------------------- Polygraphy loader chain

def test_loader_chain_is_lazy_and_configured(tmp_path):
    """Constructing the chain must not import TensorRT (Polygraphy loaders import it when called)."""
    attempts = []

    class Recorder:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorrt", "tensorrt_rtx"):
                attempts.append(name)
            return None

    already = "tensorrt" in sys.modules
    sys.meta_path.insert(0, Recorder())
    try:
        from polygraphy.backend import trt as poly_trt

        profile = ShapeProfile.parse("1x3x128x128:1x3x256x256:2x3x512x512")
        cache = tmp_path / "timing.cache"
        chain = make_loader_chain(poly_trt, tmp_path / "m.onnx", "image", profile, opt_level=4,
                                  hardware_compatibility_level="AMPERE_PLUS", timing_cache=cache)
    finally:
        sys.meta_path.pop(0)
    if not already:
        assert attempts == []
    assert isinstance(chain, poly_trt.EngineBytesFromNetwork)
    network, config = chain._network, chain._config
    assert isinstance(network, poly_trt.NetworkFromOnnxPath)
    assert network.path == str(tmp_path / "m.onnx") and network.strongly_typed is True
    assert isinstance(config, poly_trt.CreateConfig)
    (p,) = config.profiles
    assert list(p.keys()) == ["image"]
    assert (tuple(p["image"].min), tuple(p["image"].opt), tuple(p["image"].max)) == (profile.min, profile.opt, profile.max)
    assert config.builder_optimization_level == 4 and config.hardware_compatibility_level == "AMPERE_PLUS"
    assert config.timing_cache_path == str(cache) and chain.timing_cache_path == str(cache)
    assert config.fp16 is False and config.int8 is False and config.tf32 is False  # precision is the ONNX's

    plain = make_loader_chain(poly_trt, "m.onnx", "image", profile)
    assert plain._config.timing_cache_path is None and plain.timing_cache_path is None
    assert plain._config.builder_optimization_level is None and plain._config.hardware_compatibility_level is None


def test_hardware_compat_level():
    trt = types.SimpleNamespace(HardwareCompatibilityLevel=types.SimpleNamespace(AMPERE_PLUS="ampere+", NONE="none"))
    assert hardware_compat_level(trt, True) == "ampere+"
    assert hardware_compat_level(trt, False) is None


# ---------------------------------------------------------------- plugins

READY = dict(prerequisites=lambda: (90, 85), already_registered=lambda: False)  # Triton + a PTX target here


def test_plugins_modes():
    ops = ["AdaptiveSparseAttention", "PartialConv"]
    assert resolve_plugins("off", ops, register=lambda: pytest.fail("off must not register"), **READY)["used"] is False
    assert resolve_plugins("auto", ops, register=lambda: True, **READY)["used"] is True
    fallback = resolve_plugins("auto", ops, register=lambda: False, **READY)
    assert fallback["used"] is False and "local functions" in fallback["detail"]
    assert resolve_plugins("on", ops, register=lambda: True, **READY) == {
        "requested": "on", "used": True, "ops": ops, "target": [90, 85],
        "detail": "registered: TensorRT uses the AST plugins"}
    with pytest.raises(PluginError, match="tensorrt.plugin with ahead-of-time plugins is unavailable.*--plugins auto or off"):
        resolve_plugins("on", ops, register=lambda: False, **READY)

    def missing():
        raise ImportError("No module named 'ast_deploy.engines.trt_plugins'")

    assert resolve_plugins("auto", ops, register=missing, **READY)["used"] is False
    with pytest.raises(PluginError, match="cannot be imported"):
        resolve_plugins("on", ops, register=missing, **READY)
    with pytest.raises(PluginError, match="no AST plugin nodes"):
        resolve_plugins("on", [], register=lambda: True, **READY)
    assert resolve_plugins("auto", [], register=lambda: pytest.fail("nothing to register"), **READY)["used"] is False
    with pytest.raises(ValueError, match="auto, on, off"):
        resolve_plugins("yes", ops)


def test_plugins_auto_checks_triton_and_a_ptx_target_before_registering(monkeypatch):
    """Issue 12, point 3: TensorRT without the kernels extra falls back instead of failing in the builder."""
    from ast_deploy.engines import trt_plugins

    ops = ["PartialConv"]
    never = lambda: pytest.fail("must not register without Triton")  # noqa: E731
    monkeypatch.setitem(sys.modules, "triton", None)  # find_spec("triton") -> ValueError; absent for import
    monkeypatch.setattr(trt_plugins.importlib.util, "find_spec", lambda name: None)
    record = resolve_plugins("auto", ops, register=never, already_registered=lambda: False)
    assert record["used"] is False and "Triton is not installed" in record["detail"]
    assert "local functions" in record["detail"] and "\n" not in record["detail"]
    with pytest.raises(PluginError, match="Triton is not installed.*--plugins auto or off"):
        resolve_plugins("on", ops, register=never, already_registered=lambda: False)


def test_plugins_auto_without_a_ptx_target_falls_back(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("AST_PTX_ARCH", raising=False)
    monkeypatch.delenv("AST_PTX_VERSION", raising=False)
    from ast_deploy.ops import ptx

    def no_gpu():
        raise RuntimeError("0 active drivers")

    monkeypatch.setattr(ptx, "build_target", no_gpu)
    record = resolve_plugins("auto", ["PartialConv"], register=lambda: pytest.fail("no target"),
                             already_registered=lambda: False)
    assert record["used"] is False and "no PTX build target" in record["detail"] and "AST_PTX_ARCH" in record["detail"]


def test_plugins_kernel_target_follows_the_build_gpu(monkeypatch):
    pytest.importorskip("triton")
    from ast_deploy.engines import trt_plugins
    from ast_deploy.ops import ptx

    monkeypatch.delenv("AST_PTX_ARCH", raising=False)
    monkeypatch.setenv("AST_PTX_VERSION", "84")
    monkeypatch.setattr(trt_plugins, "_target", None)
    assert trt_plugins.kernel_prerequisites(87) == (87, 84)
    monkeypatch.setenv("AST_PTX_ARCH", "90")  # named explicitly: wins
    monkeypatch.setattr(ptx, "build_target", lambda: (90, 84))
    assert trt_plugins.kernel_prerequisites(87) == (90, 84) and trt_plugins._target == (90, 84)


def test_plugins_off_after_registration_in_this_process_is_refused():
    """Issue 12, point 7: TensorRT's plugin layer cannot unregister, so the sidecar would lie."""
    ops = ["PartialConv"]
    with pytest.raises(PluginError, match="--plugins off.*already registered in this process.*new process"):
        resolve_plugins("off", ops, already_registered=lambda: True)
    assert resolve_plugins("off", [], already_registered=lambda: True)["used"] is False  # nothing to map
    assert resolve_plugins("auto", ops, register=lambda: True, prerequisites=lambda: (90, 85),
                           already_registered=lambda: True)["used"] is True


def test_plugins_with_hardware_compat_are_refused_or_left_out():
    """Issue 12, point 5: the PTX is for the build GPU; a hardware-compatible engine is not."""
    ops = ["PartialConv"]
    never = lambda: pytest.fail("must not register")  # noqa: E731
    with pytest.raises(PluginError, match="--plugins on cannot be combined with --hardware-compat"):
        resolve_plugins("on", ops, register=never, hardware_compat=True, **READY)
    record = resolve_plugins("auto", ops, register=never, hardware_compat=True, **READY)
    assert record["used"] is False and "build GPU only" in record["detail"]
    with pytest.raises(PluginError, match="--hardware-compat.*already registered"):
        resolve_plugins("auto", ops, register=never, hardware_compat=True, prerequisites=lambda: (90, 85),
                        already_registered=lambda: True)


def test_kernel_fingerprint_changes_with_the_kernels(monkeypatch, tmp_path):
    """Issue 12, point 6: the cache key covers the embedded kernels."""
    from ast_deploy.engines import trt_plugins

    base = trt_plugins.kernel_fingerprint((90, 85))
    assert set(base) == {"sources_sha256", "triton", "sm", "ptx_isa"} and base["sm"] == 90
    assert trt_plugins.kernel_fingerprint((90, 84)) != base and trt_plugins.kernel_fingerprint((87, 85)) != base
    # a changed kernel source changes the hash (a copy of the package with one byte more in a kernel)
    import shutil

    copy = tmp_path / "ast_deploy"
    shutil.copytree(Path(trt_plugins.__file__).resolve().parents[1], copy,
                    ignore=shutil.ignore_patterns("__pycache__", "demo"))
    (copy / "ops" / "triton_partial_conv.py").write_text((copy / "ops" / "triton_partial_conv.py").read_text() + "\n")
    monkeypatch.setattr(trt_plugins, "__file__", str(copy / "engines" / "trt_plugins.py"))
    assert trt_plugins.kernel_fingerprint((90, 85))["sources_sha256"] != base["sources_sha256"]
    opts = lambda k: build_options(ShapeProfile.static((1, 3, 128, 128)), "image", True, None, False, k)  # noqa: E731
    assert cache_key("0" * 64, TARGET, opts(base)) != cache_key("0" * 64, TARGET, opts(trt_plugins.kernel_fingerprint((90, 84))))
    off = build_options(ShapeProfile.static((1, 3, 128, 128)), "image", False, None, False, base)
    assert off["kernels"] is None  # without plugins the kernels do not matter


def test_jetson_is_described_from_its_device_tree(tmp_path):
    """Issue 12, point 10: a Jetson without nvidia-smi (and without CUDA torch) is still named."""
    from ast_deploy.engines.target import jetson_describe

    assert jetson_describe(str(tmp_path)) is None
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    (tmp_path / "proc/device-tree/compatible").write_bytes(b"nvidia,p3737-0000+p3701-0005\0nvidia,tegra234\0")
    assert jetson_describe(str(tmp_path)) == ("NVIDIA Jetson AGX Orin Developer Kit", "8.7")


@pytest.mark.parametrize("text,index", [("cuda", 0), ("cuda:1", 1), ("2", 2), (3, 3)])
def test_build_device_spelling(text, index):
    from ast_deploy.engines.target import parse_device

    assert parse_device(text) == index


def test_build_cli_device_is_applied(tmp_path, monkeypatch):
    from ast_deploy.cli import build as cli

    seen = {}

    def fake_build(onnx, out, **kw):
        seen.update(kw)
        return tmp_path / "x.plan"

    monkeypatch.setattr(cli, "build_engine", fake_build)
    assert cli.main([str(tiny_onnx(tmp_path / "m.onnx")), "--shapes", "1x3x128x128", "--device", "cuda:1"]) == 0
    assert seen["device"] == "cuda:1"
    with pytest.raises(SystemExit) as e:
        cli.main([str(tiny_onnx(tmp_path / "m.onnx")), "--shapes", "1x3x128x128", "--device", "gpu1"])
    assert e.value.code == 2


def test_plugins_on_without_tensorrt_fails_clearly():
    if have_tensorrt():
        pytest.skip("TensorRT is importable here")
    with pytest.raises(PluginError, match="--plugins on, but the AST plugins cannot be registered"):
        resolve_plugins("on", ["PartialConv"])


# ---------------------------------------------------------------- build_engine and ast-build

def test_build_without_tensorrt_explains_where_to_build(tmp_path, capsys):
    if have_tensorrt():
        pytest.skip("TensorRT is importable here")
    model = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(TensorRTNotInstalled, match=r"TensorRT is not installed.*build on the target machine.*"
                                                   r"pip install --extra-index-url https://pypi\.nvidia\.com.*JetPack's TensorRT"):
        build_engine(model, shapes="1x3x128x128")
    from ast_deploy.cli.build import main

    assert main([str(model), "--shapes", "1x3x128x128"]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [model]


@pytest.mark.parametrize("argv,message", [
    (["--shapes", "1x3x128x100:1x3x128x128:1x3x128x128"], "W must be multiples of 128"),
    ([], "dynamic input"),
    (["--shapes", "1x3x256x256:1x3x128x128:1x3x256x256"], "min <= opt <= max"),
])
def test_build_cli_rejects_bad_options(tmp_path, capsys, argv, message):
    from ast_deploy.cli.build import main

    assert main([str(tiny_onnx(tmp_path / "m.onnx")), *argv]) == 2
    assert message in capsys.readouterr().err


def test_build_cli_usage_errors(tmp_path, capsys):
    from ast_deploy.cli.build import main

    assert main([str(tmp_path / "missing.onnx"), "--shapes", "1x3x128x128"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(tiny_onnx(tmp_path / "m.onnx")), "--opt-level", "9"])
    assert e.value.code == 2


def test_build_engine_flow_with_stand_ins(tmp_path, monkeypatch):
    """The TensorRT job's options (device, hardware compatibility, timing cache) reaching the Polygraphy
    chain, with TensorRT and the chain as stand-ins: TensorRT needs a GPU to build. The steps both
    runtimes share (cache key, hit/miss, sidecar) run for real with TensorRT-RTX in test_rtx.py."""
    calls = []
    fake_trt = types.SimpleNamespace(__version__="10.8.0.43",
                                     HardwareCompatibilityLevel=types.SimpleNamespace(AMPERE_PLUS="ampere+"))
    monkeypatch.setattr(build_mod, "import_tensorrt", lambda: fake_trt)
    monkeypatch.setattr(build_mod, "current_target", lambda trt, device=0: Target(trt.__version__, "GPU X", "8.9"))
    devices = []
    monkeypatch.setattr(build_mod, "select_device", devices.append)

    def fake_chain(poly_trt, onnx_path, input_name, profile, **kw):
        calls.append(dict(kw, profile=str(profile), input=input_name))
        return lambda: b"serialized-engine-%d" % len(calls)

    monkeypatch.setattr(build_mod, "make_loader_chain", fake_chain)
    model = tiny_onnx(tmp_path / "m.onnx", ast_task="derain")
    first = build_engine(model, shapes="1x3x128x128:1x3x256x256:2x3x256x256", plugins="off", opt_level=2,
                         hardware_compat=True, timing_cache=tmp_path / "t.cache")
    assert first.parent == tmp_path and first.name.startswith("m.") and first.suffix == ".plan"
    assert first.read_bytes() == b"serialized-engine-1"
    assert calls == [{"opt_level": 2, "hardware_compatibility_level": "ampere+", "timing_cache": tmp_path / "t.cache",
                      "strip_weights": False, "profile": "1x3x128x128:1x3x256x256:2x3x256x256", "input": "image"}]
    sidecar = read_sidecar(first)
    assert sidecar["gpu"] == "GPU X" and sidecar["tensorrt"] == "10.8.0.43" and sidecar["plugins"]["requested"] == "off"
    assert sidecar["options"]["hardware_compat"] is True and sidecar["cache_key"] in first.name

    same = build_engine(model, shapes="1x3x128x128:1x3x256x256:2x3x256x256", plugins="off", opt_level=2,
                        hardware_compat=True)
    assert same == first and len(calls) == 1  # cache hit: timing cache path is not part of the key
    other = build_engine(model, shapes="1x3x128x128:1x3x256x256:2x3x256x256", plugins="off", opt_level=3,
                         hardware_compat=True)
    assert other != first and len(calls) == 2
    build_engine(model, shapes="1x3x128x128:1x3x256x256:2x3x256x256", plugins="off", opt_level=2,
                 hardware_compat=True, force=True)
    assert len(calls) == 3 and first.read_bytes() == b"serialized-engine-3"
    out = build_engine(model, tmp_path / "named" / "derain.plan", shapes="1x3x128x128", plugins="auto",
                       device="cuda:1")
    assert out == tmp_path / "named" / "derain.plan" and read_sidecar(out)["profile"]["max"] == [1, 3, 128, 128]
    assert devices[-1] == 1  # --device cuda:1 reaches the build


# ---------------------------------------------------------------- on a TensorRT machine with a GPU

@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_build_caches_and_records(tmp_path):
    """The product's own custom-op ONNX (local functions, plugins off) built, cached and recorded."""
    import tensorrt as trt
    import torch

    from ast_deploy.export import export_onnx
    from ast_deploy.model import AST
    from conftest import TINY_CONFIG

    torch.manual_seed(0)
    model = tmp_path / "tiny.onnx"
    export_onnx(AST(**TINY_CONFIG).eval(), model)
    cache = tmp_path / "timing.cache"
    shapes = "1x3x128x128:1x3x128x128:1x3x256x256"
    engine = build_engine(model, tmp_path / "tiny.plan", shapes=shapes, plugins="off", timing_cache=cache)
    assert engine.stat().st_size > 0 and cache.stat().st_size > 0
    sidecar = read_sidecar(engine)
    assert sidecar["tensorrt"] == trt.__version__ and sidecar["profile"]["max"] == [1, 3, 256, 256]
    assert sidecar["gpu"] != "unknown" and sidecar["options"]["kernels"] is None
    mtime = engine.stat().st_mtime_ns
    assert build_engine(model, tmp_path / "tiny.plan", shapes=shapes, plugins="off") == engine
    assert engine.stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_task_recipe_lookup(caplog):
    assert load_recipe(None, required=False) is None
    assert load_recipe("derain").profile == ShapeProfile.parse("1x3x128x128:1x3x512x512:4x3x1024x1024")
    with caplog.at_level("WARNING"):
        assert load_recipe("desnow", required=False) is None
    assert "using defaults" in caplog.text
    with pytest.raises(RecipeError, match="unknown task 'desnow'"):
        load_recipe("desnow")
    # The builder takes the profile from the recipe named, or from the ONNX's task.
    assert str(resolve_profile(info(), None, "derain")) == "1x3x128x128:1x3x512x512:4x3x1024x1024"
    assert str(resolve_profile(info(metadata={"ast.task": "derain"}))) == "1x3x128x128:1x3x512x512:4x3x1024x1024"
    with pytest.raises(ProfileError, match="cannot load the recipe of task 'desnow'"):
        resolve_profile(info(), None, "desnow")
    assert resolve_profile(info((1, 3, 256, 256), {"ast.task": "desnow"})) == ShapeProfile.static((1, 3, 256, 256))


def test_onnx_hash_covers_external_weights(tmp_path):
    import numpy as np
    from onnx import numpy_helper

    def save(weight_value):
        x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "h", "w"])
        y = helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["batch", 3, "h", "w"])
        weight = numpy_helper.from_array(np.full((3, 1, 1), weight_value, np.float32), "w")
        graph = helper.make_graph([helper.make_node("Mul", ["image", "w"], ["restored"])], "g", [x], [y], [weight])
        (tmp_path / "m.weights").unlink(missing_ok=True)  # onnx.save appends to an existing data file
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"),
                  save_as_external_data=True, location="m.weights", size_threshold=0)
        return inspect_onnx(tmp_path / "m.onnx").sha256

    first = save(1.0)
    assert (tmp_path / "m.weights").is_file()
    assert save(1.0) == first and save(2.0) != first


# ---------------------------------------------------------------- running an engine without torch

TORCH_FREE_RUN = r'''
import ctypes, sys, types
import numpy as np
sys.modules["torch"] = None  # any "import torch" on this path fails

# -- stand-in for the compiled tensorrt: an engine computing 1 - x with FP16 input and output
trt = types.ModuleType("tensorrt")
trt.__version__ = "10.13.3.9"
trt.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF")
trt.TensorIOMode = types.SimpleNamespace(INPUT="IN", OUTPUT="OUT")
class Logger:
    WARNING = 2
    def __init__(self, severity): pass
trt.Logger = Logger
class Context:
    def set_input_shape(self, name, shape):
        self.shape = shape; return name == "image"
    def get_tensor_shape(self, name):
        return self.shape
    def set_tensor_address(self, name, ptr):
        setattr(self, name, ptr); return True
    def execute_async_v3(self, stream):
        assert stream == 1234
        n = int(np.prod(self.shape))
        x = np.ctypeslib.as_array((ctypes.c_uint16 * n).from_address(self.image)).view(np.float16)
        y = np.ctypeslib.as_array((ctypes.c_uint16 * n).from_address(self.restored)).view(np.float16)
        y[:] = 1 - x
        return True
class Engine:
    num_io_tensors = 2
    def get_tensor_name(self, i): return ["image", "restored"][i]
    def get_tensor_mode(self, n): return "IN" if n == "image" else "OUT"
    def get_tensor_dtype(self, n): return "HALF"
    def get_tensor_profile_shape(self, n, i): return [(1, 3, 128, 128), (1, 3, 128, 128), (2, 3, 256, 256)]
    def create_execution_context(self): return Context()
class Runtime:
    def __init__(self, logger): pass
    def deserialize_cuda_engine(self, data):
        assert data == b"plan"; return Engine()
trt.Runtime = Runtime
sys.modules["tensorrt"] = trt

# -- stand-in for polygraphy.cuda (no GPU here): host memory behind device pointers
cuda = types.ModuleType("polygraphy.cuda")
class Handle:
    def cudaGetDeviceCount(self, p): ctypes.cast(p, ctypes.POINTER(ctypes.c_int))[0] = 1; return 0
    def cudaSetDevice(self, i): return 0
class Wrapper:
    handle = Handle()
    def check(self, status): assert status == 0
cuda.wrapper = lambda: Wrapper()
class Stream:
    ptr = 1234
    synced = 0
    def synchronize(self): Stream.synced += 1
    def free(self): pass
class DeviceArray:
    @staticmethod
    def raw(shape): a = DeviceArray(); a.resize(shape); return a
    def resize(self, shape):
        n = int(np.prod(shape))
        if n > getattr(self, "cap", -1): self.buf, self.cap = np.zeros(max(n, 1), np.uint8), n
        self.nbytes = n; self.ptr = self.buf.ctypes.data; return self
    def copy_from(self, host, stream): assert host.nbytes <= self.cap; ctypes.memmove(self.ptr, host.ctypes.data, host.nbytes)
    def copy_to(self, host, stream): ctypes.memmove(host.ctypes.data, self.ptr, self.nbytes)
    def free(self): pass
cuda.Stream, cuda.DeviceArray = Stream, DeviceArray
import polygraphy
polygraphy.cuda = cuda
sys.modules["polygraphy.cuda"] = cuda

if sys.argv[2] == "bypass-package-init":
    # ast_deploy/__init__ imports the task table, which imports the model (torch): issue 13 moves that;
    # until then the check covers everything from the backend down, not the package's __init__.
    pkg = types.ModuleType("ast_deploy"); pkg.__path__ = ["ast_deploy"]; sys.modules["ast_deploy"] = pkg
from ast_deploy.backends.tensorrt import TensorRTBackend
path = sys.argv[1]
with TensorRTBackend(path) as backend:
    for shape in [(1, 3, 128, 128), (2, 3, 256, 256), (1, 3, 128, 256)]:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        y = backend.infer(x)
        assert y.dtype == np.float32 and y.shape == shape
        assert np.abs(y - (1 - x.astype(np.float16).astype(np.float32))).max() < 1e-3
assert Stream.synced == 3
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None], "torch was imported"
print("ran without torch")
'''


def test_tensorrt_backend_runs_an_engine_without_torch(tmp_path):
    """Issue 12, point 9: buffers and stream through Polygraphy's CUDA wrapper; torch is never imported
    (the process fails any 'import torch'). TensorRT and the CUDA runtime are stand-ins here."""
    import subprocess

    plan = tmp_path / "e.plan"
    plan.write_bytes(b"plan")
    repo = Path(__file__).resolve().parents[1]
    full = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; import ast_deploy"],
                          cwd=repo, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(repo)))
    mode = "full" if full.returncode == 0 else "bypass-package-init"
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE_RUN, str(plan), mode], cwd=repo, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(repo)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ran without torch" in proc.stdout


def test_engine_build_decisions_import_no_torch():
    """ast-build's plugin decision (and the engine modules) import no torch: Jetson's pip torch has no CUDA."""
    import subprocess

    code = ("import sys, types; sys.modules['torch'] = None\n"
            "pkg = types.ModuleType('ast_deploy'); pkg.__path__ = ['ast_deploy']; sys.modules['ast_deploy'] = pkg\n"
            "from ast_deploy.engines import build, plugins, trt_plugins\n"
            "print(plugins.resolve_plugins('off', ['PartialConv'])['detail'])\n"
            "print(sorted(trt_plugins.kernel_fingerprint((87, 85))))\n")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(repo)))
    assert proc.returncode == 0, proc.stderr
    assert "local functions" in proc.stdout
