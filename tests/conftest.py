import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Triton fixes interpreted-or-compiled when first imported: without a GPU, its kernels can only run
# interpreted, so decide before any test module imports it (tests/test_kernels.py relies on this).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# runtime="auto" (the default) measures ONNX Runtime against OpenVINO once per model file; the suite's
# many small exports run on ONNX Runtime as they always have, and tests/test_openvino.py removes this
# to test auto itself.
os.environ.setdefault("AST_RUNTIME", "onnxruntime")

REPO = Path(__file__).resolve().parents[1]
# The official fixtures live in the repository (tests/data/parity); AST_PARITY_DIR points elsewhere.
PARITY = Path(os.environ.get("AST_PARITY_DIR", REPO / "tests" / "data" / "parity"))

# A configuration small enough for CPU tests that still has every feature of AST-B: attention in the
# bottleneck and decoder, shifted windows (depth 2), FRFN with its partial convolution.
TINY_CONFIG = dict(img_size=128, embed_dim=8, depths=[1, 1, 1, 1, 2, 2, 2, 2, 2], win_size=8, token_mlp="frfn")


def pytest_collection_modifyitems(config, items):
    try:
        import tensorrt  # noqa: F401
        have_trt = True
    except Exception:
        have_trt = False
    have_gpu = torch.cuda.is_available()
    for item in items:
        # markers, not keywords: keywords also hold the parent folders' names (a checkout named "gpu")
        if item.get_closest_marker("tensorrt") and not have_trt:
            item.add_marker(pytest.mark.skip(reason="TensorRT is not importable on this machine"))
        if item.get_closest_marker("gpu") and not have_gpu:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter a non-trivial random value (LayerNorm gains, bias tables and the ASSA
    branch weights included), so a wrong computation cannot hide behind the default init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise if name.endswith("weight") else 0.1 * noise)
            elif name.endswith("relative_position_bias_table") or name.endswith(".w"):
                p.copy_(0.5 * noise)
            elif p.dim() > 1:  # keep activations O(1) through the depth of the network
                p.copy_(noise * (0.25 / p[0].numel()) ** 0.5)
            else:
                p.copy_(0.05 * noise)
    return model


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY.is_dir():
        pytest.fail(f"parity fixtures not found at {PARITY} (set AST_PARITY_DIR)")
    return PARITY


@pytest.fixture(scope="session")
def parity_cases(parity_dir):
    return dict(np.load(parity_dir / "cases.npz"))


@pytest.fixture(scope="session")
def parity_model(parity_dir):
    """The official implementation's randomised model, loaded from the shared checkpoint."""
    return _load_official(parity_dir)


def _load_official(folder: Path):
    from ast_deploy.model import AST, load_checkpoint

    config = json.loads((folder / "config.json").read_text())
    config.pop("token_projection", None)
    return load_checkpoint(AST(**config), folder / "checkpoint.pth").eval()


@pytest.fixture(scope="session")
def shifted_cases(parity_dir):
    return dict(np.load(parity_dir / "shifted" / "cases.npz"))


@pytest.fixture(scope="session")
def shifted_model(parity_dir):
    """The official depth-2 model: the second block of every shifting level really shifts."""
    return _load_official(parity_dir / "shifted")


@pytest.fixture()
def tiny_model():
    from ast_deploy.model import AST

    torch.manual_seed(0)
    return randomize_(AST(**TINY_CONFIG)).eval()


# ---- the demo model's FP32 / FP16 / INT8 exports, made once per session and shared by
# test_precision.py (which checks them in onnxruntime) and test_rtx.py (which builds them with TensorRT-RTX)

@pytest.fixture(scope="session")
def private_cache(tmp_path_factory):
    """A private calibration cache (AST_DEPLOY_CACHE) for the session, restored afterwards."""
    old = os.environ.get("AST_DEPLOY_CACHE")
    os.environ["AST_DEPLOY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("AST_DEPLOY_CACHE")
    else:
        os.environ["AST_DEPLOY_CACHE"] = old


@pytest.fixture(scope="session")
def demo_work(tmp_path_factory):
    return tmp_path_factory.mktemp("precision")


@pytest.fixture(scope="session")
def demo_onnx(demo_work):
    """``ast-export --task derain``'s graph of the demo model (demo weights), FP32."""
    from ast_deploy.demo import build_demo_model
    from ast_deploy.export import export_onnx

    model = build_demo_model()
    path = demo_work / "demo_fp32.onnx"
    torch.set_num_threads(2)
    export_onnx(model, path)
    return path


@pytest.fixture(scope="session")
def calib(demo_onnx, private_cache):
    from ast_deploy.demo import DEMO_CONFIG
    from ast_deploy.model import AST
    from ast_deploy.precision.calibration import default_calibration_folder, load_calibration

    return load_calibration(default_calibration_folder(), AST(**DEMO_CONFIG).size_multiple)


@pytest.fixture(scope="session")
def cases(calib):
    from ast_deploy.precision.validate import demo_cases

    return demo_cases(calib.batches[0].shape[-1] // 2, 256)


@pytest.fixture(scope="session")
def fp16(demo_onnx, calib, cases, demo_work):
    """(path, report) of the demo model's mixed FP16 graph, as ``--fp16`` makes it."""
    from ast_deploy.precision.fp16 import convert_fp16

    out = demo_work / "demo_fp16.onnx"
    return out, convert_fp16(demo_onnx, out, calib, validate=cases)


@pytest.fixture(scope="session")
def int8(demo_onnx, calib, cases, demo_work):
    """(path, report) of the demo model's INT8 (Q/DQ) graph, as ``--int8`` makes it."""
    from ast_deploy.export import load_recipe
    from ast_deploy.precision.int8 import quantize_int8

    out = demo_work / "demo_int8.onnx"
    return out, quantize_int8(demo_onnx, out, calib, validate=cases,
                              min_psnr=load_recipe("derain").tolerance("int8").psnr_min)
