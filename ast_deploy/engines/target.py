"""The TensorRT installation and GPU an engine is built for (engines run only where they were built)."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass

TENSORRT_MISSING = (
    "TensorRT is not installed here (the Python module 'tensorrt' cannot be imported). Engines are "
    "specific to one GPU model and TensorRT version, so build on the target machine: on Jetson, JetPack "
    "ships TensorRT; on x86, pip install tensorrt (or NVIDIA's TensorRT packages). The ONNX model runs "
    "anywhere meanwhile (onnxruntime).")


class TensorRTNotInstalled(RuntimeError):
    pass


def import_tensorrt():
    """``import tensorrt``, or a TensorRTNotInstalled that says where to build instead."""
    try:
        import tensorrt
    except (ImportError, OSError) as e:  # OSError: the bindings are there but libnvinfer is not
        raise TensorRTNotInstalled(f"{TENSORRT_MISSING}\nDetail: {type(e).__name__}: {e}") from e
    return tensorrt


@dataclass(frozen=True)
class Target:
    tensorrt: str
    gpu: str
    compute_capability: str

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt} on {self.gpu} (compute capability {self.compute_capability})"


def describe_gpu(device: int = 0) -> tuple[str, str]:
    """(name, compute capability like "8.7") of a CUDA device, ("unknown", "unknown") if none is seen."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            return torch.cuda.get_device_name(device), f"{major}.{minor}"
    except Exception:
        pass
    # A CPU-only torch beside TensorRT (common on x86 build boxes): ask the driver.
    try:
        out = subprocess.run(["nvidia-smi", f"--id={device}", "--query-gpu=name,compute_cap",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
        name, cc = (part.strip() for part in out.stdout.strip().splitlines()[0].rsplit(",", 1))
        return name, cc
    except Exception:
        return "unknown", "unknown"


def current_target(trt, device: int = 0) -> Target:
    name, cc = describe_gpu(device)
    return Target(tensorrt=str(trt.__version__), gpu=name, compute_capability=cc)
