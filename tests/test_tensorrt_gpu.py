"""On a machine with TensorRT and a GPU (``pytest -m tensorrt``): the product's own custom-op ONNX built
into engines in FP32, FP16 and INT8, with and without the AST plugins, each checked against ONNX
Runtime's FP32 run of the same ONNX with ast-check's parity code, and the layers that ran INT8
printed from the engine inspector (``-s`` shows them).

The small test model by default; ``AST_TRT_FULL=1`` builds AST-B (slow: minutes per engine). One run
settles what no CPU machine can: whether TensorRT picks the plugins for the ``aot=1`` nodes (issue 12,
point 4), and which Q/DQ-wrapped layers fuse into INT8 kernels (point 8). Skipped elsewhere.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY_CONFIG  # noqa: E402

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

FULL = os.environ.get("AST_TRT_FULL") == "1"
SIZE = 256  # H = W of the parity images; the profile covers it


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    """{"fp32", "fp16", "int8"} -> the product's custom-op ONNX of that precision (demo images calibrate)."""
    import torch

    from ast_deploy.export import export_onnx
    from ast_deploy.model import AST, ARCHITECTURES
    from ast_deploy.precision.calibration import default_calibration_folder, load_calibration
    from ast_deploy.precision.fp16 import convert_fp16
    from ast_deploy.precision.int8 import quantize_int8

    work = tmp_path_factory.mktemp("trt-gpu")
    torch.manual_seed(0)
    model = AST(**(dict(ARCHITECTURES["AST_B"]) if FULL else TINY_CONFIG)).eval()
    fp32 = work / "model_fp32.onnx"
    export_onnx(model, fp32)
    calib = load_calibration(default_calibration_folder(), model.size_multiple)
    fp16, int8 = work / "model_fp16.onnx", work / "model_int8.onnx"
    convert_fp16(fp32, fp16, calib)
    quantize_int8(fp32, int8, calib)
    return {"fp32": fp32, "fp16": fp16, "int8": int8}


def parity_cases():
    from ast_deploy.checks.cases import Case

    rng = np.random.default_rng(0)
    return [Case(f"noise{i}", rng.random((1, 3, SIZE, SIZE), dtype=np.float32)) for i in range(2)]


def int8_layers(engine_path) -> list[str]:
    """Names of the engine's layers whose inputs or outputs are INT8 (TensorRT's engine inspector)."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    names = []
    for layer in info.get("Layers", []):
        if isinstance(layer, dict):
            text = json.dumps(layer)
            if "Int8" in text or "INT8" in text:
                names.append(layer.get("Name", "?"))
    return names


def plugin_layers(engine_path) -> list[str]:
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    return [layer.get("Name", "?") for layer in info.get("Layers", [])
            if isinstance(layer, dict) and "Plugin" in json.dumps(layer)]


@pytest.mark.parametrize("plugins", ["off", "on"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnx_runtime(onnx_models, precision, plugins, tmp_path):
    """Each precision's engine against the FP32 ONNX in ONNX Runtime, with ast-check's judge and the
    precision's default tolerance; builds in a fresh process per case (a registration cannot be undone)."""
    import subprocess

    if plugins == "on":
        pytest.importorskip("triton")
        try:
            import tensorrt.plugin as trtp
        except Exception:
            pytest.skip("this TensorRT has no tensorrt.plugin")
        if not hasattr(trtp, "aot_impl"):
            pytest.skip("this TensorRT has no aot_impl (< 10.9)")
    engine = tmp_path / f"{precision}_{plugins}.plan"
    size = f"1x3x{SIZE}x{SIZE}"
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "ast_deploy.cli.build", str(onnx_models[precision]), "--out",
                           str(engine), "--shapes", f"{size}:{size}:{size}", "--plugins", plugins],
                          cwd=repo, capture_output=True, text=True, timeout=3600,
                          env=dict(os.environ, PYTHONPATH=str(repo)))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    sidecar = json.loads(Path(str(engine) + ".json").read_text())
    assert sidecar["plugins"]["used"] is (plugins == "on")
    if plugins == "on":
        assert sidecar["options"]["kernels"]["sources_sha256"]
        found = plugin_layers(engine)
        print(f"\n{precision}: plugin layers in the engine: {found}")
        assert found, "the aot=1 nodes were not imported as plugins"

    from ast_deploy.backends.onnxrt import OnnxRuntimeBackend
    from ast_deploy.backends.tensorrt import TensorRTBackend
    from ast_deploy.checks.parity import check_parity
    from ast_deploy.checks.tolerances import tolerance_for

    with OnnxRuntimeBackend(onnx_models["fp32"]) as ref, TensorRTBackend(engine) as cand:
        report = check_parity(ref.infer, cand.infer, parity_cases(), tolerance_for(precision), precision=precision,
                              names=("onnxruntime fp32", f"tensorrt {precision} plugins={plugins}"))
    print(f"{precision} plugins={plugins}: {report.summary()}")
    if precision == "int8":
        layers = int8_layers(engine)
        print(f"INT8 layers ({len(layers)}): {layers}")
        assert layers, "no layer ran INT8"
    assert report.passed, report.to_dict()
