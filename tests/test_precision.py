"""FP16 / INT8 conversion of the exported demo model, checked in onnxruntime."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

pytest.importorskip("skimage")

from ast_deploy.precision.calibration import (CalibrationError, default_calibration_folder,  # noqa: E402
                                              load_calibration)

from ast_deploy.export import load_recipe  # noqa: E402

# dB vs the FP32 model on the worst held-out image: the derain recipe's budgets.
FP16_MIN_PSNR = load_recipe("derain").tolerance("fp16").psnr_min
INT8_MIN_PSNR = load_recipe("derain").tolerance("int8").psnr_min
MAX_CLEAN_DROP = 0.3  # dB of PSNR vs the clean image lost by INT8


@pytest.fixture(scope="session")
def work(demo_work):
    return demo_work


@pytest.fixture(scope="session", autouse=True)
def _private_cache(private_cache):
    """Every test here calibrates with the session's private calibration cache (see conftest)."""


def custom_nodes(model):
    return sorted((n.domain, n.op_type) for n in model.graph.node if n.domain == "ast")


def run(path, image):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0]


def psnr_db(a, b, clip=False):
    """PSNR with a data range of 1, computed here, not by the code: of the raw outputs (candidate vs
    reference, as the parity convention says), or clipped as a viewer sees them (vs the clean image)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if clip:
        a, b = np.clip(a, 0, 1), np.clip(b, 0, 1)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def measured(candidate, reference, cases):
    """Per held-out pair: PSNR of candidate vs reference, candidate vs clean, reference vs clean,
    rainy input vs clean; both models run in onnxruntime here."""
    rows = []
    for case in cases:
        ref, out = run(reference, case.image), run(candidate, case.image)
        assert np.isfinite(out).all(), case.name
        rows.append((psnr_db(out, ref), psnr_db(out, case.target, clip=True), psnr_db(ref, case.target, clip=True),
                     psnr_db(case.image, case.target, clip=True)))
    return np.array(rows)


# -- calibration folder ----------------------------------------------------------------------

def test_missing_calibration_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "nowhere", 64)


def test_empty_calibration_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(CalibrationError, match="holds no images"):
        load_calibration(tmp_path, 64)


def test_unreadable_calibration_image_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(CalibrationError, match="broken.png"):
        load_calibration(tmp_path, 64)


def test_calibration_batches_fit_the_model(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((70, 150, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "b.jpg")
    cal = load_calibration(tmp_path, 64)
    assert [b.shape for b in cal.batches] == [(1, 3, 64, 128), (1, 3, 64, 64)]
    assert cal.batches[0].dtype == np.float32
    assert load_calibration(tmp_path, 64).key == cal.key
    Image.fromarray(np.ones((70, 150, 3), np.uint8)).save(tmp_path / "a.png")
    assert load_calibration(tmp_path, 64).key != cal.key  # the key follows the pixels


# -- FP16 ------------------------------------------------------------------------------------

def test_fp16_model_is_valid_runs_and_keeps_custom_nodes(demo_onnx, fp16):
    path, report = fp16
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    reference = onnx.load(str(demo_onnx))
    assert custom_nodes(model) == custom_nodes(reference) and custom_nodes(model)
    assert {f.name for f in model.functions} == {f.name for f in reference.functions}
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    # Really FP16: most weights are stored in half precision and most nodes converted.
    kinds = [t.data_type for t in model.graph.initializer if t.data_type in (1, 10)]
    assert kinds.count(onnx.TensorProto.FLOAT16) > 3 * kinds.count(onnx.TensorProto.FLOAT)
    assert report["nodes"]["fp16"] > 5 * report["nodes"]["fp32"]
    assert all(r["reason"] for r in report["kept_fp32"])
    assert report["custom_nodes"] and all(v["fp16"] > 0 for v in report["custom_nodes"].values())


def test_fp16_meets_its_budget_on_held_out_pairs(demo_onnx, fp16, cases):
    path, report = fp16
    rows = measured(path, demo_onnx, cases)
    assert rows[:, 0].min() >= FP16_MIN_PSNR, rows
    assert abs(rows[:, 1].mean() - rows[:, 2].mean()) < 0.05, rows
    assert report["validation"]["min_psnr_vs_fp32"] == pytest.approx(rows[:, 0].min(), abs=0.1)  # the report is right
    assert report["overflow"]["ok"] and not report["overflow"]["overflow"]


def plant_overflow(model, factor):
    """Scale the to_q projection (MatMul weight and bias) feeding the first attention node, and give
    that node mixing weights (w1, w2) = (1, 1e-12): the squared-ReLU branch overflows FP16 inside the
    function body while the node's inputs and output stay in range (only the body's ranges can tell)."""
    from ast_deploy.precision.graph import tensor_producers

    init = {t.name: t for t in model.graph.initializer}
    producers = tensor_producers(model.graph)
    attention = next(n for n in model.graph.node if n.domain == "ast" and "Attention" in n.op_type)
    node, scaled = producers[attention.input[0]], []
    while True:
        scaled += [name for name in node.input if name in init]
        if node.op_type in ("MatMul", "Gemm"):
            break
        node = producers[next(name for name in node.input if name not in init)]
    for name in scaled:
        init[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init[name]) * np.float32(factor), name))
    mix = f"{attention.name}_planted_mix"
    model.graph.initializer.append(numpy_helper.from_array(np.array([1.0, 1e-12], np.float32), mix))
    attention.input[3] = mix
    return attention.name


def test_planted_overflow_is_caught_and_kept_fp32(demo_onnx, calib, cases, work):
    from ast_deploy.precision.fp16 import convert_fp16
    from ast_deploy.precision.overflow import fp16_overflow_report
    from ast_deploy.precision.ranges import collect_ranges, load_model
    from ast_deploy.precision.validate import folder_cases

    model = load_model(demo_onnx)
    target = plant_overflow(model, 300.0)
    ranges = collect_ranges(model, calib)
    inside = ranges.internal(target)
    assert max(inside.values()) > 65504, "the plant did not push the squared ReLU past FP16"

    report = fp16_overflow_report(model, ranges)
    flagged = {i["node"] for i in report["overflow"]}
    assert target in flagged and any(i["inside_function"] for i in report["overflow"])
    assert not report["ok"]  # without a conversion plan every overflow is unsafe

    converted = convert_fp16(model, work / "planted_fp16.onnx", calib, validate=cases[:1])
    kept = {d["name"]: d["reason"] for d in converted["kept_fp32"]}
    # kept for what happens inside its function body (the squared ReLU), not for its inputs or output
    assert target in kept and "range" in kept[target] and "inside the function body" in kept[target], kept.get(target)
    assert converted["overflow"]["ok"]
    assert converted["validation"]["all_finite"]

    # The same model forced to FP16 everywhere: the overflow report names the node. (ONNX Runtime's CPU
    # provider runs the body's element-wise ops in FP32 behind Casts, so its outputs stay finite here:
    # the report from the calibrated ranges is what catches it, as on a GPU the inf would be real.)
    forced = convert_fp16(model, work / "forced_fp16.onnx", calib, threshold=float("inf"),
                          fp32_op_types=(), validate=folder_cases(calib)[:1])
    assert not forced["overflow"]["ok"] and target in {i["node"] for i in forced["overflow"]["overflow"]}
    assert {d["name"] for d in forced["kept_fp32"]}.isdisjoint({target})


# -- INT8 ------------------------------------------------------------------------------------

def test_int8_model_is_valid_runs_and_keeps_custom_nodes(demo_onnx, int8, cases):
    path, report = int8
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert custom_nodes(model) == custom_nodes(onnx.load(str(demo_onnx)))
    assert report["quantized_nodes"] == report["weighted_nodes"] - len(report["excluded_for_accuracy"]) > 0
    assert np.isfinite(run(path, cases[0].image)).all()


def test_int8_qdq_is_symmetric_and_only_on_weighted_inputs(int8):
    from ast_deploy.precision.graph import tensor_consumers

    path, _ = int8
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers = tensor_consumers(model.graph)
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert q_nodes and dq_nodes
    for node in q_nodes + dq_nodes:
        zero_point = init[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any()
    for node in dq_nodes:
        users = consumers.get(node.output[0], [])
        assert users and all(u.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") for u in users), node.name
    # TensorRT's documented placement: FP32 weights behind a Q/DQ pair, Conv weights per output channel
    # (axis 0), MatMul weights per tensor; activations per tensor
    producers = {o: n for n in model.graph.node for o in n.output}
    weight_q = [n for n in q_nodes if n.input[0] in init]
    assert weight_q and all(init[n.input[0]].dtype == np.float32 for n in weight_q)
    seen = set()
    for q in weight_q:
        (dq,) = consumers[q.output[0]]
        (user,) = consumers[dq.output[0]]
        scale = init[q.input[1]]
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        if user.op_type in ("Conv", "ConvTranspose"):
            k = 0 if user.op_type == "Conv" else 1
            assert scale.size == init[q.input[0]].shape[k] > 1 and axis == k, user.name
        else:
            assert scale.size == 1, user.name
        seen.add(user.op_type)
    assert seen == {"Conv", "ConvTranspose", "MatMul"}
    for dq in dq_nodes:  # every activation DQ is fed by its own Q of a float tensor
        assert producers[dq.input[0]].op_type == "QuantizeLinear" and init[dq.input[1]].size in (1,) or \
            producers[dq.input[0]].input[0] in init


def test_int8_meets_its_budget_on_held_out_pairs(demo_onnx, int8, cases):
    path, report = int8
    rows = measured(path, demo_onnx, cases)
    assert rows[:, 0].min() >= INT8_MIN_PSNR, rows
    assert rows[:, 2].mean() - rows[:, 1].mean() < MAX_CLEAN_DROP, rows
    assert rows[:, 1].mean() > rows[:, 3].mean() + 3.0, rows  # still clearly better than the rainy input
    assert report["budget_met"]
    assert report["validation"]["min_psnr_vs_fp32"] == pytest.approx(rows[:, 0].min(), abs=0.1)  # the report is right


def test_int8_excludes_the_most_sensitive_nodes_when_the_budget_is_missed(demo_onnx, calib, cases, work):
    from ast_deploy.precision.int8 import quantize_int8

    report = quantize_int8(demo_onnx, work / "strict_int8.onnx", calib, validate=cases[:1],
                           min_psnr=1000.0, max_excluded=2)
    assert not report["budget_met"]
    assert len(report["excluded_for_accuracy"]) == 2
    assert [a["excluded"] for a in report["attempts"]][:3] == [[], report["excluded_for_accuracy"][:1],
                                                              report["excluded_for_accuracy"]]
    model = onnx.load(str(work / "strict_int8.onnx"))
    from ast_deploy.precision.int8 import _quantized_consumers

    quantized = set(_quantized_consumers(model, ("Conv", "ConvTranspose", "MatMul", "Gemm")))
    assert not quantized & set(report["excluded_for_accuracy"])
    snr = [r["snr_db"] for r in report["excluded_sensitivity"]]
    assert snr == sorted(snr)


def test_int8_sensitivity_matches_a_planted_weight_and_the_top_node_goes_first(demo_onnx, calib, cases, work):
    """One MatMul weight is planted so that its INT8 error is known in closed form: one entry M and
    every other entry +-0.49 M/127, so under TensorRT's per-tensor MatMul scale (M/127) every other
    weight rounds to zero. Its weight SNR must be the closed-form value, the ranking must run from the
    most to the least sensitive, and the first node excluded for accuracy must be the top one."""
    from ast_deploy.precision.int8 import WEIGHTED_OP_TYPES, local_sensitivity, quantize_int8
    from ast_deploy.precision.ranges import load_model

    model = load_model(demo_onnx)
    init = {t.name: t for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in init)
    weight = numpy_helper.to_array(init[node.input[1]])
    big, step = 1.0, 1.0 / 127
    planted_weight = np.where(np.arange(weight.size).reshape(weight.shape) % 2, 0.49, -0.49).astype(np.float32) * step
    planted_weight.flat[0] = big
    init[node.input[1]].CopyFrom(numpy_helper.from_array(planted_weight, node.input[1]))
    planted = work / "planted_weight.onnx"
    onnx.save(model, str(planted))

    ranking = local_sensitivity(model, calib, WEIGHTED_OP_TYPES, "tensorrt")
    row = next(r for r in ranking if r["node"] == node.name)
    noise = (weight.size - 1) * (0.49 * step) ** 2
    expected = 10 * np.log10((noise + big ** 2) / noise)
    assert row["weight_snr_db"] == pytest.approx(expected, abs=0.05), (row, expected)
    snr = [r["snr_db"] for r in ranking]
    assert snr == sorted(snr) and snr[0] < snr[-1]

    report = quantize_int8(planted, work / "planted_weight_int8.onnx", calib, validate=cases[:1],
                           min_psnr=1000.0, max_excluded=1, use_cache=False)
    assert report["excluded_for_accuracy"] == [ranking[0]["node"]], (report["excluded_for_accuracy"], ranking[:3])


def test_int8_calibration_is_cached(demo_onnx, calib, work):
    """The cache holds the calibration images' MinMax ranges: the model input's is the images' own
    minimum and maximum, and a MatMul input's is its minimum and maximum over an ONNX Runtime run of
    the FP32 model with that tensor exposed; and a second quantization reads it (a planted range
    becomes the input's symmetric scale)."""
    import json
    from pathlib import Path

    from onnxruntime.quantization.calibrate import load_tensors_data

    from ast_deploy.precision.int8 import quantize_int8

    report = quantize_int8(demo_onnx, work / "cached_int8.onnx", calib)
    cache = Path(report["calibration"]["cache"])
    data = load_tensors_data(cache).data

    def ranges(name):
        return tuple(float(np.asarray(v).max()) for v in data[name].range_value)  # 0-d arrays here

    model = onnx.load(str(demo_onnx))
    input_name = model.graph.input[0].name
    low, high = min(float(b.min()) for b in calib.batches), max(float(b.max()) for b in calib.batches)
    assert ranges(input_name) == pytest.approx((low, high), rel=1e-6, abs=1e-7)
    absmax = max(abs(low), abs(high))

    inits = {t.name for t in model.graph.initializer}
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits)
    probe = onnx.load(str(demo_onnx))
    del probe.graph.output[:]
    probe.graph.output.extend([onnx.ValueInfoProto(name=matmul.input[0])])
    import onnxruntime as ort

    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    seen = [session.run(None, {input_name: b})[0] for b in calib.batches]
    seen = (min(float(v.min()) for v in seen), max(float(v.max()) for v in seen))
    assert seen[0] < 0 < seen[1]  # a range whose sign matters
    assert ranges(matmul.input[0]) == pytest.approx(seen, rel=1e-5, abs=1e-6)

    raw = json.loads(cache.read_text())
    raw["data"][input_name].update(lowest=-4 * absmax, highest=4 * absmax)
    cache.write_text(json.dumps(raw))
    again = quantize_int8(demo_onnx, work / "cached_int8_again.onnx", calib)
    assert again["calibration"]["cache"] == str(cache)
    quantized = onnx.load(str(work / "cached_int8_again.onnx"))
    q = next(n for n in quantized.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == input_name)
    scale = next(numpy_helper.to_array(t) for t in quantized.graph.initializer if t.name == q.input[1])
    assert float(scale) == pytest.approx(4 * absmax / 127, rel=1e-5)


# -- wiring into ast-export ------------------------------------------------------------------

def test_export_hook_writes_fp16_beside_the_fp32_model(demo_onnx, calib, work):
    import json
    import shutil

    from ast_deploy.precision.pipeline import apply_precision

    fp32 = work / "hook" / "ast-derain.onnx"
    fp32.parent.mkdir()
    shutil.copy(demo_onnx, fp32)
    path = apply_precision(fp32, "fp16", recipe=load_recipe("derain"), calib_dir=calib.folder,
                           size_multiple=calib.batches[0].shape[-1] // 2)
    assert path == fp32.with_name("ast-derain.fp16.onnx") and path.is_file()
    report = json.loads(path.with_suffix(".precision.json").read_text())
    assert report["budget_met"] and report["min_psnr_budget"] == load_recipe("derain").tolerance("fp16").psnr_min
    assert apply_precision(fp32, "fp32") == fp32


def test_cli_without_weights_uses_demo_weights_with_a_notice(capsys):
    from ast_deploy.cli.export import resolve_weights
    from ast_deploy.demo import demo_weights
    from ast_deploy.tasks import get_task

    assert resolve_weights(get_task("derain"), None, False) == demo_weights("derain")
    assert "demo weights trained on synthetic rain, not the paper's" in capsys.readouterr().err
    assert resolve_weights(get_task("derain"), None, True) is None


def test_cli_int8_end_to_end_on_demo_weights(tmp_path, capsys):
    """ast-export --int8 --calib DIR with no --weights: demo model, INT8 graph validated twice
    (against FP32 on held-out pairs, then against PyTorch by the export validation)."""
    import json
    import shutil

    from ast_deploy.cli.export import EXIT_OK, main

    import re

    recipe = tmp_path / "recipe.toml"  # the derain recipe with smaller validation images, for time
    text = load_recipe("derain").path.read_text()
    text = re.sub(r"(?m)^sizes = .*$", "sizes = [[128, 128], [128, 256]]", text)
    recipe.write_text(re.sub(r"(?m)^batch = \d+", "batch = 1", text))
    assert [tuple(s) for s in load_recipe("derain", recipe).validation_sizes] == [(128, 128), (128, 256)]
    images = tmp_path / "calib"
    shutil.copytree(default_calibration_folder(), images)
    code = main(["--task", "derain", "--int8", "--calib", str(images), "--recipe", str(recipe),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    assert "demo weights trained on synthetic rain" in err and "int8:" in err
    out = tmp_path / "out"
    model = onnx.load(str(out / "ast-derain.int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node) and custom_nodes(model)
    assert json.loads((out / "ast-derain.int8.validation.json").read_text())["passed"]
    assert json.loads((out / "ast-derain.int8.precision.json").read_text())["budget_met"]


def test_cli_int8_for_onnxruntime_writes_the_integer_kernel_pattern(tmp_path, capsys):
    """--int8-for onnxruntime: a separate <stem>.int8-ort.onnx with UINT8 activations and INT8 MatMul
    weights, no Q/DQ on the convolutions, that ONNX Runtime runs as MatMulIntegerToFloat; no TensorRT
    build is suggested for it."""
    import json
    import re
    import shutil

    import onnxruntime as ort

    from ast_deploy.cli.export import EXIT_OK, main

    recipe = tmp_path / "recipe.toml"
    text = re.sub(r"(?m)^sizes = .*$", "sizes = [[128, 128], [128, 256]]", load_recipe("derain").path.read_text())
    recipe.write_text(re.sub(r"(?m)^batch = \d+", "batch = 1", text))
    images = tmp_path / "calib"
    shutil.copytree(default_calibration_folder(), images)
    code = main(["--task", "derain", "--int8", "--int8-for", "onnxruntime", "--calib", str(images),
                 "--recipe", str(recipe), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    out = tmp_path / "out"
    path = out / "ast-derain.int8-ort.onnx"
    assert not (out / "ast-derain.int8.onnx").exists()
    assert json.loads((out / "ast-derain.int8-ort.precision.json").read_text())["placement"] == "ort"
    assert json.loads((out / "ast-derain.int8-ort.validation.json").read_text())["passed"]
    assert "ast-build" not in captured.out and "ast-restore IMAGES -o OUT --onnx" in captured.out
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in quantize)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and not any(i in producers and producers[i].op_type == "DequantizeLinear"
                             for n in convs for i in n.input)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert any(n.op_type == "MatMulIntegerToFloat" for n in optimized.graph.node)


def _conv_matmul_model(path):
    """Conv (per-channel weights) then a 3-D x 2-D MatMul (per-tensor under TensorRT's placement), with
    weights over onnx's 1 KiB external-data threshold (the size at which quantize_static used to
    rewrite a ModelProto it was given)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32), "w")
    m = numpy_helper.from_array(rng.normal(0, 0.2, (16, 16)).astype(np.float32), "m")
    shape = numpy_helper.from_array(np.array([1, 8 * 16, 16], np.int64), "shape")
    back = numpy_helper.from_array(np.array([1, 8, 16, 16], np.int64), "back")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["r"], name="reshape"),
             helper.make_node("MatMul", ["r", "m"], ["mm"], name="matmul"),
             helper.make_node("Reshape", ["mm", "back"], ["y"], name="back")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [w, m, shape, back])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_int8_exclusion_fallback_with_a_cold_calibration_cache(tmp_path):
    """Issue 12, point 8: the model reaches quantize_static as a path, so a cold cache (the first call
    computes the ranges) cannot corrupt the model the exclusion attempts quantize again."""
    from ast_deploy.precision.calibration import CalibrationSet
    from ast_deploy.precision.int8 import quantize_int8
    from ast_deploy.checks.cases import Case

    rng = np.random.default_rng(1)
    src = _conv_matmul_model(tmp_path / "m.onnx")
    before = (tmp_path / "m.onnx").read_bytes()
    batches = tuple(rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(3))
    calib = CalibrationSet(tmp_path, tuple(tmp_path / f"{i}.png" for i in range(3)), batches, f"cold-{rng.random()}")
    report = quantize_int8(src, tmp_path / "q.onnx", calib, validate=[Case("a", batches[0])], min_psnr=1000.0,
                           max_excluded=1, use_cache=False)
    assert [a["excluded"] for a in report["attempts"]] == [[], report["excluded_for_accuracy"]]
    assert len(report["excluded_for_accuracy"]) == 1 and not report["budget_met"]
    assert (tmp_path / "m.onnx").read_bytes() == before  # the input file is never touched
    model = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert not list(tmp_path.glob("*.data")) and not list(tmp_path.glob(".*.tmp"))  # nothing left beside it


def test_int8_tensorrt_placement_on_conv_and_matmul(tmp_path):
    """Q/DQ on both inputs of Conv and MatMul, FP32 weights behind Q/DQ pairs, Conv weight scales per
    output channel (axis 0), MatMul weight scale per tensor, nothing on outputs; zero points 0."""
    from ast_deploy.precision.calibration import CalibrationSet
    from ast_deploy.precision.int8 import quantize_int8

    rng = np.random.default_rng(2)
    src = _conv_matmul_model(tmp_path / "m.onnx")
    batches = tuple(rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(2))
    calib = CalibrationSet(tmp_path, (tmp_path / "a.png", tmp_path / "b.png"), batches, f"p-{rng.random()}")
    out = tmp_path / "q.onnx"
    report = quantize_int8(src, out, calib, use_cache=False)
    assert report["placement"] == "tensorrt" and report["quantized_nodes"] == 2
    model = onnx.load(str(out))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for op, weight, channels in (("Conv", "w", 8), ("MatMul", "m", 1)):
        (node,) = [n for n in model.graph.node if n.op_type == op]
        act_dq, w_dq = producer[node.input[0]], producer[node.input[1]]
        assert act_dq.op_type == w_dq.op_type == "DequantizeLinear"
        act_q, w_q = producer[act_dq.input[0]], producer[w_dq.input[0]]
        assert act_q.op_type == w_q.op_type == "QuantizeLinear"
        assert w_q.input[0] == weight and init[weight].dtype == np.float32  # a Q/DQ pair on the FP32 weight
        assert init[w_q.input[1]].size == channels and init[act_q.input[1]].size == 1
        if channels > 1:
            assert {a.name: a.i for a in w_q.attribute}.get("axis") == 0
        for q in (act_q, w_q):
            assert init[q.input[2]].dtype == np.int8 and not init[q.input[2]].any()
    assert all(producer.get(o) is None or producer[o].op_type != "QuantizeLinear" for o in ("c", "mm"))


def test_int8_ort_placement_runs_as_integer_matmul_in_onnxruntime(tmp_path):
    """The "ort" placement: UINT8 activations, INT8 per-column MatMul weights, Conv left FP32; in
    ONNX Runtime's optimized graph (saved by the session) every quantized MatMul has become
    MatMulIntegerToFloat and no DequantizeLinear is left, and the output stays close to FP32."""
    import onnxruntime as ort

    from ast_deploy.precision.calibration import CalibrationSet
    from ast_deploy.precision.int8 import quantize_int8

    rng = np.random.default_rng(3)
    src = _conv_matmul_model(tmp_path / "m.onnx")
    batches = tuple(rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(2))
    calib = CalibrationSet(tmp_path, (tmp_path / "a.png", tmp_path / "b.png"), batches, f"o-{rng.random()}")
    out = tmp_path / "q.onnx"
    report = quantize_int8(src, out, calib, placement="ort", use_cache=False)
    assert report["placement"] == "ort" and report["quantized_nodes"] == 1 and report["op_types"] == ["MatMul", "Gemm"]
    model = onnx.load(str(out))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    (conv,) = [n for n in model.graph.node if n.op_type == "Conv"]
    assert conv.input[1] == "w" and conv.input[0] == "x"  # the convolution stays FP32
    (mm,) = [n for n in model.graph.node if n.op_type == "MatMul"]
    act_dq, w_dq = producer[mm.input[0]], producer[mm.input[1]]
    assert init[producer[act_dq.input[0]].input[2]].dtype == np.uint8
    assert init[w_dq.input[0]].dtype == np.int8 and init[w_dq.input[1]].size == 16  # per column

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "MatMulIntegerToFloat" in ops and "DequantizeLinear" not in ops and "MatMul" not in ops
    reference = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    x = batches[0]
    y, y32 = session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0]
    snr = 10 * np.log10(np.mean(y32 ** 2) / np.mean((y - y32) ** 2))
    assert snr > 30, snr
