"""OpenVINO beside ONNX Runtime on the CPU (issue 23): parity per export precision, the ``auto``
choice and its cache, the ast:: functions inlined in memory, ast-check, and a missing OpenVINO.

The tiny model's exports (runtime_helpers.dynamic_onnx, shared with the other runtime tests) are
the subject; references are PyTorch (the same weights) and ONNX Runtime, PSNRs computed here."""

import hashlib
import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ast_deploy import Runner
from ast_deploy.backends import BackendError
from ast_deploy.checks.synthetic import synthetic_image
from ast_deploy.checks.tolerances import DEFAULT_TOLERANCES
from conftest import TINY_CONFIG
from runtime_helpers import checkpoint, dynamic_onnx, torch_infer

pytest.importorskip("openvino")

FP32_MIN, FP16_MIN, INT8_MIN = (DEFAULT_TOLERANCES[p].psnr_min for p in ("fp32", "fp16", "int8"))


def psnr(a, b):  # written out here, independently of ast_deploy.checks
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def expected_choice(figures) -> str:
    """What ``auto`` should pick from its figures: the fastest that holds the tolerance, ONNX Runtime
    unless the other is 5 % faster."""
    ort = figures["onnxruntime"]["seconds"]
    ov = figures["openvino"]
    return "openvino" if ov.get("holds") and ov["seconds"] <= 0.95 * ort else "onnxruntime"


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def native_bf16() -> bool:
    """What /proc/cpuinfo says (independently of OpenVINO's capability list)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags here")
    return "amx_bf16" in flags or "avx512_bf16" in flags


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """The module's own caches (costs, OpenVINO's IR and compiled models), not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AST_DEPLOY_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def auto_measures(monkeypatch):
    """``auto`` measuring (the suite's AST_RUNTIME=onnxruntime would skip it), from an empty memo."""
    import ast_deploy.runtime_choice as choice

    monkeypatch.delenv("AST_RUNTIME", raising=False)
    monkeypatch.setattr(choice, "_MEMO", {})


@pytest.fixture(scope="module")
def batch():
    return np.stack([synthetic_image(128, 256, seed) for seed in (1, 2)])  # batch 2, non-square


@pytest.fixture(scope="module")
def fp32_reference(batch):
    return torch_infer(batch)


@pytest.fixture(scope="module")
def calib():
    from ast_deploy.precision.calibration import default_calibration_folder, load_calibration

    return load_calibration(default_calibration_folder(), 128, max_side=128, limit=1)


@pytest.fixture(scope="module")
def fp16_onnx(tmp_path_factory, calib):
    from ast_deploy.precision.fp16 import convert_fp16

    path = tmp_path_factory.mktemp("fp16") / "tiny.fp16.onnx"
    convert_fp16(dynamic_onnx(), path, calib, use_cache=False)
    return path


@pytest.fixture(scope="module")
def int8_onnx(tmp_path_factory, calib):
    from ast_deploy.precision.int8 import quantize_int8

    path = tmp_path_factory.mktemp("int8") / "tiny.int8.onnx"
    quantize_int8(dynamic_onnx(), path, calib, use_cache=False)
    return path


# ---------------------------------------------------------------- precision follows the export

def test_fp32_export_computes_in_fp32_at_the_fp32_tolerance(batch, fp32_reference):
    import onnxruntime as ort

    before = sha256(dynamic_onnx())
    runner = Runner(dynamic_onnx(), runtime="openvino", max_memory="unlimited")  # no cost probe: not the subject
    assert runner.backend.runtime == "openvino" and runner.backend.inference_precision == "f32"
    out = runner(batch)
    session = ort.InferenceSession(str(dynamic_onnx()), providers=["CPUExecutionProvider"])
    assert psnr(out, fp32_reference) >= FP32_MIN
    assert psnr(out, session.run(None, {"image": batch})[0]) >= FP32_MIN
    assert sha256(dynamic_onnx()) == before  # the functions are inlined in memory, never in the file


def test_fp16_export_computes_in_bf16_where_native_within_50db(fp16_onnx, batch, fp32_reference):
    runner = Runner(fp16_onnx, runtime="openvino", max_memory="unlimited")
    assert runner.backend.precision == "fp16"
    assert runner.backend.inference_precision == ("bf16" if native_bf16() else "f32")
    assert psnr(runner(batch[:1]), fp32_reference[:1]) >= FP16_MIN


def test_int8_export_runs_integer_kernels_within_35db(int8_onnx, batch, fp32_reference):
    runner = Runner(int8_onnx, runtime="openvino", max_memory="unlimited")
    assert runner.backend.precision == "int8"
    assert psnr(runner(batch[:1]), fp32_reference[:1]) >= INT8_MIN
    executed = runner.backend.compiled.get_runtime_model().get_ops()
    integer = [op.get_friendly_name() for op in executed
               if op.get_rt_info()["layerType"].astype(str) in ("Convolution", "FullyConnected", "MatMul")
               and op.get_rt_info()["runtimePrecision"].astype(str) in ("i8", "u8")]
    assert integer, "no convolution or matrix product runs on integers"


# ---------------------------------------------------------------- the ast:: functions

def ast_function_model(path):
    """y = 2 x + 1 through a local function in the "ast" domain (OpenVINO has no rule for it)."""
    body = [helper.make_node("Add", ["x", "x"], ["d"]), helper.make_node("Constant", [], ["one"], value_float=1.0),
            helper.make_node("Add", ["d", "one"], ["y"])]
    function = helper.make_function("ast", "Twice", ["x"], ["y"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Twice", ["image"], ["restored"], domain="ast")], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 3, "h", "w"])],
                              [helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["b", 3, "h", "w"])])
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17),
                                                                         helper.make_opsetid("ast", 1)])
    model.metadata_props.add(key="ast.size_multiple", value="8")
    onnx.save(model, str(path))
    return path


def test_local_functions_are_inlined_in_memory_only(tmp_path):
    import openvino as ov

    path = ast_function_model(tmp_path / "f.onnx")
    with pytest.raises(Exception, match="ast.Twice|Twice"):  # what the loader must work around
        ov.Core().read_model(str(path))
    before = sha256(path)
    x = np.random.default_rng(0).random((1, 3, 8, 16), dtype=np.float32)
    out = Runner(path, runtime="openvino")(x)
    np.testing.assert_allclose(out, 2 * x + 1, rtol=1e-6)
    assert sha256(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.onnx"]


# ---------------------------------------------------------------- auto

def test_auto_measures_once_and_caches_the_decision(tmp_path, monkeypatch):
    import ast_deploy.runtime_choice as choice
    from ast_deploy.budget import cache_root

    monkeypatch.setenv("AST_DEPLOY_CACHE", str(tmp_path))  # no runtime.json yet

    before = sha256(dynamic_onnx())
    first = Runner(dynamic_onnx())  # runtime="auto" is the default
    assert first.runtime_choice.reason == "measured"
    figures = first.runtime_choice.figures
    assert set(figures) == {"onnxruntime", "openvino"} and figures["openvino"]["holds"]
    fastest = expected_choice(figures)
    assert first.runtime_choice.runtime == fastest == first.backend.runtime
    cache = cache_root() / "runtime.json"
    (key, entry), = json.loads(cache.read_text()).items()
    assert entry["runtime"] == fastest and entry["precision"] == "fp32"
    # Plant the other runtime in the cache file: a second Runner (new process memory) must take the
    # file's word without measuring again.
    other = ({"onnxruntime", "openvino"} - {fastest}).pop()
    entry["runtime"] = other
    cache.write_text(json.dumps({key: entry}))
    choice._MEMO.clear()
    second = Runner(dynamic_onnx())
    assert second.runtime_choice.reason == "cached" and second.backend.runtime == other
    assert sha256(dynamic_onnx()) == before


def test_a_choice_measured_under_load_is_measured_again_when_quiet(tmp_path, monkeypatch):
    import ast_deploy.runtime_choice as choice
    from ast_deploy.budget import cache_root

    monkeypatch.setenv("AST_DEPLOY_CACHE", str(tmp_path))
    cpus = os.cpu_count()
    monkeypatch.setattr(choice, "load_average", lambda: 0.5 * cpus)  # a quiet machine
    first = Runner(dynamic_onnx())
    assert first.runtime_choice.load == 0.5 * cpus and not first.runtime_choice.contended
    cache = cache_root() / "runtime.json"
    (key, entry), = json.loads(cache.read_text()).items()
    fastest = entry["runtime"]
    other = ({"onnxruntime", "openvino"} - {fastest}).pop()
    # The cache says the other runtime won a probe run while every core had other work (load above
    # the CPU count): while the machine is still that busy, the cached word stands ...
    entry.update(runtime=other, load=cpus + 3.0)
    cache.write_text(json.dumps({key: entry}))
    choice._MEMO.clear()
    monkeypatch.setattr(choice, "load_average", lambda: cpus + 2.0)
    busy = Runner(dynamic_onnx())
    assert busy.runtime_choice.reason == "cached" and busy.backend.runtime == other
    # ... once it is quiet, the next Runner measures again and writes the new decision.
    choice._MEMO.clear()
    monkeypatch.setattr(choice, "load_average", lambda: 0.5 * cpus)
    quiet = Runner(dynamic_onnx())
    assert quiet.runtime_choice.reason.startswith("measured again")
    assert f"load {cpus + 3.0:.1f}" in quiet.runtime_choice.reason
    assert quiet.backend.runtime == expected_choice(quiet.runtime_choice.figures)
    assert json.loads(cache.read_text())[key]["load"] == 0.5 * cpus


def test_auto_keeps_onnx_runtime_unless_another_is_clearly_faster():
    from ast_deploy.runtime_choice import pick

    def figures(ort, ov, holds=True):
        return {"onnxruntime": {"seconds": ort, "holds": True}, "openvino": {"seconds": ov, "holds": holds}}

    assert pick(figures(1.0, 0.5)) == "openvino"
    assert pick(figures(1.0, 0.94)) == "openvino"
    assert pick(figures(1.0, 0.97)) == "onnxruntime"  # within the probe's spread: the validated runtime
    assert pick(figures(1.0, 1.2)) == "onnxruntime"
    assert pick(figures(1.0, 0.5, holds=False)) == "onnxruntime"  # faster but outside the tolerance
    assert pick({"onnxruntime": {"seconds": 1.0, "holds": True}, "openvino": {"error": "RuntimeError: x"}}) \
        == "onnxruntime"


def test_ast_runtime_env_skips_measuring(monkeypatch, tmp_path):
    from ast_deploy.budget import cache_root

    monkeypatch.setenv("AST_DEPLOY_CACHE", str(tmp_path))

    monkeypatch.setenv("AST_RUNTIME", "onnxruntime")
    runner = Runner(dynamic_onnx())
    assert runner.runtime_choice.reason == "AST_RUNTIME" and runner.backend.runtime == "onnxruntime"
    assert not (cache_root() / "runtime.json").exists()
    monkeypatch.setenv("AST_RUNTIME", "tensorflow")
    with pytest.raises(ValueError, match="AST_RUNTIME"):
        Runner(dynamic_onnx())


def test_cost_cache_keys_the_runtime():
    from ast_deploy.budget import backend_identity

    ov_key = backend_identity(Runner(dynamic_onnx(), runtime="openvino").backend)
    ort_key = backend_identity(Runner(dynamic_onnx(), runtime="onnxruntime").backend)
    assert ov_key != ort_key and ":openvino-20" in ov_key and ":f32-latency" in ov_key


def test_runtime_is_refused_for_a_checkpoint():
    with pytest.raises(ValueError, match="runtime"):
        Runner(checkpoint(), config=TINY_CONFIG, runtime="openvino")


# ---------------------------------------------------------------- tools and errors

def test_ast_check_runtime_openvino_passes(tmp_path, capsys):
    from ast_deploy.cli import check

    report = tmp_path / "report.json"
    code = check.main([str(checkpoint()), str(dynamic_onnx()), "--config", json.dumps(TINY_CONFIG), "--protocol",
                       "pad:128", "--sizes", "128x128", "--runtime", "openvino", "--max-memory", "unlimited",
                       "--report", str(report)])
    assert code == 0, capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["extra"]["backends"]["candidate"].startswith("openvino[CPU,f32]")
    assert all(case["parity"]["psnr"] == "inf" or case["parity"]["psnr"] >= FP32_MIN for case in data["cases"])


def test_missing_openvino_names_the_extra(monkeypatch, tmp_path):
    import sys

    from ast_deploy.cli import restore
    from ast_deploy.runtime_choice import installed_runtimes

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    with pytest.raises(BackendError, match=r"ast-deploy\[openvino\]"):
        Runner(dynamic_onnx(), runtime="openvino")
    assert installed_runtimes() == ["onnxruntime"]
    assert Runner(dynamic_onnx()).backend.runtime == "onnxruntime"  # auto without OpenVINO
    photo = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photo)
    code = restore.main([str(photo), "-o", str(tmp_path / "out"), "--onnx", str(dynamic_onnx()),
                         "--runtime", "openvino", "--quiet"])
    assert code == 2


# ---------------------------------------------------------------- bench_cpu_runtimes.py --profile

def test_profile_counters_match_the_executed_graphs_layer_times():
    """The profile's kernel shares (benchmarks/cpu_profile.py, from InferRequest.profiling_info)
    against the same run's execution times as the executed graph records them (rt_info), and its
    layer type / kernel table against its own margins."""
    import sys
    from collections import defaultdict
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from ast_deploy.backends.openvino import CompiledModelFromOnnx
    from ast_deploy.backends.options import OpenVINOOptions
    from cpu_profile import ov_counter_shares

    compiled, _ = CompiledModelFromOnnx(dynamic_onnx(), OpenVINOOptions(threads=1))(extra_config={"PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer({0: synthetic_image(128, 128, 3)[None]})
    shares = ov_counter_shares(request.profiling_info)
    recorded = defaultdict(float)  # kernel -> microseconds
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["execTimeMcs"].astype(str).isdigit():
            recorded[info["primitiveType"].astype(str)] += int(info["execTimeMcs"].astype(str))
    total = sum(recorded.values())
    assert total > 0 and any(k.startswith("brgemm") for k in recorded)
    assert set(shares["kernel"]) == {k for k, v in recorded.items() if v}
    for kernel, share in shares["kernel"].items():
        assert share == pytest.approx(recorded[kernel] / total, abs=0.01), kernel
    margins = defaultdict(float)
    for key, share in shares["layer type / kernel"].items():
        margins[key.split(" / ")[0]] += share
    assert margins == pytest.approx(shares["layer type"])
    assert "FullyConnected" in shares["layer type"] and sum(shares["layer type"].values()) == pytest.approx(1.0)
