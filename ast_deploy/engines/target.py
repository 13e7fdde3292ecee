"""The TensorRT installation and GPU an engine is built for (engines run only where they were built)."""

from __future__ import annotations

import subprocess
import warnings
from dataclasses import asdict, dataclass

# The one install hint for TensorRT: ast-build, ast-export, ast-doctor and the README give this.
TENSORRT_INSTALL = ('pip install --extra-index-url https://pypi.nvidia.com -e ".[tensorrt]" (CUDA 12; '
                    '".[tensorrt-cu13]" for CUDA 13); on Jetson, JetPack\'s TensorRT '
                    '(apt install nvidia-tensorrt / python3-libnvinfer)')
TENSORRT_MISSING = (
    "TensorRT is not installed here (the Python module 'tensorrt' cannot be imported). Engines are "
    "specific to one GPU model and TensorRT version, so build on the target machine, with TensorRT "
    f"installed there: {TENSORRT_INSTALL}. The ONNX model runs anywhere meanwhile (onnxruntime).")


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
    """What an engine is built for. ``tensorrt`` is the runtime's version; ``runtime`` is "TensorRT" or
    "TensorRT-RTX"; an RTX engine built ahead of time names no GPU and one or more compute capabilities
    ("8.6,8.9,12.0")."""
    tensorrt: str
    gpu: str
    compute_capability: str
    runtime: str = "TensorRT"

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        plural = "ies" if "," in self.compute_capability else "y"
        return f"{self.runtime} {self.tensorrt} on {self.gpu} (compute capabilit{plural} {self.compute_capability})"


def parse_device(device) -> int:
    """A CUDA device index from ``0``, ``"cuda"``, ``"cuda:N"`` or ``"N"`` (the runtime tools' spelling)."""
    if isinstance(device, int):
        index = device
    else:
        text = str(device).strip().lower()
        if text == "cuda":
            return 0
        text = text[5:] if text.startswith("cuda:") else text
        try:
            index = int(text)
        except ValueError:
            raise ValueError(f"bad device {device!r}: TensorRT engines are built on a GPU, write cuda or cuda:N") from None
    if index < 0:
        raise ValueError(f"bad device {device!r}: the CUDA device index must be >= 0")
    return index


def _libcuda():
    import ctypes

    lib = ctypes.CDLL("libcuda.so.1")
    if lib.cuInit(0):
        raise RuntimeError("cuInit failed")
    return lib


def _driver_describe(device: int) -> tuple[str, str]:
    """(name, "major.minor") from the CUDA driver API (libcuda: x86 and Jetson alike, no torch)."""
    import ctypes

    lib = _libcuda()
    handle, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    if lib.cuDeviceGet(ctypes.byref(handle), device):
        raise RuntimeError(f"no CUDA device {device}")
    lib.cuDeviceGetName(name, 256, handle)
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, handle)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, handle)  # ..._MINOR
    return name.value.decode(errors="replace").strip(), f"{major.value}.{minor.value}"


def _nvidia_smi_describe(device: int) -> tuple[str, str]:
    out = subprocess.run(["nvidia-smi", f"--id={device}", "--query-gpu=name,compute_cap",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    name, cc = (part.strip() for part in out.stdout.strip().splitlines()[0].rsplit(",", 1))
    return name, cc


# Jetson modules by the SoC in /proc/device-tree/compatible (older JetPack has no nvidia-smi).
JETSON_CAPABILITY = {"tegra194": "7.2", "tegra234": "8.7", "tegra264": "11.0", "tegra210": "5.3", "tegra186": "6.2"}


def jetson_describe(root: str = "/") -> tuple[str, str] | None:
    """(model, compute capability) of a Jetson from its device tree, or None elsewhere."""
    from pathlib import Path

    base = Path(root)
    try:
        model = (base / "proc/device-tree/model").read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        return None
    try:
        compatible = (base / "proc/device-tree/compatible").read_bytes().decode(errors="replace")
    except OSError:
        compatible = ""
    if "nvidia" not in (model.lower() + compatible.lower()) and not (base / "etc/nv_tegra_release").is_file():
        return None
    cc = next((v for soc, v in JETSON_CAPABILITY.items() if soc in compatible), "unknown")
    return model, cc


def describe_gpu(device: int = 0) -> tuple[str, str]:
    """(name, compute capability like "8.7") of a CUDA device, ("unknown", "unknown") if none is seen.

    Asks the CUDA driver first (no torch: Jetson's pip torch has no CUDA), then nvidia-smi, then a
    Jetson's device tree."""
    reasons = []
    for source, ask in (("CUDA driver", _driver_describe), ("nvidia-smi", _nvidia_smi_describe)):
        try:
            return ask(device)
        except Exception as e:  # every failure is reported below when no source answers
            reasons.append(f"{source}: {type(e).__name__}: {str(e).strip()[:200]}")
    jetson = jetson_describe()
    if jetson is not None:
        return jetson
    warnings.warn(f"cannot identify CUDA device {device} ({'; '.join(reasons)}): its name and compute capability "
                  "are recorded as 'unknown'", RuntimeWarning, stacklevel=2)
    return "unknown", "unknown"


def select_device(device: int) -> None:
    """Make ``device`` the current CUDA device of this thread, where TensorRT's builder (and Triton's
    target query) work. Through the CUDA runtime that Polygraphy loads (no torch)."""
    if device == 0:
        return  # the default device; nothing to load on a machine that only has one
    try:
        from polygraphy import cuda

        wrapper = cuda.wrapper()
        wrapper.check(wrapper.handle.cudaSetDevice(int(device)))
    except Exception as e:
        raise ValueError(f"cannot select CUDA device {device}: {type(e).__name__}: {e}") from None


def current_target(trt, device: int = 0) -> Target:
    name, cc = describe_gpu(device)
    return Target(tensorrt=str(trt.__version__), gpu=name, compute_capability=cc)
