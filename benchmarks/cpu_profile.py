"""Where a CPU path's time goes (bench_cpu_runtimes.py --profile): OpenVINO's per-layer performance
counters (PERF_COUNT) summed by layer type and by the kernel that ran it (``exec_type``, e.g.
``brgconv_avx512_amx_I8`` or ``jit_avx512_FP32``), and ONNX Runtime's session profile summed by op
type (bench_speed.py's). Shares are of the summed layer / node time of one run after a warm-up."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np


def ov_counter_shares(profiling_info) -> dict[str, dict[str, float]]:
    """{"layer type": {type: share}, "kernel": {exec_type: share}, "layer type / kernel": {...}} of
    the executed layers' real time (layers OpenVINO did not execute, status NOT_RUN or
    OPTIMIZED_OUT, count zero)."""
    tables: dict[str, dict[str, float]] = {k: defaultdict(float) for k in ("layer type", "kernel", "layer type / kernel")}
    for layer in profiling_info:
        seconds = layer.real_time.total_seconds()
        tables["layer type"][layer.node_type] += seconds
        tables["kernel"][layer.exec_type] += seconds
        tables["layer type / kernel"][f"{layer.node_type} / {layer.exec_type}"] += seconds
    return {what: _shares(totals) for what, totals in tables.items()}


def _shares(totals: dict[str, float]) -> dict[str, float]:
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v > 0}


def openvino_profile(path: Path, threads: int, x: np.ndarray, channels_first_ffn: bool = True
                     ) -> tuple[dict, float]:
    """(shares, summed layer seconds) of one run of ``x`` after a warm-up, compiled as the backend
    compiles it (same precision, threads, latency mode; ``channels_first_ffn`` False: the graph as
    exported) with PERF_COUNT on."""
    from ast_deploy.backends.openvino import CompiledModelFromOnnx
    from ast_deploy.backends.options import OpenVINOOptions

    options = OpenVINOOptions(threads=threads, channels_first_ffn=channels_first_ffn)
    compiled, _facts = CompiledModelFromOnnx(path, options)(extra_config={"PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer({0: x})
    request.infer({0: x})
    info = request.profiling_info
    return ov_counter_shares(info), sum(layer.real_time.total_seconds() for layer in info)


def onnxruntime_profile(path: Path, threads: int, size: int, work: Path) -> dict[str, dict[str, float]]:
    """{"op type": {op: share}} from ONNX Runtime's session profile (last of two runs)."""
    from bench_speed import profile  # benchmarks/bench_speed.py

    work.mkdir(parents=True, exist_ok=True)
    return {"op type": profile(path, threads, size, work, Path(path).stem)}


def print_profile(name: str, size: int, shares: dict[str, dict[str, float]], top: int = 12) -> None:
    for what, table in shares.items():
        print(f"\n{name} at {size}x{size}, share of the summed {what} time (top {top}):")
        print(f"| {what} | share |\n| --- | --- |")
        rest = sum(list(table.values())[top:])
        for key, share in list(table.items())[:top]:
            print(f"| {key} | {100 * share:.1f} % |")
        if rest:
            print(f"| (the other {len(table) - top}) | {100 * rest:.1f} % |")
