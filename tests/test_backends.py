import json
import threading
import warnings

import numpy as np
import pytest

from ast_deploy.backends import BackendError, ShapeError, backend_kind, open_backend
from ast_deploy.backends.onnxrt import OnnxRuntimeBackend, SessionFromOnnx, shape_range_from_dims
from ast_deploy.engines.target import Target, TensorRTNotInstalled
from conftest import TINY_CONFIG
from runtime_helpers import TMP, checkpoint, dynamic_onnx, have_tensorrt, image_model, onnx, set_metadata, static_onnx, torch_infer


def images(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def assert_threads_agree_with_sequential(backend, n: int):
    """Run ``n`` different batches on one backend from ``n`` threads at once; each thread must get
    what a sequential run gives for its batch."""
    batches = [images((1, 3, 128, 128), seed=s) for s in range(n)]
    sequential = [backend.infer(b) for b in batches]
    results = [None] * n

    def work(i):
        results[i] = backend.infer(batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, sequential):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- ONNX Runtime

def test_ort_dynamic_model_matches_pytorch():
    backend = open_backend(dynamic_onnx(), providers="cpu")
    assert isinstance(backend, OnnxRuntimeBackend) and backend.provider == "CPUExecutionProvider"
    assert backend.shape_range is None and backend.max_batch is None and backend.size_multiple == 128
    for shape in [(1, 3, 128, 128), (2, 3, 256, 128)]:
        x = images(shape)
        np.testing.assert_allclose(backend.infer(x), torch_infer(x), rtol=0, atol=1e-5)


def test_ort_static_model_exposes_its_shape_and_rejects_others():
    backend = OnnxRuntimeBackend(static_onnx(), providers="cpu")
    assert backend.shape_range == ((1, 128, 128), (1, 128, 128))
    assert backend.max_batch == 1
    x = images((1, 3, 128, 128), seed=1)
    np.testing.assert_allclose(backend.infer(x), torch_infer(x), rtol=0, atol=1e-5)
    with pytest.raises(ShapeError, match=r"outside the range.*batch 1, H 128, W 128"):
        backend.infer(images((1, 3, 256, 128)))
    with pytest.raises(ShapeError, match="outside the range"):
        backend.infer(images((2, 3, 128, 128)))
    with pytest.raises(ShapeError, match="multiples of 128"):
        backend.infer(images((1, 3, 128, 100)))
    with pytest.raises(ShapeError, match=r"\[B, 3, H, W\]"):
        backend.infer(images((3, 128, 128)))


def test_ort_size_multiple_comes_from_onnx_metadata():
    path = TMP / "multiple256.onnx"
    onnx.save(set_metadata(onnx.load(str(dynamic_onnx())), **{"ast.size_multiple": 256}), str(path))
    backend = OnnxRuntimeBackend(path, providers="cpu")
    assert backend.size_multiple == 256
    with pytest.raises(ShapeError, match="multiples of 256"):
        backend.infer(images((1, 3, 128, 128)))


def test_shape_range_from_dims():
    assert shape_range_from_dims(["batch", 3, "h", "w"], 128) is None
    assert shape_range_from_dims([1, 3, 256, 384], 128) == ((1, 256, 384), (1, 256, 384))
    assert shape_range_from_dims(["batch", 3, 256, 256], 128) == ((1, 256, 256), (None, 256, 256))
    assert shape_range_from_dims([4, 3, None, "w"], 64) == ((4, 64, 64), (4, None, None))
    with pytest.raises(BackendError, match="4-D"):
        shape_range_from_dims(["n", 3, 128], 128)


def test_ort_backend_is_thread_safe():
    backend = OnnxRuntimeBackend(dynamic_onnx(), providers="cpu", intra_op_threads=1)
    assert_threads_agree_with_sequential(backend, n=6)


def test_ort_cuda_that_does_not_start_falls_back_quietly(monkeypatch, capfd, caplog):
    """onnxruntime lists CUDA, but the session cannot get it (what onnxruntime-gpu does without CUDA
    libraries): "auto" runs on the CPU with one warning of ours, "cuda" is an error."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a working CUDA provider")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    warnings.filterwarnings("ignore", "Specified provider", UserWarning)  # ORT's own list was not patched
    with caplog.at_level("WARNING"):
        session = SessionFromOnnx(static_onnx(), providers="auto")()
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert "could not start" in caplog.text
    assert "onnxruntime" not in capfd.readouterr().err  # ORT's own provider warnings are silenced
    with pytest.raises(BackendError, match="CUDAExecutionProvider is installed but could not start"):
        SessionFromOnnx(static_onnx(), providers="cuda")()


def test_ort_missing_provider_and_bad_choice():
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendError, match="TensorrtExecutionProvider is not available"):
            SessionFromOnnx(static_onnx(), providers="tensorrt")()
    with pytest.raises(ValueError, match="providers must be one of"):
        SessionFromOnnx(static_onnx(), providers="gpu")
    with pytest.raises(FileNotFoundError):
        SessionFromOnnx(TMP / "nope.onnx")()


def test_backend_kind_and_dispatch(tmp_path):
    assert backend_kind("a/b.ONNX") == "onnx"
    assert backend_kind("m.plan") == backend_kind("m.engine") == "tensorrt"
    assert backend_kind("weights.pth") == backend_kind("w.ckpt") == "pytorch"
    assert backend_kind("notes.txt") is None
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown model file type '.txt'"):
        open_backend(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_backend(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="nn.Module or a model file path"):
        open_backend(42)


def test_open_backend_passes_max_batch_to_every_kind_and_refuses_kernels_for_files():
    from ast_deploy.backends.pytorch import TorchBackend

    torch_backend = open_backend(image_model(), max_batch=2, kernels="reference")
    assert isinstance(torch_backend, TorchBackend) and torch_backend.max_batch == 2
    checkpoint_backend = open_backend(checkpoint(), config=TINY_CONFIG, max_batch=3)
    assert isinstance(checkpoint_backend, TorchBackend) and checkpoint_backend.max_batch == 3
    ort = open_backend(dynamic_onnx(), max_batch=2)
    assert ort.max_batch == 2 and open_backend(dynamic_onnx()).max_batch is None
    x = images((2, 3, 128, 128))
    np.testing.assert_allclose(ort.infer(x), torch_backend.infer(x), rtol=0, atol=1e-5)
    with pytest.raises(ShapeError, match="batch 3 is larger than the limit of 2"):
        ort.infer(images((3, 3, 128, 128)))
    assert open_backend(static_onnx(), max_batch=4).max_batch == 1  # the model's own limit is smaller
    with pytest.raises(ValueError, match="kernels='triton' selects the PyTorch model's op implementation"):
        open_backend(dynamic_onnx(), kernels="triton")
    with pytest.raises(ValueError, match="config= is the architecture of a checkpoint"):
        open_backend(dynamic_onnx(), config=TINY_CONFIG)
    with pytest.raises(ValueError, match="max_batch must be a positive integer"):
        open_backend(dynamic_onnx(), max_batch=0)
    with pytest.raises(TypeError, match="not a PyTorch model"):
        open_backend(image_model(), providers="cpu")


# ---------------------------------------------------------------- TensorRT without TensorRT

def test_tensorrt_backend_without_tensorrt_says_so(tmp_path):
    if have_tensorrt():
        pytest.skip("TensorRT is importable here")
    (tmp_path / "model.plan").write_bytes(b"not an engine")
    with pytest.raises(TensorRTNotInstalled, match=r"TensorRT is not installed.*pip install --extra-index-url.*JetPack"):
        open_backend(tmp_path / "model.plan")


def test_deserialize_failure_names_both_machines():
    from ast_deploy.backends.tensorrt import explain_deserialize_failure

    here = Target("10.3.0", "Orin", "8.7")
    sidecar = {"tensorrt": "10.8.0", "gpu": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0",
               "onnx": {"path": "/models/derain.onnx"}, "plugins": {"used": False}}
    msg = explain_deserialize_failure("e.plan", sidecar, here)
    assert "TensorRT 10.8.0 on NVIDIA A100-SXM4-40GB (compute capability 8.0)" in msg
    assert "TensorRT 10.3.0 on Orin (compute capability 8.7)" in msg
    assert "ast-build /models/derain.onnx" in msg
    assert "No sidecar JSON" in explain_deserialize_failure("e.plan", None, here)
    same = dict(sidecar, tensorrt="10.3.0", gpu="Orin", compute_capability="8.7")
    assert "damaged" in explain_deserialize_failure("e.plan", same, here)
    plugged = dict(same, plugins={"used": True, "ops": ["AdaptiveSparseAttention"]})
    assert "no plugin registration is needed" in explain_deserialize_failure("e.plan", plugged, here)  # AOT kernels


# ---------------------------------------------------------------- on a TensorRT machine with a GPU

@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    from ast_deploy.engines import build_engine

    out = tmp_path_factory.mktemp("engine") / "tiny.plan"
    return build_engine(dynamic_onnx(), out, shapes="1x3x128x128:1x3x256x256:2x3x256x256", plugins="off")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_backend_matches_onnxruntime(tiny_engine):
    from ast_deploy.backends.tensorrt import TensorRTBackend

    ort_backend = OnnxRuntimeBackend(dynamic_onnx(), providers="cpu")
    with TensorRTBackend(tiny_engine) as trt_backend:
        assert trt_backend.shape_range == ((1, 128, 128), (2, 256, 256))
        assert trt_backend.max_batch == 2 and trt_backend.size_multiple == 128
        for shape in [(1, 3, 128, 128), (2, 3, 256, 128), (1, 3, 256, 256)]:
            x = images(shape, seed=3)
            np.testing.assert_allclose(trt_backend.infer(x), ort_backend.infer(x), rtol=0, atol=5e-4)
        with pytest.raises(ShapeError, match="optimization profile is min 1x3x128x128"):
            trt_backend.infer(images((1, 3, 384, 128)))


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_backend_serializes_threads(tiny_engine):
    from ast_deploy.backends.tensorrt import TensorRTBackend

    assert_threads_agree_with_sequential(TensorRTBackend(tiny_engine), n=4)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_damaged_engine_is_explained(tiny_engine, tmp_path):
    from ast_deploy.backends.tensorrt import TensorRTBackend

    bad = tmp_path / "bad.plan"
    bad.write_bytes(tiny_engine.read_bytes()[: 4096])
    sidecar = json.loads((tiny_engine.parent / (tiny_engine.name + ".json")).read_text())
    (tmp_path / "bad.plan.json").write_text(json.dumps(sidecar))
    with pytest.raises(BackendError, match="could not deserialize.*damaged"):
        TensorRTBackend(bad)


# ---------------------------------------------------------------- through the Runner

def test_runner_runs_onnx_like_pytorch():
    from ast_deploy import Runner
    from ast_deploy.protocols import Tiles

    x = images((3, 100, 140), seed=4)
    dynamic = Runner(dynamic_onnx(), protocol="pad:128")
    assert isinstance(dynamic.backend, OnnxRuntimeBackend)
    np.testing.assert_allclose(dynamic(x), Runner(image_model(), protocol="pad:128")(x), rtol=0, atol=1e-5)
    # A static 1 x 3 x 128 x 128 model takes a 100 x 140 image as tiles, blended feathered since they
    # depart from the protocol (conventions); PyTorch with the same tiles agrees.
    static = Runner(static_onnx(), protocol="pad:128")
    np.testing.assert_allclose(static(x), Runner(image_model(), protocol=Tiles(128, 128, 32, "feather", 128))(x),
                               rtol=0, atol=1e-5)
    batch = images((2, 3, 128, 128), seed=5)
    np.testing.assert_allclose(static(batch), torch_infer(batch), rtol=0, atol=1e-5)  # batch 2, one image a call
