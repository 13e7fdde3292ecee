"""Latency, throughput and peak memory of a restoration callable, after warm-up."""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np


def latency_stats(seconds: list[float], batch: int) -> dict:
    """Per-call latency in ms (mean, p50, p90, p99) and throughput in images/s."""
    s = np.asarray(seconds, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no timed runs")
    p50, p90, p99 = np.percentile(s, [50, 90, 99]) * 1e3
    return {"runs": int(s.size), "batch": batch, "mean_ms": float(s.mean() * 1e3), "p50_ms": float(p50),
            "p90_ms": float(p90), "p99_ms": float(p99), "images_per_s": float(batch * s.size / s.sum())}


_carried_peak = 0  # VmHWM folded in by rebase_peak_rss(): the peak before the kernel's mark was moved


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: "5" to /proc/self/clear_refs)."""
    global _carried_peak
    _carried_peak = 0
    return _clear_refs()


def _clear_refs() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rebase_peak_rss() -> bool:
    """Move the kernel's peak-RSS mark down to the current RSS, keeping the peak so far for
    :func:`peak_rss_bytes`: the Runner measures each batch this way (ast_deploy.memcheck) without
    hiding the process's peak from whoever measures around it."""
    global _carried_peak
    _carried_peak = max(_carried_peak, _vm_hwm() or 0)
    return _clear_refs()


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process: since the last reset_peak_rss() where the kernel keeps
    VmHWM (marks moved by rebase_peak_rss() included), else over the process's life (getrusage)."""
    hwm = _vm_hwm()
    if hwm is not None:
        return max(hwm, _carried_peak)
    import resource  # Unix only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def current_peak_mark() -> int | None:
    """The kernel's own mark (VmHWM) since the last reset or rebase; None where there is none."""
    return _vm_hwm()


def _torch_cuda():
    """torch.cuda if this process already uses the GPU (a CPU run must not initialise CUDA)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda
    return None


def benchmark(fn: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, runs: int = 10, warmup: int = 2) -> dict:
    """Time ``fn(batch)`` ``runs`` times after ``warmup`` calls; latency stats plus peak memory
    during the timed and warm-up calls (CPU: resident set; GPU: torch's allocator peak, which misses
    memory TensorRT or onnxruntime allocate themselves)."""
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    rss_reset = reset_peak_rss()
    cuda = _torch_cuda()
    if cuda:
        cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        fn(batch)
    cuda = cuda or _torch_cuda()  # the first call may be what initialised CUDA
    seconds = []
    for _ in range(runs):
        if cuda:
            cuda.synchronize()
        start = time.perf_counter()
        fn(batch)
        if cuda:
            cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    result = latency_stats(seconds, len(batch))
    result["peak_rss_mb"] = peak_rss_bytes() / 2 ** 20
    result["peak_rss_scope"] = "runs" if rss_reset else "process"
    result["peak_gpu_mb"] = cuda.max_memory_allocated() / 2 ** 20 if cuda else None
    return result


def format_table(rows: list[dict]) -> str:
    header = ("source", "size", "batch", "mean ms", "p50 ms", "p90 ms", "p99 ms", "img/s", "peak RSS MB", "GPU MB",
              "baseline MB", "budget")
    lines = [header]
    for r in rows:
        lines.append((r["source"], r["size"], str(r["batch"]), f"{r['mean_ms']:.1f}", f"{r['p50_ms']:.1f}",
                      f"{r['p90_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['images_per_s']:.2f}",
                      f"{r['peak_rss_mb']:.0f}", "-" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f}",
                      "-" if r.get("baseline_rss_mb") is None else f"{r['baseline_rss_mb']:.0f}",
                      str(r.get("max_memory", "-"))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in lines)
