"""TensorRT plugin logic without TensorRT, PTX generation without a GPU, and (marked) the real plugins.

- descriptor functions (names, output rule, type combinations, launch grid, scalar arguments);
- the registration code driven through NVIDIA's real ``tensorrt.plugin`` of TensorRT 10.9, 10.13,
  11.1 and 11.4 (``tests/trt_qdp.py``: downloaded bindings wheels, a stand-in only for the compiled
  core), called as onnx-tensorrt and the builder call it, up to real Triton PTX;
- PTX for sm_87 / sm_90 via the ``build_ptx`` CLI, in a subprocess without TRITON_INTERPRET (Triton
  runs a process in one mode), assembled by the ptxas that ships with Triton;
- ``@pytest.mark.tensorrt`` (and ``gpu``) tests of the real plugins, skipped where TensorRT is absent.
"""

import json
import os
import subprocess
import sys
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


# ---------------------------------------------------------------- NVIDIA's real tensorrt.plugin
#
# The QDP layer of TensorRT 10.9, 10.13, 11.1 and 11.4 (tests/trt_qdp.py downloads the bindings wheels
# into a cache and loads their tensorrt/plugin/ on a stand-in for the compiled core), driven the way
# onnx-tensorrt and the builder call it. Skipped with a reason when the wheels cannot be downloaded.

import numpy as np  # noqa: E402
from onnx import helper  # noqa: E402

import trt_qdp  # noqa: E402

ATTRS = {"plugin_namespace": "ast", "plugin_version": "1", "aot": 1}  # what the exporter writes


def ast_node(op, num_inputs, **attrs):
    from ast_deploy.export import custom_nodes as custom_ops

    assert custom_ops._PLUGIN_ATTRS == ATTRS  # the exporter's attributes, checked, not assumed
    return helper.make_node(op, [f"i{k}" for k in range(num_inputs)], ["y"], domain="ast", **attrs, **ATTRS)


@pytest.fixture(params=trt_qdp.VERSIONS)
def qdp(request, monkeypatch):
    from ast_deploy.engines import trt_plugins

    try:
        trt_qdp.plugin_package(request.param)
    except trt_qdp.Unavailable as e:
        pytest.skip(str(e))
    before = {k: v for k, v in sys.modules.items() if k == "tensorrt" or k.startswith("tensorrt.")}
    monkeypatch.setattr(trt_plugins, "_registered", False)
    with trt_qdp.loaded(request.param) as (trt, trtp):
        assert trtp.__file__.startswith(str(trt_qdp.cache_dir()))  # NVIDIA's code, not a stand-in
        assert trt_plugins.register_plugins() is True
        yield request.param, trt, trtp
    after = {k: v for k, v in sys.modules.items() if k == "tensorrt" or k.startswith("tensorrt.")}
    assert after == before  # nothing leaks into other tests


def test_real_qdp_registers_creators_whose_fields_match_what_onnx_tensorrt_passes(qdp):
    from ast_deploy.engines import trt_plugins

    version, trt, trtp = qdp
    assert trt_plugins.register_plugins() is True  # idempotent
    registry = trt.get_plugin_registry()
    fields = {}
    for name in (pd.ASSA, pd.ASSA_SHIFTED, pd.PARTIAL_CONV):
        creator = registry.get_creator(name, pd.PLUGIN_VERSION, pd.NAMESPACE)
        assert creator is not None and hasattr(trtp.op.ast, name)
        fields[name] = [(f.name, f.type) for f in creator.field_names]
    # onnx-tensorrt: an ONNX INT attribute -> kINT32, FLOAT -> kFLOAT32; the creator must declare the same
    assert fields[pd.ASSA] == fields[pd.ASSA_SHIFTED] == [("num_heads", trt.PluginFieldType.INT32),
                                                          ("scale", trt.PluginFieldType.FLOAT32)]
    assert fields[pd.PARTIAL_CONV] == []
    assert trt_plugins.registered_in_process()


def test_real_qdp_creates_from_onnx_fields_and_types_outputs_from_placeholder_dims(qdp):
    """TensorRT's first call has placeholder dims (issue 12, point 1: PartialConv raised here) and
    the attributes arrive as 1-element arrays (point 2: int(f.data) under NumPy >= 2.4)."""
    _, trt, _ = qdp
    nodes = [(ast_node(pd.PARTIAL_CONV, 2), [trt.DataType.HALF, trt.DataType.FLOAT], [4, 4]),
             (ast_node(pd.ASSA, 4, num_heads=4, scale=0.25), [trt.DataType.FLOAT] * 4, [3, 3, 3, 1]),
             (ast_node(pd.ASSA_SHIFTED, 5, num_heads=4, scale=0.25),
              [trt.DataType.HALF, trt.DataType.HALF, trt.DataType.FLOAT, trt.DataType.FLOAT, trt.DataType.INT32],
              [3, 3, 3, 1, 2])]
    for node, types_, ranks in nodes:
        creator, plugin = trt_qdp.create(trt, node)
        assert type(plugin).__name__ == "_TemplateAOTPlugin"  # aot=1 -> STRICT_AOT
        assert plugin.get_output_data_types(types_, ranks) == [types_[0]]
        assert plugin.get_num_outputs() == 1
    # the attribute values reach the register function as the plugin reads them
    _, plugin = trt_qdp.create(trt, ast_node(pd.ASSA, 4, num_heads=3, scale=0.25))
    b = trt_qdp.Builder(trt, plugin, [trt.DataType.FLOAT] * 4, [("Bw", 64, 96), ("Bw", 64, 192), (3, 64, 64), (2,)])
    b.output_types()
    assert b.out_shapes({"Bw": 5}) == [(5, 64, 96)]
    _, plugin = trt_qdp.create(trt, ast_node(pd.ASSA, 4, num_heads=4, scale=0.25))
    b = trt_qdp.Builder(trt, plugin, [trt.DataType.FLOAT] * 4, [("Bw", 64, 96), ("Bw", 64, 192), (3, 64, 64), (2,)])
    b.output_types()
    with pytest.raises(ValueError, match="num_heads = 4"):  # known dims are still checked
        b.output_shapes()


def test_real_qdp_output_shapes_formats_and_tactics(qdp):
    _, trt, _ = qdp
    D = trt.DataType
    names = {D.FLOAT: "FP32", D.HALF: "FP16", D.INT32: "INT32"}
    cases = [(ast_node(pd.PARTIAL_CONV, 2), [("B", "H", "W", 64), (16, 16, 3, 3)], {"B": 2, "H": 8, "W": 24}),
             (ast_node(pd.ASSA, 4, num_heads=2, scale=0.3), [("Bw", 64, 32), ("Bw", 64, 64), (2, 64, 64), (2,)],
              {"Bw": 7}),
             (ast_node(pd.ASSA_SHIFTED, 5, num_heads=2, scale=0.3),
              [("Bw", 64, 32), ("Bw", 64, 64), (2, 64, 64), (2,), ("nW", 64)], {"Bw": 8, "nW": 4})]
    for node, shapes, env in cases:
        _, plugin = trt_qdp.create(trt, node)
        b = trt_qdp.Builder(trt, plugin, [D.FLOAT] * len(shapes), shapes)
        b.output_types()
        x = shapes[0]
        assert b.out_shapes(env) == [tuple(env.get(d, d) for d in x)]
        offered = b.format_combinations(env)
        assert all(f == trt.TensorFormat.LINEAR for combo in offered for _, f in combo)
        got = sorted(tuple(names[t] for t, _ in combo) for combo in offered)
        assert got == sorted(map(tuple, pd.expand_combinations(pd.type_combinations(node.op_type)[0])))
        for combo in offered:  # every offered combination configures, with TensorRT's default tactic only
            assert b.configure([t for t, _ in combo], env) == []
        with pytest.raises(AssertionError):  # a combination that was not offered
            b.configure([D.INT32] * (len(shapes) + 1), env)


def test_real_qdp_launch_parameters_follow_the_rules(qdp, monkeypatch):
    """get_launch_params -> aot_impl with symbolic dims; the kernel itself is compiled in the
    end-to-end test below (Triton runs this process interpreted)."""
    from ast_deploy.engines import trt_plugins
    from ast_deploy.ops.ptx import CompiledKernel

    _, trt, _ = qdp
    D = trt.DataType
    compiled = []

    def kernel(spec):
        compiled.append(spec)
        return CompiledKernel(spec.kernel_name(), f".entry {spec.kernel_name()}(", 90, 128, 4096)

    monkeypatch.setattr(trt_plugins, "_kernel", kernel)
    _, plugin = trt_qdp.create(trt, ast_node(pd.PARTIAL_CONV, 2))
    b = trt_qdp.Builder(trt, plugin, [D.HALF, D.FLOAT], [("B", "H", "W", 64), (16, 16, 3, 3)])
    b.output_types()
    env = {"B": 2, "H": 30, "W": 50}
    name, ptx, launch, scalars, scalar_types = b.launch([D.HALF, D.FLOAT, D.HALF], env)
    spec = compiled[-1]
    assert spec == PartialConvSpec(64, 16, "fp16", "fp32") and name == spec.kernel_name()
    assert ptx == f".entry {name}(".encode()  # get_kernel hands TensorRT bytes
    grid, expected = pd.partial_conv_launch(spec, 2, 30, 50)
    assert (launch["grid_x"], launch["grid_y"], launch["grid_z"]) == grid == (47, 1, 1)
    assert (launch["block_x"], launch["shared_mem"]) == (128, 4096)
    assert scalars == expected == [3000, 30, 50] and scalar_types == ["INT32"] * 3

    _, plugin = trt_qdp.create(trt, ast_node(pd.ASSA_SHIFTED, 5, num_heads=2, scale=0.3))
    shapes = [("Bw", 64, 32), ("Bw", 64, 64), (2, 64, 64), (2,), ("nW", 64)]
    b = trt_qdp.Builder(trt, plugin, [D.HALF, D.HALF, D.FLOAT, D.FLOAT, D.INT32], shapes)
    b.output_types()
    _, _, launch, scalars, _ = b.launch([D.HALF, D.HALF, D.FLOAT, D.FLOAT, D.INT32, D.HALF], {"Bw": 24, "nW": 6})
    assert compiled[-1] == AssaSpec(64, 32, 2, float(np.float32(0.3)), "fp16", "fp32", "fp32", "i32")
    assert (launch["grid_x"], launch["grid_y"], launch["grid_z"]) == (24, 2, 1) and scalars == [6]

    _, plugin = trt_qdp.create(trt, ast_node(pd.ASSA, 4, num_heads=2, scale=0.3))
    b = trt_qdp.Builder(trt, plugin, [D.FLOAT] * 4, shapes[:4])
    b.output_types()
    _, _, launch, scalars, _ = b.launch([D.FLOAT] * 5, {"Bw": 24})
    assert compiled[-1].region_dtype is None and scalars == [1] and launch["grid_x"] == 24


def test_real_qdp_builtin_int_attributes_break_on_older_tensorrt_with_numpy_2_4(qdp):
    """Why the attributes are arrays: NVIDIA's 10.9..11.1 ``create_plugin`` does ``int(f.data)``."""
    version, trt, trtp = qdp

    @trtp.register("asttest::IntAttr")
    def desc(x: trtp.TensorDesc, n: int) -> trtp.TensorDesc:
        return x.like()

    @trtp.aot_impl("asttest::IntAttr")
    def aot(x: trtp.TensorDesc, n: int, outputs: typing.Tuple[trtp.TensorDesc], tactic: int) -> typing.Tuple[
            typing.Union[str, bytes], typing.Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        raise AssertionError

    creator = trt.get_plugin_registry().get_creator("IntAttr", "1", "asttest")
    fc = trt.PluginFieldCollection(trt_qdp.onnx_fields(trt, creator, helper.make_node("IntAttr", ["x"], ["y"], n=3)))
    numpy_breaks = tuple(int(p) for p in np.__version__.split(".")[:2]) >= (2, 4)
    fixed = tuple(int(p) for p in version.split(".")[:2]) >= (11, 4)
    create = lambda: creator.create_plugin("IntAttr", "asttest", fc, trt.TensorRTPhase.BUILD,  # noqa: E731
                                           trt.QuickPluginCreationRequest.STRICT_AOT)
    if numpy_breaks and not fixed:
        with pytest.raises(TypeError):
            create()
    else:
        assert create().attrs == {"n": 3}


def test_numpy_is_the_one_a_fresh_install_resolves():
    """The real-QDP tests above matter under NumPy >= 2.4: the project's NumPy range must let a fresh
    install resolve it (conventions: nothing pins NumPy below 2), and this environment must be one."""
    import re

    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    ranges = [Requirement(r).specifier for r in re.findall(r'"(numpy[^"]*)"', pyproject)]
    assert ranges, "no NumPy requirement found in pyproject.toml"
    for spec in ranges:
        assert spec.contains(Version("2.4.0")), f"pyproject.toml keeps NumPy out of 2.4: {spec}"
        assert spec.contains(Version(np.__version__)), f"NumPy {np.__version__} is outside the project's {spec}"
    if Version(np.__version__) < Version("2.4"):
        pytest.skip(f"NumPy {np.__version__} here: the int(f.data) hazard needs >= 2.4 to show")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """The product's own custom-op ONNX of the small test model (dynamic batch, H, W)."""
    from ast_deploy.export import export_onnx
    from ast_deploy.model import AST

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qdp") / "tiny.onnx"
    torch.set_num_threads(2)
    export_onnx(AST(**TINY_CONFIG).eval(), path)
    return path


@pytest.mark.parametrize("version", trt_qdp.VERSIONS)
def test_real_qdp_builds_every_plugin_of_the_exported_model_with_real_ptx(version, tiny_onnx, tmp_path):
    """The exported nodes' own attributes, through NVIDIA's QDP code, to PTX for sm_90 (named: no GPU
    here) that ptxas accepts, with the launch TensorRT would use. Own process: Triton compiles there."""
    import onnx

    from ast_deploy.ops.ptx import assemble, entry_params

    try:
        trt_qdp.plugin_package(version)
    except trt_qdp.Unavailable as e:
        pytest.skip(str(e))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(AST_PTX_ARCH="90", AST_PTX_VERSION="84", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    out = tmp_path / "qdp.json"
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "trt_qdp.py"), version, str(tiny_onnx), str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == {pd.ASSA, pd.ASSA_SHIFTED, pd.PARTIAL_CONV}
    model = onnx.load(str(tiny_onnx))
    for op, r in results.items():
        assert r["attrs"]["aot"] == 1 and r["attrs"]["plugin_namespace"] == "ast"
        ptx = r["ptx"]
        assert f"\n.target sm_90a\n" in ptx and "\n.version 8.4\n" in ptx
        assert f".visible .entry {r['name']}(" in ptx
        if op == pd.PARTIAL_CONV:
            c, cp = r["shapes"][0][3], r["shapes"][1][0]
            spec = PartialConvSpec(c, cp, "fp16", "fp32")
            e = r["env"]
            grid, scalars = pd.partial_conv_launch(spec, e["B"], e["H"], e["W"])
        else:
            heads, scale = r["attrs"]["num_heads"], r["attrs"]["scale"]
            n, c = r["shapes"][0][1:]
            spec = AssaSpec(n, c, heads, float(np.float32(scale)), "fp16", "fp32", "fp32",
                            "fp32" if op == pd.ASSA_SHIFTED else None)
            grid, scalars = pd.assa_launch(spec, r["env"]["Bw"], r["env"]["nW"])
        assert r["name"] == spec.kernel_name()
        assert len(entry_params(ptx, r["name"])) == len(spec.runtime_params())
        assert [r["launch"][k] for k in ("grid_x", "grid_y", "grid_z")] == list(grid)
        assert r["launch"]["block_x"] == 128 and r["scalars"] == scalars
        assert any(n.op_type == op for n in model.graph.node)
    assemble(results[pd.PARTIAL_CONV]["ptx"], 90)  # the embedded PTX is valid for the named GPU



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
        make = trtp.op.ast.AdaptiveSparseAttentionShifted(*t, num_heads=np.array([heads], np.int32),
                                                          scale=np.array([d ** -0.5], np.float32))
        return network.add_plugin_v3(*make(trt.QuickPluginCreationRequest.STRICT_AOT))

    out = _run_plugin_engine(assa_layer, dict(q=q, kv=kv, bias=bias, mix=mix, region_ids=ids), q.shape, dtype)
    ref = assa_reference(q.float(), kv.float(), bias, mix, ids, num_heads=heads, scale=float(np.float32(d ** -0.5)))
    assert ((out.float() - ref).abs().max() / ref.abs().max()) < tol

    x = torch.randn(2, 32, 48, 64, generator=g).to(dtype).cuda()
    w = (torch.randn(16, 16, 3, 3, generator=g) * 0.1).to(dtype).cuda()

    def conv_layer(network, t):
        make = trtp.op.ast.PartialConv(*t)
        return network.add_plugin_v3(*make(trt.QuickPluginCreationRequest.STRICT_AOT))

    y = _run_plugin_engine(conv_layer, dict(x=x, weight=w), x.shape, dtype)
    ref = partial_conv_reference(x.float(), w.float())
    assert ((y.float() - ref).abs().max() / ref.abs().max()) < tol


def test_aot_attribute_is_a_defaulted_function_attribute_onnx_runtime_accepts():
    """Issue 12, point 4: the custom nodes carry aot=1 (onnx-tensorrt: STRICT_AOT); the local
    function declares it with a default, so the checker and ONNX Runtime accept nodes with and
    without it and compute the same function."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from ast_deploy.export.custom_nodes import PARTIAL_CONV_OP, attach_functions
    from ast_deploy.ops.partial_conv import partial_conv_reference

    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(1, 8, 12, 16, generator=g), torch.randn(4, 4, 3, 3, generator=g)
    outs = []
    for attrs in (ATTRS, {k: v for k, v in ATTRS.items() if k != "aot"}):
        node = helper.make_node(PARTIAL_CONV_OP, ["x", "weight"], ["y"], domain="ast", **attrs)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 16]),
                                                helper.make_tensor_value_info("weight", TensorProto.FLOAT, [4, 4, 3, 3])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 12, 16])])
        model = attach_functions(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
        (fn,) = model.functions
        assert {a.name: helper.get_attribute_value(a) for a in fn.attribute_proto}["aot"] == 1
        onnx.checker.check_model(model, full_check=True)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {"x": x.numpy(), "weight": w.numpy()})[0])
    ref = partial_conv_reference(x, w).numpy()
    assert np.abs(outs[0] - ref).max() < 1e-5 and np.array_equal(outs[0], outs[1])
