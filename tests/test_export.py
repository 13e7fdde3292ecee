"""ONNX export: custom nodes and their local functions, graph hygiene, parity with PyTorch and with
the official implementation's outputs. Exports are shared per module (each costs tens of seconds)."""

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from ast_deploy.checks import validate_onnx
from ast_deploy.checks.report import export_table, write_json
from ast_deploy.export import (ASSA_OP, ASSA_SHIFTED_OP, DOMAIN, PARTIAL_CONV_OP, attach_functions, export_onnx,
                               load_recipe)
from ast_deploy.recipes import RecipeError
from ast_deploy.model import AST
from ast_deploy.model.ast import PartialConv, WindowAttentionSparse, shift_region_ids
from ast_deploy.ops import assa_reference, partial_conv_reference

from conftest import TINY_CONFIG, randomize_


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------------
# Function bodies on their own: one custom node + attach_functions, against the PyTorch reference
# ------------------------------------------------------------------------------------------------

def _single_node_model(op_type, inputs, attrs, opset=20):
    vis = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)) for name, arr in inputs.items()]
    node = helper.make_node(op_type, list(inputs), ["out"], domain=DOMAIN, **attrs)
    out_shape = list(next(iter(inputs.values())).shape)  # the output has the first input's shape
    graph = helper.make_graph([node], "single", vis, [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)])
    return attach_functions(model)


def _run_model(model, inputs):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.numpy() for k, v in inputs.items()})[0]


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("num_heads,head_dim,batch", [(1, 8, 1), (4, 6, 2)])
@pytest.mark.parametrize("opset", [17, 20])
def test_assa_function_matches_reference(shifted, num_heads, head_dim, batch, opset):
    g = torch.Generator().manual_seed(num_heads * 10 + batch)
    h, w, win = 16, 24, 4
    n_windows = (h // win) * (w // win)
    tokens, channels = win * win, num_heads * head_dim
    inputs = {
        "q": torch.randn(batch * n_windows, tokens, channels, generator=g),
        "kv": torch.randn(batch * n_windows, tokens, 2 * channels, generator=g),
        "bias": torch.randn(num_heads, tokens, tokens, generator=g),
        "mix": torch.softmax(torch.randn(2, generator=g), 0),
    }
    if shifted:
        inputs["region_ids"] = shift_region_ids(h, w, win, win // 2)
    scale = head_dim ** -0.5
    op = ASSA_SHIFTED_OP if shifted else ASSA_OP
    model = _single_node_model(op, inputs, dict(num_heads=num_heads, scale=scale, plugin_namespace="ast",
                                                plugin_version="1"), opset)
    onnx.checker.check_model(model, full_check=True)
    expected = assa_reference(*inputs.values(), num_heads=num_heads, scale=scale)
    assert rel_err(_run_model(model, inputs), expected) < 1e-5


def test_shifted_mask_really_applies():
    """The shifted variant must differ from the plain one where regions differ (catches a body that
    ignores region_ids)."""
    g = torch.Generator().manual_seed(3)
    inputs = {"q": torch.randn(6, 16, 8, generator=g), "kv": torch.randn(6, 16, 16, generator=g),
              "bias": torch.zeros(2, 16, 16), "mix": torch.tensor([0.5, 0.5]),
              "region_ids": shift_region_ids(8, 12, 4, 2)}
    attrs = dict(num_heads=2, scale=0.5)
    shifted = _run_model(_single_node_model(ASSA_SHIFTED_OP, inputs, attrs), inputs)
    plain_inputs = {k: v for k, v in inputs.items() if k != "region_ids"}
    plain = _run_model(_single_node_model(ASSA_OP, plain_inputs, attrs), plain_inputs)
    assert rel_err(shifted, plain) > 1e-2
    assert rel_err(shifted, assa_reference(*inputs.values(), num_heads=2, scale=0.5)) < 1e-5


def test_attach_functions_refuses_name_clashes():
    inputs = {"ast_pconv_x": torch.zeros(1, 4, 4, 8), "weight": torch.zeros(2, 2, 3, 3)}
    with pytest.raises(ValueError, match="clash"):
        _single_node_model(PARTIAL_CONV_OP, inputs, {})


@pytest.mark.parametrize("channels,batch", [(8, 1), (32, 2)])
def test_partial_conv_function_matches_reference(channels, batch):
    g = torch.Generator().manual_seed(channels)
    inputs = {"x": torch.randn(batch, 8, 16, channels, generator=g),
              "weight": torch.randn(channels // 4, channels // 4, 3, 3, generator=g)}
    model = _single_node_model(PARTIAL_CONV_OP, inputs, dict(plugin_namespace="ast", plugin_version="1"))
    onnx.checker.check_model(model, full_check=True)
    assert rel_err(_run_model(model, inputs), partial_conv_reference(*inputs.values())) < 1e-5


# ------------------------------------------------------------------------------------------------
# The tiny model (every feature of AST-B, shifted windows included), exported once with dynamic axes
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return randomize_(AST(**TINY_CONFIG)).eval()


@pytest.fixture(scope="module")
def tiny_export(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    result = export_onnx(tiny, path)
    return result, onnx.load(str(path))


@pytest.mark.parametrize("shape", [(1, 3, 128, 128), (2, 3, 256, 128), (2, 3, 128, 384), (1, 3, 256, 256)])
def test_tiny_parity_dynamic_sizes(tiny, tiny_export, shape):
    result, _ = tiny_export
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        expected = tiny(x).numpy()
    out = session(result.path).run(None, {"input": x.numpy()})[0]
    assert out.shape == shape
    assert rel_err(out, expected) < 1e-4


def test_tiny_graph_interface(tiny_export):
    result, model = tiny_export
    assert result.dynamic and result.custom_ops
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "output")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == dims
    assert {o.domain: o.version for o in model.opset_import}[""] >= 17


def test_tiny_custom_nodes_and_attributes(tiny, tiny_export):
    _, model = tiny_export
    nodes = [n for n in model.graph.node if n.domain == DOMAIN]
    by_type = collections.Counter(n.op_type for n in nodes)
    attn = [m for m in tiny.modules() if isinstance(m, WindowAttentionSparse)]
    shifted_blocks = sum(1 for m in tiny.modules() if getattr(m, "shift_size", 0) > 0 and getattr(m, "att", False))
    assert by_type[ASSA_OP] + by_type[ASSA_SHIFTED_OP] == len(attn)
    assert by_type[ASSA_SHIFTED_OP] == shifted_blocks > 0
    assert by_type[PARTIAL_CONV_OP] == sum(1 for m in tiny.modules() if isinstance(m, PartialConv))
    heads = sorted(a.num_heads for a in attn)
    seen_heads = []
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_namespace"] == b"ast" and attrs["plugin_version"] == b"1"
        if node.op_type == PARTIAL_CONV_OP:
            assert len(node.input) == 2
            continue
        assert len(node.input) == (5 if node.op_type == ASSA_SHIFTED_OP else 4)
        assert all(node.input)  # no empty optional inputs
        seen_heads.append(attrs["num_heads"])
        dim = next(a.dim for a in attn if a.num_heads == attrs["num_heads"])
        assert attrs["scale"] == pytest.approx((dim // attrs["num_heads"]) ** -0.5, rel=1e-6)
    assert sorted(seen_heads) == heads


def test_tiny_local_functions(tiny_export):
    _, model = tiny_export
    functions = {(f.domain, f.name): f for f in model.functions}
    assert set(functions) == {(DOMAIN, ASSA_OP), (DOMAIN, ASSA_SHIFTED_OP), (DOMAIN, PARTIAL_CONV_OP)}
    for (_, name), f in functions.items():
        assert f.node and not any(n.domain == DOMAIN for n in f.node)  # plain standard ops inside
        if name != PARTIAL_CONV_OP:
            assert set(f.attribute) == {"num_heads", "scale"}
            refs = {a.ref_attr_name for n in f.node for a in n.attribute if a.ref_attr_name}
            assert refs == {"num_heads", "scale"}
    assert {o.domain for o in model.opset_import} >= {"", DOMAIN}


def test_tiny_graph_is_clean(tiny_export):
    result, model = tiny_export
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node} | {n.op_type for f in model.functions for n in f.node}
    assert not ops & {"ScatterND", "NonZero", "Loop", "If"}
    assert "LayerNormalization" in ops
    assert result.stats.nodes == len(model.graph.node)
    assert len(model.graph.node) < 800
    assert not [p for p in result.path.parent.iterdir() if p.name != result.path.name]  # no temp files left


def _scaled_output(exported, factor):
    """A copy of ``exported`` whose output is multiplied by ``factor``: a wrong model that still runs."""
    model = onnx.ModelProto()
    model.CopyFrom(exported)
    out_name = model.graph.output[0].name
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == out_name:
                node.output[i] = "unperturbed"
    model.graph.initializer.append(helper.make_tensor("scale", TensorProto.FLOAT, [], [factor]))
    model.graph.node.append(helper.make_node("Mul", ["unperturbed", "scale"], [out_name]))
    return model


def test_tiny_validation_report_can_fail(tiny, tiny_export, tmp_path):
    """validate_onnx passes the real export and fails a model whose output was perturbed."""
    result, exported = tiny_export
    model = onnx.ModelProto()
    model.CopyFrom(exported)
    recipe = load_recipe("derain")
    shapes = [(2, 3, 128, 256), (1, 3, 128, 128)]
    report = validate_onnx(tiny, result.path, shapes, recipe.tolerance("fp32"))
    assert report.passed and [c.shape for c in report.cases] == shapes
    # float rounding only: 130 dB and a relative error of 7e-7 measured (data range 1)
    assert all(c.parity["rel"] < 5e-6 and c.parity["psnr"] > 115 for c in report.cases), export_table(report)
    assert all(c.seconds["reference"] > 0 and c.seconds["candidate"] > 0 for c in report.cases)
    table = export_table(report)
    assert table.splitlines()[0].split()[:3] == ["input", "(NCHW)", "max"] and "2x3x128x256" in table
    assert table.splitlines()[-1].endswith("PASS")

    bad = tmp_path / "perturbed.onnx"
    onnx.save(_scaled_output(model, 1.01), str(bad))
    report = validate_onnx(tiny, bad, shapes, recipe.tolerance("fp32"))
    assert not report.passed and all(not c.passed for c in report.cases)
    saved = json.loads(write_json(report, tmp_path / "r.json").read_text())
    assert saved["passed"] is False and len(saved["cases"]) == 2


def _hand_psnr(a, b):  # the convention's PSNR written out here: data range 1, unclipped
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def test_export_validation_and_ast_check_share_one_psnr(tiny, tiny_export, tmp_path, capsys):
    """One PSNR definition: ast-export's validation (check_onnx, what validate_onnx runs) and ast-check
    report the same number for the same pair, equal to 10 log10(1 / MSE) computed here; an ONNX whose
    output is scaled by 1.01 fails both."""
    from ast_deploy.checks.cases import synthetic_cases
    from ast_deploy.checks.export_check import check_onnx
    from ast_deploy.cli import check as ast_check

    result, exported = tiny_export
    checkpoint = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), checkpoint)
    bad = tmp_path / "perturbed.onnx"
    onnx.save(_scaled_output(exported, 1.01), str(bad))
    tolerance = load_recipe("derain").tolerance("fp32")
    for onnx_path, good in ((result.path, True), (bad, False)):
        cases = synthetic_cases([(128, 256)], seed=5)
        exported_report = check_onnx(tiny, onnx_path, cases, tolerance)
        json_path = tmp_path / f"{onnx_path.stem}.json"
        code = ast_check.main([str(checkpoint), str(onnx_path), "--config", json.dumps(TINY_CONFIG), "--protocol",
                               "pad:128", "--size-multiple", str(tiny.size_multiple), "--max-memory", "unlimited",
                               "--sizes", "128x256", "--seed", "5", "--report", str(json_path)])
        capsys.readouterr()
        checked_report = json.loads(json_path.read_text())
        assert checked_report["extra"]["tolerance_from"].startswith("defaults")  # no --task: no recipe
        (checked,) = checked_report["cases"]
        with torch.no_grad():
            want = tiny(torch.from_numpy(cases[0].image)).numpy()
        got = session(onnx_path).run(None, {"input": cases[0].image})[0]
        (case,) = exported_report.cases
        assert case.parity["psnr"] == pytest.approx(_hand_psnr(got, want), abs=1e-6)
        assert float(checked["parity"]["psnr"]) == pytest.approx(case.parity["psnr"], abs=1e-6)
        assert exported_report.passed is good and (code == 0) is good, (case.failures, checked["failures"])
        if not good:
            assert "PSNR" in case.failures[0] and any("PSNR" in f for f in checked["failures"])


def test_ops_impl_restored_after_export(tiny, tiny_export):
    assert {m.ops_impl for m in tiny.modules() if hasattr(m, "ops_impl")} == {"reference"}


def test_exporter_optimizer_skips_slices_split_and_is_restored(tiny_export):
    """The exporter's optimizer runs without onnxscript's quadratic SlicesSplit rule during an
    export only: after it (and after the context) the library's rule list is as it was."""
    from onnxscript import rewriter
    from onnxscript.rewriter.rules.common import slice_split_rule

    from ast_deploy.export.onnx_export import _without_slices_split

    before = rewriter._DEFAULT_REWRITE_RULES
    assert slice_split_rule in before
    with _without_slices_split():
        inside = rewriter._DEFAULT_REWRITE_RULES
        assert slice_split_rule not in inside and len(inside) == len(before) - 1
    assert rewriter._DEFAULT_REWRITE_RULES is before


# ------------------------------------------------------------------------------------------------
# The official implementation's outputs, through ONNX Runtime
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parity_export(parity_model, tmp_path_factory):
    """Exported at the lowest supported opset (17: no Gelu op, LayerNormalization still one node)."""
    path = tmp_path_factory.mktemp("parity") / "parity.onnx"
    export_onnx(parity_model, path, opset=17)
    return path


def test_opset_17_export(parity_export, parity_model):
    model = onnx.load(str(parity_export))
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    assert all(f.opset_import[0].version == 17 for f in model.functions)
    layer_norms = sum(isinstance(m, torch.nn.LayerNorm) for m in parity_model.modules())
    assert sum(n.op_type == "LayerNormalization" for n in model.graph.node) == layer_norms


@pytest.mark.parametrize("case", ["forward0", "forward1"])
def test_onnx_matches_official_outputs(parity_export, parity_cases, case):
    x = parity_cases[f"{case}_in"].astype(np.float32) / 255.0
    out = session(parity_export).run(None, {"input": x})[0]
    assert rel_err(out, parity_cases[f"{case}_out"]) < 1e-4


# ------------------------------------------------------------------------------------------------
# Cheap argument and recipe checks
# ------------------------------------------------------------------------------------------------

def test_export_rejects_bad_arguments(tmp_path):
    with torch.device("meta"):
        model = AST(**TINY_CONFIG)
    with pytest.raises(ValueError, match="multiples of 128"):
        export_onnx(model, tmp_path / "x.onnx", shape=(128, 200))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "x.onnx", opset=16)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("task", ["derain", "deraindrop", "dehaze"])
def test_recipes_load(task):
    from ast_deploy.tasks import TASKS

    recipe = load_recipe(task)
    assert recipe.task is TASKS[task]
    assert recipe.tolerance("fp32").psnr_min >= 60 and recipe.tolerance("fp16").psnr_min >= 45
    assert recipe.tolerance("int8").psnr_min >= 35
    assert any(h != w for h, w in recipe.validation_sizes) and len(recipe.validation_sizes) >= 2
    recipe.check_size_multiple(128)


@pytest.mark.parametrize("text,match", [
    ('task = "dehaze"', "is for task"),
    ('task = "derain"\narchitecture = "AST_B"', "unknown keys"),
    ('task = "derain"\n[profile]\nmin = [1, 3, 128]', "4 positive integers"),
    ('task = "derain"\n[profile]\nmin=[1,3,256,256]\nopt=[1,3,128,128]\nmax=[1,3,512,512]', "min <= opt <= max"),
    ('task = "derain"\n[profile]\nmin=[1,3,128,128]\nopt=[1,3,128,128]\nmax=[1,3,128,128]\n'
     '[validation]\nsizes=[[128,128],[256,256]]', "non-square"),
    ('task = "derain"\n[profile]\nmin=[1,3,128,128]\nopt=[1,3,128,128]\nmax=[1,3,128,128]\n'
     '[validation]\nsizes=[[128,128],[128,256]]\n[tolerance.fp64]\npsnr_db=1\nmax_rel=1', "unknown precision"),
    ('task = "derain"\n[profile]\nmin=[1,3,128,128]\nopt=[1,3,128,128]\nmax=[1,3,128,128]\n'
     '[validation]\nsizes=[[128,128],[128,256]]', r"\[tolerance.fp32\]"),
    ("task = [", "not valid TOML"),
])
def test_bad_recipes_are_explained(tmp_path, text, match):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=match):
        load_recipe("derain", path)


def test_missing_recipe_is_explained(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe("derain", tmp_path / "nope.toml")


# ------------------------------------------------------------------------------------------------
# Full AST-B (slow)
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ast_b_export(tmp_path):
    from ast_deploy.model import AST_B

    torch.manual_seed(0)
    model = AST(**AST_B).eval()
    result = export_onnx(model, tmp_path / "ast_b.onnx")
    assert result.stats.nodes < 3000
    report = validate_onnx(model, result.path, [(2, 3, 256, 256), (1, 3, 128, 384)],
                           load_recipe("derain").tolerance("fp32"))
    assert report.passed, export_table(report)


# ------------------------------------------------------------------------------------------------
# Graph rewrites
# ------------------------------------------------------------------------------------------------

def test_split_gated_linear_is_exact_and_removes_the_split():
    from ast_deploy.export.fusions import split_gated_linear

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((8, 12)).astype(np.float32), rng.standard_normal(12).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["a"]),
             helper.make_node("Gelu", ["a"], ["g"]), helper.make_node("Split", ["g"], ["g0", "g1"], axis=3, num_outputs=2),
             helper.make_node("Mul", ["g0", "g1"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 6])],
                              [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))
    x = rng.standard_normal((1, 2, 3, 8)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert split_gated_linear(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node].count("Split") == 0
    assert {t.name for t in model.graph.initializer} == {n.input[1] for n in model.graph.node if n.op_type in ("MatMul", "Add")}
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(after, before)


def test_tiny_frfn_splits_were_rewritten(tiny, tiny_export):
    from ast_deploy.model.ast import FRFN

    _, model = tiny_export
    producers = {o: n for n in model.graph.node for o in n.output}
    assert not [n for n in model.graph.node if n.op_type == "Split" and producers[n.input[0]].op_type == "Gelu"]
    frfn = sum(isinstance(m, FRFN) for m in tiny.modules())
    assert sum(n.op_type == "Gelu" for n in model.graph.node) == 3 * frfn  # gate, value, depth-wise conv
