"""TensorRT plugin logic without TensorRT, PTX generation without a GPU, and (marked) the real plugins.

- descriptor functions (names, output rule, type combinations, launch grid, scalar arguments);
- the registration code driven through a stand-in ``tensorrt.plugin`` that enforces the documented
  decorator schemas (it catches annotations that are strings, wrong argument lists, ...);
- PTX for sm_87 / sm_90 via the ``build_ptx`` CLI, in a subprocess without TRITON_INTERPRET (Triton
  runs a process in one mode), assembled by the ptxas that ships with Triton;
- ``@pytest.mark.tensorrt`` (and ``gpu``) tests of the real plugins, skipped where TensorRT is absent.
"""

import inspect
import json
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
import torch

from ast_deploy.engines import plugin_rules as pd
from ast_deploy.ops.kernel_specs import AssaSpec, PartialConvSpec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY_CONFIG  # noqa: E402


# ---------------------------------------------------------------- descriptor functions


def test_plugin_names():
    assert pd.plugin_id(pd.ASSA) == "ast::AdaptiveSparseAttention"
    assert pd.plugin_id(pd.ASSA_SHIFTED) == "ast::AdaptiveSparseAttentionShifted"
    assert pd.plugin_id(pd.PARTIAL_CONV) == "ast::PartialConv"
    assert pd.PLUGIN_VERSION == "1"


def test_type_combinations_tie_q_kv_and_output():
    combos = pd.expand_combinations(pd.type_combinations(pd.ASSA)[0])
    assert len(combos) == 8 and len({tuple(c) for c in combos}) == 8
    for q, kv, bias, mix, out in combos:
        assert q == kv == out and q in ("FP32", "FP16") and {bias, mix} <= {"FP32", "FP16"}
    masked = pd.expand_combinations(pd.type_combinations(pd.ASSA_SHIFTED)[0])
    assert len(masked) == 24 and {c[4] for c in masked} == {"FP32", "FP16", "INT32"}
    assert all(len(c) == 6 and c[0] == c[1] == c[5] for c in masked)
    conv = pd.expand_combinations(pd.type_combinations(pd.PARTIAL_CONV)[0])
    assert sorted(map(tuple, conv)) == [("FP16", "FP16", "FP16"), ("FP16", "FP32", "FP16"),
                                        ("FP32", "FP16", "FP32"), ("FP32", "FP32", "FP32")]


def test_assa_shape_checks_accept_dynamic_windows_and_reject_mismatches():
    pd.check_assa_shapes((-1, 64, 512), (-1, 64, 1024), (16, 64, 64), (2,), None, 16)
    pd.check_assa_shapes((None, 64, 64), (None, 64, 128), (2, 64, 64), (2,), (None, 64), 2)
    bad = [
        (((8, 64, 60), (8, 64, 120), (16, 64, 64), (2,), None, 16), "multiple of num_heads"),
        (((8, 64, 64), (8, 64, 64), (2, 64, 64), (2,), None, 2), "kv has"),
        (((8, 64, 64), (8, 64, 128), (4, 64, 64), (2,), None, 2), "num_heads = 2"),
        (((8, 64, 64), (8, 64, 128), (2, 49, 49), (2,), None, 2), "token counts"),
        (((8, 64, 64), (8, 64, 128), (2, 64, 64), (3,), None, 2), "mix"),
        (((8, 64, 64), (8, 64, 128), (2, 64, 64), (2,), (4, 49), 2), "region_ids"),
    ]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            pd.check_assa_shapes(*args)


def test_partial_conv_shape_checks():
    pd.check_partial_conv_shapes((-1, -1, -1, 64), (16, 16, 3, 3))
    with pytest.raises(ValueError):
        pd.check_partial_conv_shapes((1, 8, 8, 64), (16, 8, 3, 3))
    with pytest.raises(ValueError, match="only 8"):
        pd.check_partial_conv_shapes((1, 8, 8, 8), (16, 16, 3, 3))


def test_specs_from_node_dims_and_types():
    spec = pd.assa_spec((None, 64, 512), 16, 32 ** -0.5, "HALF", "FLOAT", "FLOAT", "INT32")
    assert spec == AssaSpec(64, 512, 16, 32 ** -0.5, "fp16", "fp32", "fp32", "i32")
    assert (spec.head_dim, spec.block_n, spec.block_d, spec.masked) == (32, 64, 32, True)
    assert AssaSpec(64, 64, 8, 0.3).block_d == 16  # head dim 8 padded for tl.dot
    with pytest.raises(ValueError, match="must be known when the engine is built"):
        pd.assa_spec((None, None, 512), 16, 0.1, "HALF", "HALF", "HALF", None)
    with pytest.raises(ValueError, match="BOOL"):
        pd.assa_spec((None, 64, 512), 16, 0.1, "BOOL", "HALF", "HALF", None)
    conv = pd.partial_conv_spec((None, None, None, 256), (64, 64, 3, 3), "HALF", "FLOAT")
    assert conv == PartialConvSpec(256, 64, "fp16", "fp32")


def test_launch_grids_and_scalar_arguments():
    spec = AssaSpec(64, 128, 4, 0.17, "fp16", region_dtype="fp32")
    assert pd.assa_launch(spec, 96, 12) == ((96, 4, 1), [12])
    assert pd.assa_launch(AssaSpec(64, 128, 4, 0.17), 96, 12) == ((96, 4, 1), [1])
    conv = PartialConvSpec(512, 128)  # 64-pixel tiles, 64-channel output blocks
    assert pd.partial_conv_launch(conv, 2, 30, 50) == ((47, 2, 1), [3000, 30, 50])
    assert conv.runtime_params() == ["x_ptr", "w_ptr", "num_pixels", "height", "width", "y_ptr"]
    assert spec.runtime_params() == ["q_ptr", "kv_ptr", "bias_ptr", "mix_ptr", "region_ptr", "num_windows",
                                     "out_ptr"]
    assert "region_ptr" not in AssaSpec(64, 128, 4, 0.17).runtime_params()


def test_kernel_names_are_ptx_identifiers_and_unique():
    specs = [AssaSpec(64, 128, 4, s, dt, region_dtype=r) for s in (0.1, 0.2) for dt in ("fp32", "fp16")
             for r in (None, "fp32")] + [PartialConvSpec(64, 16, dt) for dt in ("fp32", "fp16")]
    names = [s.kernel_name() for s in specs]
    assert len(set(names)) == len(names)
    assert all(n.replace("_", "a").isalnum() and not n[0].isdigit() for n in names)
    assert names[0].startswith("ast_assa_fp32_") and names[-1].startswith("ast_pconv_fp16_")


def test_ptx_version_for_driver():
    from ast_deploy.ops.ptx import ptx_version_for_driver

    assert ptx_version_for_driver(13000) == 90
    assert ptx_version_for_driver(13020) == 92
    assert ptx_version_for_driver(12080) == 87
    assert ptx_version_for_driver(12060) == 85
    assert ptx_version_for_driver(12040) == 84
    assert ptx_version_for_driver(11080) == 78


SYNTHETIC_PTX = """.version 9.4
.target sm_90a
.address_size 64
	// .globl	k
.visible .entry k(
	.param .u64 .ptr .global .align 1 k_param_0,
	.param .u32 k_param_1,
	.param .u64 .ptr .global .align 1 k_param_2,
	.param .u64 .ptr .global .align 1 k_param_3,
	.param .u64 .ptr .global .align 1 k_param_4
)
.reqntid 128
{
	ld.param.b64 	%rd1, [k_param_0];
	ld.param.b32 	%r1, [k_param_1];
	ld.param.b64 	%rd2, [k_param_2];
	ret;
}
"""


def test_finalize_ptx_renames_and_drops_unused_hidden_params():
    from ast_deploy.ops.ptx import entry_params, finalize_ptx

    ptx = finalize_ptx(SYNTHETIC_PTX, "k", "ast_x", 3)
    assert entry_params(ptx, "ast_x") == [".param .u64 .ptr .global .align 1 ast_x_param_0",
                                          ".param .u32 ast_x_param_1",
                                          ".param .u64 .ptr .global .align 1 ast_x_param_2"]
    assert "[ast_x_param_2]" in ptx and ".globl\tast_x" in ptx and "k_param" not in ptx
    with pytest.raises(ValueError, match="reads its hidden parameter"):
        finalize_ptx(SYNTHETIC_PTX.replace("ret;", "ld.param.b64 %rd3, [k_param_3];\n\tret;"), "k", "ast_x", 3)
    with pytest.raises(ValueError, match="launch passes 6"):
        finalize_ptx(SYNTHETIC_PTX, "k", "ast_x", 6)


def test_model_specs_cover_every_level():
    from ast_deploy.cli.build_ptx import model_specs

    specs = model_specs(TINY_CONFIG, ("fp16",))
    assa = [s for s in specs if isinstance(s, AssaSpec)]
    conv = [s for s in specs if isinstance(s, PartialConvSpec)]
    assert {(s.channels, s.num_heads, s.masked) for s in assa} == {
        (128, 16, False), (128, 16, True), (64, 8, False), (64, 8, True), (32, 4, False), (32, 4, True),
        (16, 2, False), (16, 2, True)}
    assert all(s.tokens == 64 and s.head_dim == 8 for s in assa)
    assert {(s.channels, s.conv_channels) for s in conv} == {(8, 2), (16, 4), (32, 8), (64, 16), (128, 32)}


# ---------------------------------------------------------------- registration without TensorRT


def test_register_plugins_without_tensorrt_is_false_and_repeatable():
    from ast_deploy.engines import trt_plugins

    try:
        import tensorrt.plugin  # noqa: F401
        pytest.skip("tensorrt.plugin is importable here")
    except Exception:
        pass
    assert trt_plugins.register_plugins() is False
    assert trt_plugins.register_plugins() is False


def test_package_imports_without_triton_or_tensorrt():
    code = """
import sys
sys.modules["triton"] = None  # import triton -> ImportError
import ast_deploy, ast_deploy.model, ast_deploy.engines.trt_plugins as t, ast_deploy.engines.plugin_rules
from ast_deploy.ops import ASSA_IMPLS, get_impl
assert t.register_plugins() is False
try:
    get_impl(ASSA_IMPLS, "triton")
except RuntimeError as e:
    print("clear error:", e)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "clear error: the 'triton' kernels need the triton package" in proc.stdout


class FakeExpr:
    """A shape expression: an int (build-time constant) or a symbol, with TensorRT's arithmetic."""

    is_fake = False

    def __init__(self, value):
        self.value = value

    @property
    def is_constant(self):
        return isinstance(self.value, int)

    def constant_value(self):
        assert self.is_constant
        return self.value

    def _op(self, sym, other):
        other = other.value if isinstance(other, FakeExpr) else other
        if isinstance(self.value, int) and isinstance(other, int):
            return FakeExpr(eval(f"{self.value}{sym}{other}"))
        return FakeExpr(f"({self.value}{sym}{other})")

    def __add__(self, other):
        return self._op("+", other)

    def __mul__(self, other):
        return self._op("*", other)

    def __floordiv__(self, other):
        return self._op("//", other)

    def __repr__(self):
        return f"E({self.value})"


class FakeDesc:
    def __init__(self, shape=(), dtype="FLOAT"):
        self.shape_expr = [FakeExpr(d) for d in shape]
        self.dtype = types.SimpleNamespace(name=dtype)

    def like(self):
        return FakeDesc([e.value for e in self.shape_expr], self.dtype.name)


def make_fake_trtp():
    """A stand-in for ``tensorrt.plugin`` enforcing its documented decorator schemas."""
    trtp = types.ModuleType("tensorrt.plugin")
    trtp.TensorDesc = FakeDesc
    registry = {}

    class SymExprs(list):
        pass

    class SymIntExprs(SymExprs):
        def __init__(self, n):
            super().__init__([None] * n)

    class KernelLaunchParams(types.SimpleNamespace):
        pass

    class AutoTuneCombination:
        def __init__(self, io_types, layouts):
            self.io_types, self.layouts = io_types, layouts

    trtp.SymExprs, trtp.SymIntExprs, trtp.KernelLaunchParams = SymExprs, SymIntExprs, KernelLaunchParams
    trtp.AutoTuneCombination = AutoTuneCombination
    trtp.SymInt32 = lambda value: ("i32", value)
    trtp.op = types.SimpleNamespace()

    def params(fn):
        sig = inspect.signature(fn)
        for p in sig.parameters.values():
            assert not isinstance(p.annotation, str), f"{fn.__name__}: annotation of {p.name} is a string"
            assert p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
        return sig

    def register(plugin_id):
        def deco(fn):
            sig = params(fn)
            tensors = [n for n, p in sig.parameters.items() if p.annotation is FakeDesc]
            attrs = {n: p.annotation for n, p in sig.parameters.items() if p.annotation is not FakeDesc}
            assert list(sig.parameters)[: len(tensors)] == tensors, "tensors first, then attributes"
            assert all(t in (int, float, str, bool, bytes) for t in attrs.values())
            assert sig.return_annotation is FakeDesc
            assert plugin_id not in registry, f"{plugin_id} registered twice"
            registry[plugin_id] = dict(register=fn, tensors=tensors, attrs=attrs)
            ns, name = plugin_id.split("::")
            setattr(trtp.op, ns, getattr(trtp.op, ns, types.SimpleNamespace()))
            setattr(getattr(trtp.op, ns), name, registry[plugin_id])
            return fn
        return deco

    def follower(kind, tail):
        def decorator(plugin_id):
            def deco(fn):
                sig = params(fn)
                entry = registry[plugin_id]
                names = list(sig.parameters)
                attrs = [n for n in names if n in entry["attrs"]]
                assert attrs == [a for a in entry["attrs"] if a in attrs], "attributes in registration order"
                assert names == entry["tensors"] + attrs + tail, f"{kind} arguments {names}"
                for n in attrs:
                    assert sig.parameters[n].annotation in (entry["attrs"][n], inspect.Parameter.empty)
                if kind == "aot_impl":
                    ret = sig.return_annotation
                    assert typing.get_origin(ret) is tuple and len(typing.get_args(ret)) == 4
                entry[kind] = fn
                return fn
            return deco
        return decorator

    trtp.register = register
    trtp.aot_impl = follower("aot_impl", ["outputs", "tactic"])
    trtp.autotune = follower("autotune", ["outputs"])
    trt = types.ModuleType("tensorrt")
    trt.plugin = trtp
    return trt, trtp, registry


@pytest.fixture()
def fake_trt(monkeypatch):
    from ast_deploy.ops import ptx
    from ast_deploy.engines import trt_plugins

    trt, trtp, registry = make_fake_trtp()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.setattr(trt_plugins, "_registered", False)
    compiled = []

    def fake_kernel(spec):  # the real compile is tested through build_ptx below
        compiled.append(spec)
        return ptx.CompiledKernel(spec.kernel_name(), f".entry {spec.kernel_name()}(", 90, 128, 4096)

    monkeypatch.setattr(trt_plugins, "_kernel", fake_kernel)
    yield registry, compiled
    monkeypatch.setattr(trt_plugins, "_registered", False)


def test_plugins_register_through_tensorrt_plugin_api(fake_trt):
    from ast_deploy.engines import trt_plugins

    registry, compiled = fake_trt
    assert trt_plugins.register_plugins() is True
    assert trt_plugins.register_plugins() is True  # idempotent: nothing registered twice
    assert set(registry) == {"ast::AdaptiveSparseAttention", "ast::AdaptiveSparseAttentionShifted", "ast::PartialConv"}
    for entry in registry.values():
        assert {"register", "aot_impl", "autotune"} <= set(entry)
    assert registry["ast::AdaptiveSparseAttention"]["attrs"] == {"num_heads": int, "scale": float}
    assert registry["ast::AdaptiveSparseAttentionShifted"]["tensors"][-1] == "region_ids"

    q, kv = FakeDesc(("Bw", 64, 64), "HALF"), FakeDesc(("Bw", 64, 128), "HALF")
    bias, mix, ids = FakeDesc((2, 64, 64), "FLOAT"), FakeDesc((2,), "FLOAT"), FakeDesc(("nW", 64), "FLOAT")
    masked = registry["ast::AdaptiveSparseAttentionShifted"]
    out = masked["register"](q, kv, bias, mix, ids, 2, 0.25)
    assert [e.value for e in out.shape_expr] == ["Bw", 64, 64] and out.dtype.name == "HALF"
    with pytest.raises(ValueError, match="num_heads"):
        masked["register"](q, kv, FakeDesc((4, 64, 64)), mix, ids, 2, 0.25)

    name, text, launch, extra = masked["aot_impl"](q, kv, bias, mix, ids, 2, 0.25, (out,), 0)
    assert compiled[-1] == AssaSpec(64, 64, 2, 0.25, "fp16", "fp32", "fp32", "fp32")
    assert f".entry {name}(" in text
    assert (launch.grid_x.value, launch.grid_y, launch.grid_z) == ("Bw", 2, 1)
    assert (launch.block_x, launch.shared_mem) == (128, 4096)
    assert [v for _, v in extra] == [ids.shape_expr[0]]

    plain = registry["ast::AdaptiveSparseAttention"]
    _, _, launch, extra = plain["aot_impl"](q, kv, bias, mix, 2, 0.25, (out,), 0)
    assert compiled[-1].region_dtype is None and [v for _, v in extra] == [1]

    x, w = FakeDesc(("B", "H", "W", 64), "HALF"), FakeDesc((16, 16, 3, 3), "HALF")
    conv = registry["ast::PartialConv"]
    y = conv["register"](x, w)
    _, _, launch, extra = conv["aot_impl"](x, w, (y,), 0)
    assert launch.grid_x.value == "((((B*H)*W)+63)//64)" and launch.grid_y == 1
    assert [v.value for _, v in extra] == ["((B*H)*W)", "H", "W"]

    for pid, entry in registry.items():
        tensors = [FakeDesc()] * len(entry["tensors"])
        combos = entry["autotune"](*tensors, (FakeDesc(),))
        assert [c.io_types for c in combos] == pd.type_combinations(pid.split("::")[1])
        assert all(c.layouts == "LINEAR" for c in combos)


# ---------------------------------------------------------------- PTX without a GPU


def run_build_ptx(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "ast_deploy.cli.build_ptx", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_build_ptx_for_sm87_and_sm90(tmp_path):
    run_build_ptx("--arch", "87,90", "--out", str(tmp_path), "--model", json.dumps(TINY_CONFIG), "--dtypes", "fp16",
                  "--match", "^ast_assa_fp16_bfp16_mfp16_rfp16_n64_h2_|^ast_pconv_fp16_wfp16_c16_p4_", "--verify")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest) == 4
    for item in manifest:
        ptx = (tmp_path / item["file"]).read_text()
        arch = item["arch"]
        assert item["file"].startswith(f"sm_{arch}/")
        assert f"\n.target {'sm_90a' if arch == 90 else 'sm_87'}\n" in ptx
        assert f".visible .entry {item['kernel']}(" in ptx
        from ast_deploy.ops.ptx import entry_params

        assert len(entry_params(ptx, item["kernel"])) == len(item["params"])
        assert item["block_x"] == 128
    ops = {item["op"] for item in manifest}
    assert ops == {"AssaSpec", "PartialConvSpec"}


def test_build_ptx_caps_the_ptx_isa_for_older_drivers(tmp_path):
    run_build_ptx("--arch", "90", "--out", str(tmp_path), "--model", json.dumps(TINY_CONFIG), "--dtypes", "fp16",
                  "--ops", "assa", "--match", "_h16_", "--ptx-version", "84", "--verify")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest) == 2  # 16-head attention, unmasked and masked
    for item in manifest:
        assert item["ptx_isa"] == "8.4" and "\n.version 8.4\n" in (tmp_path / item["file"]).read_text()


# ---------------------------------------------------------------- the real plugins (TensorRT, GPU)


@pytest.mark.tensorrt
def test_plugins_register_with_tensorrt():
    import tensorrt as trt

    from ast_deploy.engines.trt_plugins import register_plugins

    assert register_plugins() is True and register_plugins() is True
    registry = trt.get_plugin_registry()
    for name in (pd.ASSA, pd.ASSA_SHIFTED, pd.PARTIAL_CONV):
        assert registry.get_creator(name, pd.PLUGIN_VERSION, pd.NAMESPACE) is not None


def _run_plugin_engine(make_layer, inputs: dict, output_shape, output_dtype):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # always on in 11
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    dtypes = {torch.float32: trt.float32, torch.float16: trt.float16}
    tensors = [network.add_input(name, dtypes[t.dtype], tuple(t.shape)) for name, t in inputs.items()]
    layer = make_layer(network, tensors)
    layer.get_output(0).name = "out"
    network.mark_output(layer.get_output(0))
    engine = trt.Runtime(logger).deserialize_cuda_engine(
        builder.build_serialized_network(network, builder.create_builder_config()))
    context = engine.create_execution_context()
    out = torch.empty(output_shape, dtype=output_dtype, device="cuda")
    for name, t in inputs.items():
        context.set_tensor_address(name, t.data_ptr())
    context.set_tensor_address("out", out.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_aot_plugins_match_reference_in_an_engine(dtype, tol):
    import tensorrt as trt
    import tensorrt.plugin as trtp

    from ast_deploy.ops.assa import assa_reference
    from ast_deploy.ops.partial_conv import partial_conv_reference
    from ast_deploy.engines.trt_plugins import register_plugins

    assert register_plugins()
    g = torch.Generator().manual_seed(0)
    heads, d = 4, 32
    q = torch.randn(32, 64, heads * d, generator=g).to(dtype).cuda()
    kv = torch.randn(32, 64, 2 * heads * d, generator=g).to(dtype).cuda()
    bias = torch.randn(heads, 64, 64, generator=g).cuda()
    mix = torch.tensor([0.4, 0.6]).cuda()
    ids = torch.randint(0, 3, (8, 64), generator=g).float().cuda()

    def assa_layer(network, t):
        make = trtp.op.ast.AdaptiveSparseAttentionShifted(*t, num_heads=heads, scale=d ** -0.5)
        return network.add_plugin_v3(*make(trt.QuickPluginCreationRequest.STRICT_AOT))

    out = _run_plugin_engine(assa_layer, dict(q=q, kv=kv, bias=bias, mix=mix, region_ids=ids), q.shape, dtype)
    ref = assa_reference(q.float(), kv.float(), bias, mix, ids, num_heads=heads, scale=d ** -0.5)
    assert ((out.float() - ref).abs().max() / ref.abs().max()) < tol

    x = torch.randn(2, 32, 48, 64, generator=g).to(dtype).cuda()
    w = (torch.randn(16, 16, 3, 3, generator=g) * 0.1).to(dtype).cuda()

    def conv_layer(network, t):
        make = trtp.op.ast.PartialConv(*t)
        return network.add_plugin_v3(*make(trt.QuickPluginCreationRequest.STRICT_AOT))

    y = _run_plugin_engine(conv_layer, dict(x=x, weight=w), x.shape, dtype)
    ref = partial_conv_reference(x.float(), w.float())
    assert ((y.float() - ref).abs().max() / ref.abs().max()) < tol
