"""The memory budget: how much working memory a backend may use, and what an image costs it.

- :func:`parse_size` reads ``512M``, ``4G`` (binary units), a number of bytes, or ``unlimited``.
- :func:`default_budget` is the automatic budget: on the CPU the smaller of 2 GiB and a quarter of
  the available RAM, on a CUDA device 80 % of its free memory.
- :func:`measure_cost` measures a backend's working set as ``constant + bytes_per_pixel x (batch x
  H x W)`` from a small probe run (the peak resident set of two sizes, fitted as a line), cached on
  disk per model file, backend, runtime version, device and threads; a cached entry is checked by
  one small run before use, and a corrupt or foreign cache file is ignored with a BudgetWarning.

The budget covers the backend's working set (activations, arenas, batch buffers); the process's
baseline (imports, weights) and the photo's own input and output buffers come on top.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from .bench import peak_rss_bytes, reset_peak_rss
from .fileio import atomic_write

KiB, MiB, GiB = 2 ** 10, 2 ** 20, 2 ** 30
UNLIMITED = math.inf
CPU_CAP = 2 * GiB
CUDA_FRACTION = 0.8
COST_FORMAT = 2  # bump when the probe's method or the cache layout changes: old caches are then ignored
CACHE_FORMAT = "ast_deploy cost cache"  # the cache file's "format" field: anything else is foreign

_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 2 ** 40}


def parse_size(value) -> float:
    """Bytes of a budget: an int, ``"4G"`` / ``"512M"`` / ``"1.5G"`` (binary: MiB, GiB; ``"4GiB"``
    and ``"4GB"`` read the same), or ``"unlimited"`` (``math.inf``)."""
    if isinstance(value, bool):
        raise ValueError(f"memory size must be a number of bytes or a string such as 4G, not {value!r}")
    if isinstance(value, (int, float)):
        if value == math.inf:
            return UNLIMITED
        if not value > 0:
            raise ValueError(f"memory size must be positive, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"memory size must be a number of bytes or a string such as 4G, not {type(value).__name__}")
    text = value.strip().lower()
    if text in ("unlimited", "inf", "none", "off"):
        return UNLIMITED
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", text)
    if not m or (not m.group(2) and "." in m.group(1)):
        raise ValueError(f"cannot read memory size {value!r}: use bytes, or a number with K, M, G or T "
                         "(binary units, e.g. 512M, 4G), or 'unlimited'")
    size = int(float(m.group(1)) * _UNITS[m.group(2)])
    if size <= 0:
        raise ValueError(f"memory size must be positive, got {value!r}")
    return size


def format_size(size: float) -> str:
    if size == UNLIMITED:
        return "unlimited"
    for unit, factor in (("G", GiB), ("M", MiB), ("K", KiB)):
        if size >= factor:
            return f"{size / factor:.1f}{unit}iB".replace(".0", "")
    return f"{int(size)} B"


# --------------------------------------------------------------------------------------------
# What the device has
# --------------------------------------------------------------------------------------------

def available_ram() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else psutil's figure where it is installed."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * KiB
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


class BudgetWarning(UserWarning):
    """The memory budget changed how a photo runs (a task's default protocol re-planned as tiles, a
    plan corrected after a batch used more than planned), or the cost cache could not be used."""


class BudgetError(ValueError):
    """A memory budget that cannot be met or read: a named protocol over an explicit budget, a
    CUDA device whose free memory cannot be queried."""


def query_cuda_free(index: int = 0) -> int:
    """Free bytes on CUDA device ``index`` (torch where it is loaded and sees CUDA, else cuda-python's
    cudaMemGetInfo); a RuntimeError saying why when neither can answer."""
    reasons = []
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return int(torch.cuda.mem_get_info(index)[0])
            reasons.append("torch sees no CUDA device")
        except Exception as e:  # a driver error: reported below with the others
            reasons.append(f"torch: {type(e).__name__}: {e}")
    try:
        from cuda import cudart  # cuda-python
    except ImportError:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            cudart = None
            reasons.append("cuda-python is not installed (pip install cuda-python)")
    if cudart is not None:
        try:
            err, device = cudart.cudaGetDevice()
            if int(err) == 0:
                cudart.cudaSetDevice(index)
                err, free, _ = cudart.cudaMemGetInfo()
                cudart.cudaSetDevice(device)
                if int(err) == 0:
                    return int(free)
            reasons.append(f"cudaMemGetInfo: {err}")
        except Exception as e:  # the runtime library fails to load or to start
            reasons.append(f"cuda-python: {type(e).__name__}: {e}")
    raise RuntimeError("; ".join(reasons))


def cuda_free_memory(index: int = 0) -> int | None:
    """Free bytes on CUDA device ``index``, None when it cannot be queried (:func:`query_cuda_free`
    says why)."""
    try:
        return query_cuda_free(index)
    except Exception:
        return None


def default_budget(device: str = "cpu") -> float:
    """The automatic budget for ``device`` ("cpu", "cuda", "cuda:N"). A CUDA device whose free
    memory cannot be read is a BudgetError (the CPU's rule would be a wrong number for it)."""
    device = str(device)
    if device.startswith("cuda"):
        _, _, index = device.partition(":")
        try:
            return int(CUDA_FRACTION * query_cuda_free(int(index) if index else 0))
        except Exception as e:
            raise BudgetError(f"cannot read the free memory of {device} for the automatic memory budget ({e}); "
                              "give the budget explicitly: max_memory='4G' (--max-memory 4G)") from None
    ram = available_ram()
    return CPU_CAP if ram is None else min(CPU_CAP, ram // 4)


def resolve_budget(max_memory, device: str = "cpu") -> float:
    """``max_memory`` as the Runner takes it (None: automatic) -> bytes, or ``math.inf``."""
    return default_budget(device) if max_memory is None else parse_size(max_memory)


# --------------------------------------------------------------------------------------------
# Resident memory of this process
# --------------------------------------------------------------------------------------------

def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss() -> int:
    kib = _status_kib("VmRSS:")
    if kib is not None:
        return kib * KiB
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return 0


# The peak-RSS mark (VmHWM) and its reset are the benchmark's, under the names this module uses.
reset_peak = reset_peak_rss
peak_rss = peak_rss_bytes


_libc = None


def release_memory() -> None:
    """Give freed heap memory back to the system between images (glibc keeps it otherwise)."""
    global _libc
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        _libc = False


# --------------------------------------------------------------------------------------------
# The cost of an image on a backend
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cost:
    """Working set of one backend call: ``constant + bytes_per_pixel x batch x H x W``."""

    bytes_per_pixel: float
    constant: float = 0.0
    source: str = "measured"

    def of(self, batch: int, h: int, w: int) -> float:
        return self.constant + self.bytes_per_pixel * batch * h * w

    def max_pixels(self, budget: float) -> float:
        """Most pixels (batch x H x W) one call may take within ``budget``."""
        if budget == UNLIMITED or self.bytes_per_pixel <= 0:
            return math.inf
        return max(0.0, (budget - self.constant) / self.bytes_per_pixel)


SAFETY = 1.1  # measured slope and constant are raised by this factor: RSS and allocator noise
# The least a call costs per pixel: its float32 RGB input and output. A small model's probe can see
# no growth of the resident set at all (a page-granular measure), and a zero cost plans batches
# without end.
MIN_BYTES_PER_PIXEL = 24.0


def fit_cost(points: list[tuple[int, int]], source: str = "measured") -> Cost:
    """A line through (pixels, bytes) probe points, never below any of them, raised by SAFETY,
    and at least MIN_BYTES_PER_PIXEL."""
    points = sorted(points)
    if len(points) == 1 or points[-1][0] == points[0][0]:
        pixels, used = points[-1]
        return Cost(max(MIN_BYTES_PER_PIXEL, SAFETY * used / pixels), 0.0, source)
    (p1, b1), (p2, b2) = points[0], points[-1]
    slope = (b2 - b1) / (p2 - p1)
    if slope <= 0:  # noise: charge everything per pixel
        return Cost(max(MIN_BYTES_PER_PIXEL, SAFETY * max(b for _, b in points) / p2), 0.0, source)
    constant = max(0.0, max(b - slope * p for p, b in points))
    return Cost(max(MIN_BYTES_PER_PIXEL, SAFETY * slope), SAFETY * constant, source)


def cache_root() -> Path:
    """The package's cache folder: $AST_DEPLOY_CACHE, else $XDG_CACHE_HOME/ast_deploy (~/.cache/ast_deploy)."""
    root = os.environ.get("AST_DEPLOY_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ast_deploy"
    return Path(root)


def _cache_file() -> Path:
    return cache_root() / "cost.json"


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:24]


def backend_identity(backend) -> str | None:
    """What a backend's cost depends on: its model (file content, or the module's architecture),
    its runtime and version, and its thread count. None when it cannot be named (then no cache)."""
    kind = type(backend).__name__
    path = getattr(backend, "path", None)
    if path is not None and Path(path).is_file():
        model = file_digest(path)
        runtime = getattr(backend, "runtime", None) or ("onnxruntime" if "Onnx" in kind else "tensorrt")
    elif getattr(backend, "model", None) is not None and hasattr(backend.model, "state_dict"):
        shapes = sorted((k, tuple(v.shape)) for k, v in backend.model.state_dict().items())
        extra = getattr(backend.model, "ops_impl", None)
        model = hashlib.sha256(repr((shapes, extra, type(backend.model).__name__)).encode()).hexdigest()[:24]
        runtime = "torch"
    else:
        return None
    module = sys.modules.get(runtime)
    version = getattr(module, "__version__", "?")
    threads = getattr(backend, "intra_op_threads", None) or os.cpu_count()
    device = getattr(backend, "provider", None) or str(getattr(backend, "device", "cpu"))
    settings = getattr(backend, "settings_key", "")  # what else changes its memory (OpenVINO: precision, mode)
    return f"v{COST_FORMAT}:{model}:{kind}:{runtime}-{version}:{device}:t{threads}" + (f":{settings}" if settings else "")


_cache_warnings: set = set()


def _cache_warning(message: str) -> None:
    import warnings

    if message not in _cache_warnings:  # once per process and problem
        _cache_warnings.add(message)
        warnings.warn(message, BudgetWarning, stacklevel=3)


def _valid_entry(entry) -> bool:
    if not isinstance(entry, dict):
        return False
    values = [entry.get("bytes_per_pixel"), entry.get("constant")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return False
    return values[0] > 0 and values[1] >= 0


def _read_cache() -> dict:
    """The cache's valid entries. A file that is not JSON, not this cache's format or version, or
    holds malformed entries is ignored (entirely, or the bad entries) with a BudgetWarning: its
    numbers are never trusted, and it is rewritten when a cost is next measured."""
    path = _cache_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        _cache_warning(f"cannot read the cost cache {path} ({e}): costs are measured again")
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        _cache_warning(f"the cost cache {path} is not valid JSON (corrupt): ignored, costs are measured again")
        return {}
    if isinstance(data, dict) and "format" not in data and all(str(k).startswith("v1:") for k in data):
        return {}  # the first layout of this cache (one flat object): measured again, rewritten in this one
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("entries"), dict):
        _cache_warning(f"{path} is not an ast_deploy cost cache of this version: ignored, costs are measured again "
                       "(delete it to silence this)")
        return {}
    if data.get("version") != COST_FORMAT:
        return {}  # an older or newer layout of ours: measured again, rewritten in this one
    entries = {k: v for k, v in data["entries"].items() if _valid_entry(v)}
    if len(entries) != len(data["entries"]):
        _cache_warning(f"the cost cache {path} has {len(data['entries']) - len(entries)} malformed entr(ies): "
                       "ignored, measured again")
    return entries


def _write_cache(key: str, cost: Cost) -> None:
    entries = _read_cache()
    entries[key] = {**asdict(cost), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    data = {"format": CACHE_FORMAT, "version": COST_FORMAT, "entries": entries}
    try:
        path = _cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only home: measure again next time


def probe_sizes(backend) -> list[tuple[int, int]]:
    """Two square sizes the backend takes (one when its profile allows only one)."""
    m = int(getattr(backend, "size_multiple", 128))
    sizes = [(m, m), (2 * m, 2 * m)]
    shape_range = getattr(backend, "shape_range", None)
    if shape_range is not None:
        (_, min_h, min_w), (_, max_h, max_w) = shape_range
        fits = [(h, w) for h, w in sizes if min_h <= h <= (max_h or h) and min_w <= w <= (max_w or w)]
        sizes = fits or [(min_h, min_w)]
    return sizes


def probe(backend, sizes: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """Run the backend once per size (batch 1) and return (pixels, peak resident growth) points."""
    import numpy as np

    sizes = sizes or probe_sizes(backend)
    rng = np.random.default_rng(0)
    h0, w0 = sizes[0]
    backend.infer(rng.random((1, 3, h0, w0), dtype=np.float32))  # one-time allocations stay out of it
    device = getattr(backend, "device", None)
    if getattr(device, "type", None) == "cuda":  # a PyTorch module on a GPU: its allocator's peak
        import torch

        points = []
        for h, w in sizes:
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            backend.infer(rng.random((1, 3, h, w), dtype=np.float32))
            points.append((h * w, max(0, torch.cuda.max_memory_allocated(device) - before)))
        return points
    if getattr(backend, "provider", None) in GPU_PROVIDERS:  # ONNX Runtime on a GPU: device memory
        return _probe_onnxruntime_gpu(backend, sizes, rng)
    return _probe_rss(backend, sizes, rng)


def _probe_rss(backend, sizes, rng) -> list[tuple[int, int]]:
    """(pixels, peak resident growth of this process) points: the CPU backends. Each size runs twice
    and counts its larger peak: ONNX Runtime plans a memory pattern on the first run at a shape and
    allocates it whole on later runs, which then take about 1.5x the first (2,000 against 3,000
    B/pixel on the demo model at 64 to 896 px), and tiles run one shape many times."""
    import numpy as np

    points = []
    for h, w in sizes:
        x = rng.random((1, 3, h, w), dtype=np.float32)
        peaks = []
        for _ in range(2):
            release_memory()
            before = current_rss()
            if not reset_peak():
                before = peak_rss()  # no reset: only growth above the lifetime peak is seen
            backend.infer(x)
            peaks.append(max(0, peak_rss() - before))
        points.append((h * w, max(peaks)))
        del x
    release_memory()
    return points


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def _probe_onnxruntime_gpu(backend, sizes, rng) -> list[tuple[int, int]]:
    """(pixels, device bytes) points of ONNX Runtime on its CUDA (or TensorRT) provider: the
    device's free memory (cudaMemGetInfo, :func:`cuda_free_memory`) before and after a run whose
    arena is not shrunk, so the arena still holds that run's peak (rounded up to its extension
    chunks: an overestimate), then a shrinking run hands it back. Host RSS says nothing here.
    UNTESTED: written without a GPU; other processes on the device add noise to the deltas, and
    memory a provider frees itself within the run (TensorRT's workspace) is not seen. A device that
    cannot be queried is a BudgetError (the host's resident set says nothing about it)."""
    import numpy as np
    import onnxruntime as ort

    try:
        options = backend.session.get_provider_options().get(backend.provider, {})
        index = int(options.get("device_id", 0))
    except Exception:
        index = 0
    try:
        query_cuda_free(index)
    except Exception as e:
        raise BudgetError(f"{backend.provider} runs on CUDA device {index}, whose free memory cannot be read ({e}): "
                          "its memory cost cannot be measured; give max_memory='unlimited' (--max-memory "
                          "unlimited) to run without a budget") from None
    shrinking, points = backend._run_options, []
    for h, w in sizes:
        x = rng.random((1, 3, h, w), dtype=np.float32)
        before = cuda_free_memory(index)
        backend._run_options = ort.RunOptions()  # the arena keeps what this run took
        try:
            backend.infer(x)
            after = cuda_free_memory(index)
        finally:
            backend._run_options = shrinking
        backend.infer(x)  # the same size again, shrinking: the arena is handed back
        points.append((h * w, max(0, before - after)))
    return points


_MEMO: dict[str, Cost] = {}

CHECK_SLACK = 1.1  # a measurement more than 10 % above the predicted cost is an under-estimate
CHECK_NOISE = 4 * MiB  # resident-set noise below which no measurement is read as an under-estimate


def check_cached_cost(backend, cost: Cost) -> tuple[bool, float, float]:
    """(holds, predicted bytes, measured bytes) of a cost read from the disk cache, checked by one
    probe run at the smallest probe size: a cache written elsewhere, by another version, or edited
    must not decide a plan unchecked. (An over-estimate only wastes memory and is kept.)"""
    h, w = probe_sizes(backend)[0]
    (pixels, used), = probe(backend, [(h, w)])
    predicted = cost.of(1, h, w)
    return used <= CHECK_SLACK * predicted + CHECK_NOISE, predicted, used


def scaled_cost(cost: Cost, used: float, predicted: float) -> Cost:
    """``cost`` raised so that it predicts ``used`` (a measurement) where it predicted ``predicted``,
    with the probe's SAFETY margin on top."""
    factor = SAFETY * used / max(predicted, 1.0)
    return Cost(cost.bytes_per_pixel * factor, cost.constant * factor, "corrected by a measured run")


def remember_cost(backend, cost: Cost) -> None:
    """Replace the backend's cost in memory and in the disk cache (a correction measured in a run)."""
    key = backend_identity(backend)
    if key is not None:
        _MEMO[key] = cost
        _write_cache(key, cost)


def measure_cost(backend, *, use_cache: bool = True) -> Cost:
    """The backend's working set per call, from ``backend.memory_cost()`` where it knows it (a
    TensorRT engine), else a probe run; cached in memory and on disk by :func:`backend_identity`.
    A cost read from disk is checked first (:func:`check_cached_cost`); one that under-estimates is
    raised to the measurement, rewritten, and reported (BudgetWarning)."""
    known = getattr(backend, "memory_cost", None)
    if callable(known):
        cost = known()
        if cost is not None:
            return cost
    key = backend_identity(backend)
    if use_cache and key is not None:
        if key in _MEMO:
            return _MEMO[key]
        entry = _read_cache().get(key)
        if entry:
            cost = Cost(entry["bytes_per_pixel"], entry["constant"], "cached probe")
            holds, predicted, used = check_cached_cost(backend, cost)
            if not holds:  # raised to pass through the measured point (no larger probe: it may not fit)
                cost = scaled_cost(cost, used, predicted)
                _write_cache(key, cost)
                _cache_warning(f"the cached memory cost of {getattr(backend, 'name', 'this model')} under-estimates "
                               f"this run ({format_size(used)} measured where it predicts {format_size(predicted)}; "
                               f"{_cache_file()}): corrected, and plans follow the measurement")
            _MEMO[key] = cost
            return cost
    cost = fit_cost(probe(backend), "probe")
    if key is not None:
        _MEMO[key] = cost
        if use_cache:
            _write_cache(key, cost)
    return cost
