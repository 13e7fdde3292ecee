"""What this machine can do with the toolkit: ``ast-doctor``.

Each check looks at the real thing: PyTorch only if it is installed (never imported otherwise), the
driver and GPU through ``nvidia-smi`` (or PyTorch's CUDA, or ``libcuda`` directly), TensorRT by
importing it, ONNX Runtime providers by starting a one-node session on each (ONNX Runtime falls back
to the CPU silently, so "available" is not enough), the Triton compiler's version, a Triton Inference
Server binary, free memory and the default memory budget (conventions: CPU the smaller of 2 GiB and a
quarter of the available RAM; CUDA 80 % of the device's free memory).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata

from .engines.dla import DLAError, check_dla_support, detect_platform
from .engines.target import TENSORRT_INSTALL

GiB = 1 << 30
MiB = 1 << 20
CPU_BUDGET_CAP = 2 * GiB
CUDA_BUDGET_FRACTION = 0.8
TRT_PLUGINS_FROM = (10, 6)   # tensorrt.plugin
TRT_AOT_FROM = (10, 9)       # tensorrt.plugin.aot_impl

INSTALL = {
    "torch": 'pip install -e ".[export]" (on Jetson: the PyTorch wheel for your JetPack from NVIDIA, not pip\'s)',
    "gpu": "an NVIDIA GPU and driver (nvidia-smi); on Jetson, JetPack",
    "tensorrt": TENSORRT_INSTALL,
    "tensorrt.plugin": "TensorRT >= 10.6 for Python plugins, >= 10.9 for AOT plugins (JetPack 6 ships 10.3: "
                       "ast-build uses the ONNX function bodies there)",
    "tensorrt-rtx": 'pip install -e ".[tensorrt-rtx]" (NVIDIA\'s TensorRT-RTX wheels, on PyPI; builds without a GPU)',
    "onnxruntime": 'pip install -e ".[cpu]" (CPU) or ".[gpu]" (NVIDIA GPU); never both',
    "onnxruntime-cuda": 'pip uninstall -y onnxruntime && pip install -e ".[gpu]" (and CUDA 12/13 + cuDNN 9 libraries '
                        'matching the onnxruntime-gpu build)',
    "triton": 'pip install -e ".[kernels]"',
    "openvino": 'pip install -e ".[openvino]" (runtime auto then measures it beside ONNX Runtime)',
    "tritonserver": "an NGC Triton Inference Server container (nvcr.io/nvidia/tritonserver), or pip install nvidia-pytriton "
                    "in the server's own environment (ast-serve makes it)",
}


def _version_tuple(text) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(text))[:3])


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def size_flag(n: int) -> str:
    """A --max-memory value in binary suffixes (512M, 4G), rounded down."""
    return f"{n // GiB}G" if n >= 4 * GiB else f"{n // MiB}M"


# ---------------------------------------------------------------- checks

def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_torch() -> dict:
    if not _installed("torch"):
        return {"ok": False, "detail": "not installed (not needed to run ONNX models and engines)",
                "install": INSTALL["torch"]}
    try:
        import torch
    except Exception as e:  # broken install
        return {"ok": False, "detail": f"installed but import fails: {type(e).__name__}: {e}", "install": INSTALL["torch"]}
    cuda = torch.version.cuda
    out = {"ok": True, "version": torch.__version__, "cuda_build": cuda,
           "cuda_available": bool(cuda) and torch.cuda.is_available()}
    out["detail"] = f"{torch.__version__} ({'CUDA ' + cuda if cuda else 'CPU build'}" + \
        (", sees the GPU)" if out["cuda_available"] else (", no GPU visible)" if cuda else ")"))
    return out


def _nvidia_smi() -> list[dict]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap,driver_version,memory.free,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        name, cc, driver, free, total = parts
        num = lambda s: int(float(s)) * MiB if re.fullmatch(r"[\d.]+", s) else None  # noqa: E731
        gpus.append({"name": name, "compute_capability": cc, "driver": driver, "free": num(free), "total": num(total)})
    return gpus


def _libcuda_driver() -> str | None:
    """The CUDA driver API version from libcuda (present wherever a driver is, Jetson included)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value == 0:
            return None
        return f"{version.value // 1000}.{version.value % 1000 // 10}"
    except OSError:
        return None


def check_gpu(torch_info: dict) -> dict:
    gpus = _nvidia_smi()
    cuda_api = _libcuda_driver()
    if not gpus and torch_info.get("cuda_available"):
        import torch

        free, total = torch.cuda.mem_get_info(0)
        major, minor = torch.cuda.get_device_capability(0)
        gpus = [{"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}", "driver": None,
                 "free": free, "total": total}]
    if not gpus:
        detail = "no NVIDIA GPU found (no nvidia-smi" + (", no CUDA in PyTorch" if torch_info.get("ok") else "") + ")"
        if cuda_api:
            detail = f"CUDA driver {cuda_api} present but no GPU could be queried"
        return {"ok": False, "gpus": [], "cuda_driver_api": cuda_api, "detail": detail, "install": INSTALL["gpu"]}
    g = gpus[0]
    detail = f"{g['name']}, compute capability {g['compute_capability']}"
    if g.get("driver"):
        detail += f", driver {g['driver']}"
    if cuda_api:
        detail += f" (CUDA {cuda_api})"
    if len(gpus) > 1:
        detail += f"; {len(gpus)} GPUs"
    return {"ok": True, "gpus": gpus, "cuda_driver_api": cuda_api, "detail": detail}


def check_jetson() -> dict:

    p = detect_platform()
    out = {"ok": p.is_jetson, "model": p.model, "jetpack": p.jetpack, "l4t": p.l4t}
    out["detail"] = p.describe() if p.is_jetson else "not a Jetson"
    out["_platform"] = p
    out["_gate"] = (check_dla_support, DLAError)
    return out


def check_tensorrt(jetson: dict) -> dict:
    if not _installed("tensorrt"):
        return {"ok": False, "detail": "not installed", "install": INSTALL["tensorrt"]}
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # bindings without libnvinfer: the PyPI placeholders' usual state
        return {"ok": False, "detail": f"the bindings are installed but do not load ({type(e).__name__}: {e})",
                "install": INSTALL["tensorrt"]}
    version = str(trt.__version__)
    v = _version_tuple(version)
    try:
        import tensorrt.plugin as trtp
        plugins, aot = True, hasattr(trtp, "aot_impl")
    except Exception:
        plugins, aot = False, False
    out = {"ok": True, "version": version, "python_plugins": plugins, "aot_plugins": aot and v[:2] >= TRT_AOT_FROM}
    if jetson.get("ok"):
        check, error = jetson["_gate"]
        try:
            check(version, jetson["_platform"])
            out["dla"] = True
        except error:
            out["dla"] = False
    parts = [version, "Python plugins" if plugins else "no Python plugins (< 10.6: ONNX function bodies are built)",
             "AOT plugins" if out["aot_plugins"] else "no AOT plugins (< 10.9)"]
    if "dla" in out:
        parts.append("DLA builds" if out["dla"] else "no DLA in this TensorRT")
    out["detail"] = ", ".join(parts)
    if not out["aot_plugins"]:
        out["install"] = INSTALL["tensorrt.plugin"]
    return out


def check_tensorrt_rtx(gpu: dict) -> dict:
    """TensorRT-RTX: whether it imports, and what it can do here (build only without a GPU, for named
    compute capabilities; build and run with an RTX-class GPU)."""
    from .engines.runtimes import import_tensorrt_rtx, rtx_version
    from .engines.target import TensorRTNotInstalled

    if rtx_version() is None and not (_installed("tensorrt_rtx") or _installed("tensorrt_rtx_bindings")):
        return {"ok": False, "detail": "not installed", "install": INSTALL["tensorrt-rtx"]}
    try:
        trt = import_tensorrt_rtx()
    except TensorRTNotInstalled as e:
        return {"ok": False, "detail": str(e).splitlines()[-1], "install": INSTALL["tensorrt-rtx"]}
    version = str(trt.__version__)
    targets = sorted(int(n[2:]) for n in dir(trt.ComputeCapability) if re.fullmatch(r"SM\d+", n))
    cc = (gpu.get("gpus") or [{}])[0].get("compute_capability")
    runs_here = bool(gpu.get("ok")) and cc is not None and int(float(cc) * 10) in targets
    can = "build and run (this GPU)" if runs_here else (
        "build only: ast-build --target rtx --compute-capability LIST (no GPU here to run on)" if not gpu.get("ok")
        else f"build only: this GPU (compute capability {cc}) is not one TensorRT-RTX targets")
    return {"ok": True, "version": version, "compute_capabilities": targets, "can": can, "runs_here": runs_here,
            "detail": f"{version}, {can}; targets SM {', '.join(map(str, targets))}"}


def _tiny_model_bytes() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "doctor", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # old enough for every ONNX Runtime the extras admit
    return model.SerializeToString()


def check_onnxruntime() -> dict:
    dists = {name: _dist_version(name) for name in ("onnxruntime", "onnxruntime-gpu")}
    installed = {k: v for k, v in dists.items() if v}
    if not _installed("onnxruntime"):
        return {"ok": False, "detail": "not installed", "install": INSTALL["onnxruntime"], "providers": {}}
    try:
        import numpy as np
        import onnxruntime as ort
    except Exception as e:
        return {"ok": False, "detail": f"import fails: {type(e).__name__}: {e}", "install": INSTALL["onnxruntime"],
                "providers": {}}
    model = _tiny_model_bytes()
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # the CUDA/TensorRT providers' load failures are what we report, not log
    started = {}
    for provider in ort.get_available_providers():
        try:
            session = ort.InferenceSession(model, sess_options=opts, providers=[provider])
            ok = session.get_providers()[0] == provider  # ORT falls back to the CPU silently
            if ok:
                session.run(None, {"x": np.ones((1, 4), np.float32)})
            started[provider] = "starts" if ok else "listed, falls back to the CPU"
        except Exception as e:
            started[provider] = f"fails: {str(e).splitlines()[0][:120]}"
    out = {"ok": started.get("CPUExecutionProvider") == "starts" or any(v == "starts" for v in started.values()),
           "version": ort.__version__, "distributions": installed, "providers": started}
    running = [p.replace("ExecutionProvider", "") for p, v in started.items() if v == "starts"]
    out["detail"] = f"{ort.__version__} ({', '.join(installed) or 'unknown package'}): providers that start: " + \
        (", ".join(running) or "none")
    if len(installed) > 1:
        out["warning"] = ("onnxruntime and onnxruntime-gpu are both installed and overwrite each other's module: "
                          "pip uninstall -y onnxruntime onnxruntime-gpu, then install one")
    if "CUDAExecutionProvider" not in running:
        out["install"] = INSTALL["onnxruntime-cuda"]
    return out


MATRIX_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni")  # /proc/cpuinfo: BF16 and INT8 units


def cpu_matrix_flags() -> list[str]:
    """The CPU's BF16 / INT8 matrix and dot-product flags (Linux /proc/cpuinfo; [] elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [flag for flag in MATRIX_FLAGS if flag in flags]
    except OSError:
        pass
    return []


def check_openvino() -> dict:
    """OpenVINO's version, its CPU capabilities, and what each export precision computes in here."""
    version = _dist_version("openvino")
    flags = cpu_matrix_flags()
    if version is None:
        return {"ok": False, "detail": f"not installed (CPU units: {', '.join(flags) or 'none listed'})",
                "install": INSTALL["openvino"], "cpu_flags": flags}
    try:
        from .backends.openvino import cpu_capabilities, inference_precision

        caps = cpu_capabilities()
    except Exception as e:
        return {"ok": False, "detail": f"import fails: {type(e).__name__}: {str(e)[:200]}",
                "install": INSTALL["openvino"], "cpu_flags": flags}
    computes = {p: inference_precision(p, caps) for p in ("fp32", "fp16", "int8")}
    native = "native BF16" if "BF16" in caps else "no native BF16"
    return {"ok": True, "version": version, "capabilities": caps, "cpu_flags": flags, "computes": computes,
            "detail": f"{version}: CPU {', '.join(caps)} ({native}; {', '.join(flags) or 'no AMX/VNNI flags'}); "
                      f"FP32 exports compute in {computes['fp32']}, FP16 in {computes['fp16']}, INT8 in integer "
                      f"kernels + {computes['int8']}"}


def check_triton() -> dict:
    version = _dist_version("triton")
    if version is None:
        return {"ok": False, "detail": "not installed", "install": INSTALL["triton"]}
    return {"ok": True, "version": version, "detail": f"{version}"}


def check_tritonserver() -> dict:
    path = shutil.which("tritonserver")
    where = "PATH"
    if path is None:
        spec = importlib.util.find_spec("pytriton")  # no import: the bundle's binary is a file in the package
        if spec is not None and spec.submodule_search_locations:
            for root in spec.submodule_search_locations:
                candidate = os.path.join(root, "tritonserver", "bin", "tritonserver")
                if os.path.isfile(candidate):
                    path, where = candidate, f"nvidia-pytriton {_dist_version('nvidia-pytriton') or ''}".strip()
                    break
    if path is None:
        return {"ok": False, "detail": "no tritonserver on PATH and no nvidia-pytriton bundle",
                "install": INSTALL["tritonserver"]}
    return {"ok": True, "path": path, "detail": f"{path} ({where})"}


def available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(gpu: dict) -> dict:
    ram = available_ram()
    cpu_budget = None if ram is None else min(CPU_BUDGET_CAP, ram // 4)
    out = {"ok": ram is not None, "available_ram": ram, "cpu_budget": cpu_budget}
    detail = f"RAM available {fmt_bytes(ram)}: CPU budget {fmt_bytes(cpu_budget)}"
    free = gpu["gpus"][0].get("free") if gpu.get("gpus") else None
    if free is not None:
        out["gpu_free"] = free
        out["cuda_budget"] = int(free * CUDA_BUDGET_FRACTION)
        detail += f"; GPU free {fmt_bytes(free)}: CUDA budget {fmt_bytes(out['cuda_budget'])}"
    detail += " (default of --max-memory)"
    out["detail"] = detail
    return out


def collect() -> dict:
    """Every check, in table order: {name: {"ok", "detail", ...}}."""
    torch_info = check_torch()
    gpu = check_gpu(torch_info)
    jetson = check_jetson()
    report = {
        "python": {"ok": True, "version": platform.python_version(), "machine": platform.machine(),
                   "detail": f"{platform.python_version()} on {platform.system()} {platform.machine()}"},
        "pytorch": torch_info,
        "gpu": gpu,
        "jetson": jetson,
        "tensorrt": check_tensorrt(jetson),
        "tensorrt_rtx": check_tensorrt_rtx(gpu),
        "onnxruntime": check_onnxruntime(),
        "openvino": check_openvino(),
        "triton": check_triton(),
        "tritonserver": check_tritonserver(),
        "memory": check_memory(gpu),
    }
    if not gpu["ok"] and report["onnxruntime"].get("install") == INSTALL["onnxruntime-cuda"]:
        del report["onnxruntime"]["install"]  # no GPU: the CPU provider is all there is to have
    for value in report.values():  # private helpers for the checks, not part of the report
        for key in [k for k in value if k.startswith("_")]:
            del value[key]
    return report


LABELS = {"python": "Python", "pytorch": "PyTorch", "gpu": "CUDA GPU", "jetson": "Jetson", "tensorrt": "TensorRT",
          "tensorrt_rtx": "TensorRT-RTX",
          "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "runtime": "runtime auto", "triton": "Triton compiler", "tritonserver": "Triton Inference Server",
          "memory": "memory"}


def format_table(report: dict) -> str:
    width = max(len(v) for v in LABELS.values())
    lines = []
    for key, value in report.items():
        mark = "ok" if value.get("ok") else ("--" if key == "jetson" else "no")
        lines.append(f"{LABELS.get(key, key):<{width}}  {mark:<2}  {value.get('detail', '')}")
        if value.get("warning"):
            lines.append(f"{'':<{width}}  !!  {value['warning']}")
    todo = [(LABELS.get(k, k), v["install"]) for k, v in report.items() if v.get("install")]
    if todo:
        lines += ["", "To add what is missing:"]
        lines += [f"  {label}: {hint}" for label, hint in todo]
    return "\n".join(lines)
