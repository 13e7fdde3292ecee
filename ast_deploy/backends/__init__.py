"""Inference backends: each one loads a model and runs float32 NCHW batches through it.
PyTorch (``pytorch.py``), ONNX Runtime (``onnxrt.py``), OpenVINO (``openvino.py``) and TensorRT (``tensorrt.py``), behind the
interface in ``base.py``. ``open_backend`` is the one factory; nothing heavy (torch, onnxruntime,
tensorrt) is imported until a backend of that kind is opened.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..metadata import DEFAULT_SIZE_MULTIPLE
from ..shapes import ShapeRange
from .base import Backend, BackendError, ShapeError
from .options import RUNTIMES, OpenVINOOptions, check_runtime
from .triton_client import is_server_url, open_server_backend

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar")


def backend_kind(source: str | os.PathLike) -> str | None:
    """"pytorch" (a checkpoint), "onnx", "tensorrt", or None for a file no backend here runs."""
    suffix = Path(source).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "pytorch"
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    return None


def _cuda_index(device: str) -> int:
    _, _, index = str(device).partition(":")
    return int(index) if index else 0


def _is_module(source) -> bool:
    torch = sys.modules.get("torch")  # an nn.Module exists only once torch is imported: never import it here
    return torch is not None and isinstance(source, torch.nn.Module)


def open_backend(source, device: str = "cpu", *, task: str | None = None, config: dict | None = None,
                 kernels: str | None = None, max_batch: int | None = None, runtime="auto", **options) -> Backend:
    """The backend for ``source``: an opened ``Backend``, a Triton Inference Server URL (the served
    front model applies the protocol itself), an ``nn.Module`` or a checkpoint (PyTorch; ``task`` / ``config``
    say its architecture, ``kernels`` its op implementation: "reference" or "triton"), an ONNX
    model (ONNX Runtime) or a TensorRT engine.

    ``device`` is "cpu", "cuda" or "cuda:N". ONNX Runtime: "cpu" runs on the CPU, "cuda[:N]" requires
    its CUDA provider; ``providers=`` ("auto", "cpu", "cuda", "tensorrt") and ``intra_op_threads=``
    override. TensorRT engines run on a GPU only: "cuda:N" picks it, "cpu" means GPU 0.
    ``max_batch`` caps the batch of one ``infer`` call for every kind; ``kernels``, ``task`` and
    ``config`` only concern PyTorch models, and are refused for an ONNX model or an engine.
    ``runtime`` runs an ONNX model: "onnxruntime", "openvino" (or an ``OpenVINOOptions``), or "auto"
    (the default: measured once per model, ``ast_deploy.runtime_choice``); other sources take "auto" only."""
    if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
    runtime = check_runtime(runtime)
    if isinstance(source, Backend):  # already open (the serving front model's BLS backend)
        return source
    if runtime != "auto" and (not isinstance(source, (str, os.PathLike)) or backend_kind(source) != "onnx"):
        raise ValueError(f"runtime={runtime!r} chooses what runs an ONNX model; {source!r} is not one")
    if is_server_url(source):  # http(s)://host:port/MODEL or grpc://host:port/MODEL
        return open_server_backend(source)
    if _is_module(source):
        return _torch_backend(source, device, kernels, max_batch, options)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a backend opens an nn.Module or a model file path, not {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    kind = backend_kind(path)
    if kind is None:
        raise ValueError(f"{path}: unknown model file type {path.suffix!r} (a checkpoint "
                         f"{', '.join(CHECKPOINT_SUFFIXES)}, an ONNX model {', '.join(ONNX_SUFFIXES)} "
                         f"or a TensorRT engine {', '.join(ENGINE_SUFFIXES)})")
    if options.get("options") is not None and kind != "tensorrt":
        raise ValueError(f"{type(options['options']).__name__} is for TensorRT engines; {path.name} is not one")
    if kind == "pytorch":
        from ..model.factory import build_model  # imports torch: only for a checkpoint

        return _torch_backend(build_model(config, path, task=task), device, kernels, max_batch, options)
    if kernels is not None:
        raise ValueError(f"kernels={kernels!r} selects the PyTorch model's op implementation; {path.name} is "
                         f"{'an ONNX model' if kind == 'onnx' else 'a TensorRT engine'} and runs its own")
    if config is not None:
        raise ValueError(f"config= is the architecture of a checkpoint; {path.name} records its own")
    backend = (_onnx_backend(path, device, runtime, options) if kind == "onnx"
               else _tensorrt_backend(path, device, options))
    backend.batch_limit = max_batch
    return backend


def _torch_backend(model, device, kernels, max_batch, options) -> Backend:
    if options:
        raise TypeError(f"options {sorted(options)} are for ONNX Runtime / TensorRT, not a PyTorch model")
    from .pytorch import TorchBackend

    if kernels is not None:
        model.set_ops_impl(assa=kernels, partial_conv=kernels)
    return TorchBackend(model, device, **({"max_batch": max_batch} if max_batch else {}))


SHARED_OPTIONS = {"intra_op_threads", "size_multiple"}  # ONNX options every CPU runtime takes


def _onnx_backend(path: Path, device: str, runtime, options: dict) -> Backend:
    choice = None
    if runtime == "auto" and set(options) - SHARED_OPTIONS:  # providers= and friends: ONNX Runtime's own
        runtime = "onnxruntime"
    if runtime == "auto":
        from ..runtime_choice import choose_runtime

        choice = choose_runtime(path, device, options.get("intra_op_threads"), options.get("size_multiple"))
        runtime = choice.runtime
    if runtime != "onnxruntime":
        backend = _openvino_backend(path, device, runtime, options)
    else:
        backend = _onnxruntime_backend(path, device, options)
    backend.runtime_choice = choice
    return backend


def _openvino_backend(path: Path, device: str, runtime, options: dict) -> Backend:
    from .openvino import OpenVINOBackend

    if str(device).startswith("cuda"):
        raise ValueError(f"runtime openvino runs on the CPU here, not on {device}: use device='cpu' or "
                         "runtime='onnxruntime'")
    unknown = sorted(set(options) - SHARED_OPTIONS)
    if unknown:
        raise TypeError(f"options {unknown} are ONNX Runtime's; give OpenVINO's as runtime=OpenVINOOptions(...)")
    if not isinstance(runtime, OpenVINOOptions):
        runtime = OpenVINOOptions(threads=options.get("intra_op_threads"))
    return OpenVINOBackend(path, runtime, size_multiple=options.get("size_multiple"))


def _onnxruntime_backend(path: Path, device: str, options: dict) -> Backend:
    from .onnxrt import OnnxRuntimeBackend

    on_cuda = str(device).startswith("cuda")
    options.setdefault("providers", "cuda" if on_cuda else "cpu")
    if on_cuda and _cuda_index(device):
        options.setdefault("provider_options", {"CUDAExecutionProvider": {"device_id": _cuda_index(device)}})
    return OnnxRuntimeBackend(path, **options)


def _tensorrt_backend(path: Path, device: str, options: dict) -> Backend:
    from .tensorrt import TensorRTBackend

    return TensorRTBackend(path, device=_cuda_index(device) if str(device).startswith("cuda") else 0, **options)


__all__ = ["CHECKPOINT_SUFFIXES", "DEFAULT_SIZE_MULTIPLE", "RUNTIMES", "Backend", "BackendError", "OpenVINOOptions",
           "ShapeError", "ShapeRange", "backend_kind", "open_backend"]
