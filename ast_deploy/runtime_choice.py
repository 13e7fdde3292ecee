"""``runtime="auto"``: which installed CPU runtime runs an ONNX, decided by measurement.

Each installed runtime (ONNX Runtime, OpenVINO) opens the model and runs a short probe (one
synthetic image at a small size, ``probe_size``: one warm-up call each, then ``PROBE_RUNS`` rounds
in which every runtime runs once, so that a change of load during the probe hits all alike; the
median per runtime). The fastest whose output stays within the export precision's tolerance of
ONNX Runtime's (the runtime ast-export validated the file on) is chosen, but ONNX Runtime keeps
the file unless another is at least ``MARGIN`` faster (closer than that is within the spread of
repeated probes here).

The decision and its figures are cached on disk (``<cache>/runtime.json``) and in memory, keyed by
the model file's content, its precision, the runtimes' versions, the thread count and the CPU: a
second Runner on the same file measures nothing, unless the cached decision was measured while
other work kept every core busy (load average above the CPU count) and the machine is quieter now
(the runtimes' ratio moved by a quarter under such load here), which measures it again. The
probe's peak memory per runtime is kept with the figures (the budget's cost per pixel is measured
by the Runner, for the runtime chosen, and cached by the budget).

``AST_RUNTIME=onnxruntime`` (or ``openvino``) in the environment turns ``auto`` into that runtime
without measuring. On a CUDA device ``auto`` is ONNX Runtime (OpenVINO runs here on the CPU only).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

from .budget import cache_root, current_rss, file_digest, peak_rss, release_memory, reset_peak
from .fileio import atomic_write
from .metadata import onnx_precision

ENV = "AST_RUNTIME"
CHOICE_FORMAT = 3  # bump when the probe's method or a runtime's graph changes: old entries are then ignored
PROBE_RUNS = 3
MARGIN = 0.05  # another runtime replaces ONNX Runtime only when its probe is this much faster: closer is noise
PROBE_SIDE = 64  # pixels: the probe's side, rounded up to the model's size multiple (AST-B: 128)
CPU_RUNTIMES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # runtime -> module


@dataclass
class RuntimeChoice:
    """The runtime ``auto`` chose for a model, why, and the figures behind it (per runtime: median
    seconds of the probe, PSNR against ONNX Runtime's output, whether it holds the tolerance, the
    precision it computes in, the memory cost in bytes per pixel, or the error that kept it out)."""

    runtime: str
    reason: str  # "measured", "cached", "measured again, ...", "AST_RUNTIME", "only one installed", "device"
    precision: str | None = None  # the export's
    size: tuple[int, int] | None = None
    tolerance_db: float | None = None
    figures: dict = field(default_factory=dict)
    load: float | None = None  # the 1-minute load average when the probe started

    @property
    def contended(self) -> bool:
        return _busy(self.load)

    def summary(self) -> str:
        head = f"runtime auto -> {self.runtime} ({self.reason}"
        if not self.figures:
            return head + ")"
        h, w = self.size
        parts = []
        for name, f in self.figures.items():
            if "error" in f:
                parts.append(f"{name}: {f['error']}")
                continue
            psnr = "" if name == "onnxruntime" else f", {f['psnr_db']:.1f} dB vs onnxruntime"
            held = "" if f["holds"] else f" (below {self.tolerance_db:g} dB: not chosen)"
            parts.append(f"{name} {f['inference_precision']} {1e3 * f['seconds']:.1f} ms, peak "
                         f"{f['peak_bytes'] / 2 ** 20:.0f} MiB{psnr}{held}")
        load = "" if self.load is None else f", load {self.load:.1f}"
        return f"{head}; {self.precision} export, {h}x{w} probe{load}: " + "; ".join(parts) + ")"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules (blocked), or without a spec
        return False


def installed_runtimes() -> list[str]:
    return [name for name, module in CPU_RUNTIMES.items() if _importable(module)]


def _versions(names) -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in names:
        try:
            out.append(f"{name}-{version(name)}")
        except PackageNotFoundError:  # onnxruntime-gpu and friends: the module's own
            out.append(f"{name}-{getattr(__import__(CPU_RUNTIMES[name]), '__version__', '?')}")
    return ",".join(out)


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # not on this platform
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def choice_key(path, threads: int | None, runtimes) -> str:
    return (f"v{CHOICE_FORMAT}:{file_digest(path)}:{_versions(runtimes)}:t{threads or os.cpu_count()}:"
            f"{_cpu_name()}")


def _cache_file():
    return cache_root() / "runtime.json"


def _read_cache() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, choice: RuntimeChoice) -> None:
    entries = _read_cache()
    entries[key] = {**asdict(choice), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write(_cache_file(), json.dumps(entries, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only home: measure again next time


_MEMO: dict[str, RuntimeChoice] = {}


def forced_runtime() -> str | None:
    """The runtime AST_RUNTIME names (None when unset or "auto"); a ValueError for anything else."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in CPU_RUNTIMES:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: use {', '.join(CPU_RUNTIMES)} or auto")
    return value


def choose_runtime(path, device: str = "cpu", threads: int | None = None, size_multiple: int | None = None,
                   *, use_cache: bool = True) -> RuntimeChoice:
    """The runtime ``auto`` means for the ONNX at ``path`` on ``device`` (see the module's text)."""
    if str(device).startswith("cuda"):
        return RuntimeChoice("onnxruntime", "device")
    forced = forced_runtime()
    if forced:
        return RuntimeChoice(forced, ENV)
    runtimes = installed_runtimes()
    if len(runtimes) < 2:
        return RuntimeChoice(runtimes[0] if runtimes else "onnxruntime", "only one installed")
    key = choice_key(path, threads, runtimes)
    reason = "measured"
    if use_cache:
        if key in _MEMO:
            return _MEMO[key]
        entry = _read_cache().get(key)
        if entry:
            entry.pop("when", None)
            size = entry.pop("size")
            cached = RuntimeChoice(**{**entry, "reason": "cached", "size": tuple(size) if size else None})
            if not (cached.contended and _quiet_now()):
                _MEMO[key] = cached
                return cached
            reason = f"measured again, the cached choice's probe ran at load {cached.load:.1f}"
    choice = measure_runtimes(path, threads, size_multiple)
    choice.reason = reason
    _MEMO[key] = choice
    if use_cache:
        _write_cache(key, choice)
    return choice


def _busy(load: float | None) -> bool:
    """Other work kept every core busy: a load average above the CPU count."""
    return load is not None and load > (os.cpu_count() or 1)


def _quiet_now() -> bool:
    load = load_average()
    return load is not None and not _busy(load)


def probe_size(backend) -> tuple[int, int]:
    """A small square the backend takes: PROBE_SIDE rounded up to its size multiple (its static size
    for a static export)."""
    m = backend.size_multiple
    side = -(-PROBE_SIDE // m) * m
    if backend.shape_range is not None:
        (_, min_h, min_w), (_, max_h, max_w) = backend.shape_range
        return (max(min_h, min(side, max_h or side)), max(min_w, min(side, max_w or side)))
    return side, side


def _warm_up(backend, x):
    """The first call (allocations, OpenVINO's shape-specific compilation) and its peak resident
    growth in bytes."""
    release_memory()
    before = current_rss()
    if not reset_peak():
        before = peak_rss()
    out = backend.infer(x)
    return out, max(0, peak_rss() - before)


def _timed_rounds(backends: dict, x) -> dict:
    """Median seconds per backend over PROBE_RUNS rounds, each backend once per round."""
    seconds = {name: [] for name in backends}
    for _ in range(PROBE_RUNS):
        for name, backend in backends.items():
            start = time.perf_counter()
            backend.infer(x)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def measure_runtimes(path, threads: int | None = None, size_multiple: int | None = None) -> RuntimeChoice:
    """Open the model on each installed CPU runtime, time the probe and check its output against
    ONNX Runtime's; the fastest that holds the tolerance wins (ONNX Runtime when none else does)."""
    from .backends.onnxrt import OnnxRuntimeBackend
    from .backends.openvino import OpenVINOBackend
    from .backends.options import OpenVINOOptions
    from .checks.metrics import psnr
    from .checks.synthetic import synthetic_image
    from .checks.tolerances import tolerance_for

    load = load_average()
    extra = {"size_multiple": size_multiple} if size_multiple else {}
    precision = onnx_precision(path)
    tolerance = tolerance_for(precision).psnr_min
    backends = {"onnxruntime": OnnxRuntimeBackend(path, providers="cpu", intra_op_threads=threads, **extra)}
    size = probe_size(backends["onnxruntime"])
    x = synthetic_image(*size, 0)[None]
    expected, peak = _warm_up(backends["onnxruntime"], x)
    figures = {"onnxruntime": {"peak_bytes": peak, "inference_precision": precision, "holds": True}}
    try:
        try:
            candidate = OpenVINOBackend(path, OpenVINOOptions(threads=threads), **extra)
            out, peak = _warm_up(candidate, x)
            quality = float(psnr(out, expected))
            backends["openvino"] = candidate
            figures["openvino"] = {"peak_bytes": peak, "inference_precision": candidate.inference_precision,
                                   "psnr_db": quality, "holds": quality >= tolerance}
        except Exception as e:  # a model OpenVINO cannot read or run: ONNX Runtime runs it
            figures["openvino"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        for name, seconds in _timed_rounds(backends, x).items():
            figures[name]["seconds"] = seconds
    finally:
        for backend in backends.values():
            backend.close()
    return RuntimeChoice(pick(figures), "measured", precision, size, tolerance, figures, load)


def pick(figures: dict) -> str:
    """The runtime the probe's figures choose: the fastest that holds the tolerance when it is at
    least ``MARGIN`` faster than ONNX Runtime, else ONNX Runtime."""
    usable = [name for name, f in figures.items() if f.get("holds")]
    best = min(usable, key=lambda name: figures[name]["seconds"])
    if figures[best]["seconds"] > (1 - MARGIN) * figures["onnxruntime"]["seconds"]:
        return "onnxruntime"
    return best
