"""AST-B on the CPU in one table: eager PyTorch vs FP32 ONNX vs INT8 ONNX on ONNX Runtime, the
machine's GEMM floor, and where ONNX Runtime's time goes.

    python benchmarks/bench_speed.py [--sizes 256,512] [--threads 2] [--runs 3]
                                     [--placement ort] [--fp32 AST_B.onnx] [--int8 AST_B_INT8.onnx]
                                     [--profile-size 256] [--keep DIR] [--json OUT.json]

Everything is measured in this one process, interleaved (eager, FP32, INT8, eager, FP32, INT8, ...)
after one warm-up each, so load from other processes hits all three alike; the table gives the
median of ``--runs`` and the ratios against eager and against FP32. AST-B has random weights (seed
0): latency is what matters here; the demo model's PSNR is bench_int8_placement.py's business.

GEMM floor: the rate of a 2048^3 float32 ``torch.matmul`` on ``--threads`` threads (best of 5,
measured before and after the latency runs), and AST-B's multiply-accumulates (counted with
``torch.utils.flop_counter`` at the smallest size and scaled by the pixel count: every layer of
AST, windowed attention included, is linear in the pixel count) divided by it: the time the model's
arithmetic would take at that rate. ``ORT / floor`` is the FP32 session's time over that.

Profile: one more FP32 (and INT8) session with ``SessionOptions.enable_profiling`` at
``--profile-size``; the table is each op type's share of the node time of the last of two runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from timing import square_sides  # noqa: E402  (benchmarks/timing.py)


def session(path: Path, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def gemm_rate(threads: int, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of an n^3 float32 matmul (best of ``reps``)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(reps))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def count_macs(model, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 2


def op_shares(profile_json: Path) -> dict[str, float]:
    """Share of node time per op type in the last ``model_run`` of an ORT profile."""
    events = json.loads(profile_json.read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last = runs[-1]
    lo, hi = last["ts"], last["ts"] + last["dur"]
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and lo <= e["ts"] <= hi:
            totals[e.get("args", {}).get("op_name", "?")] += e["dur"]
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def profile(path: Path, threads: int, size: int, work: Path, tag: str) -> dict[str, float]:
    s = session(path, threads, str(work / f"profile_{tag}"))
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, size, size)).astype(np.float32)
    name = s.get_inputs()[0].name
    s.run(None, {name: x})
    s.run(None, {name: x})
    return op_shares(Path(s.end_profiling()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", default="256,512", help="comma-separated square sides (multiples of 128)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed first run of each (reduced setting)")
    p.add_argument("--placement", default="ort", help="quantize_int8 placement for the INT8 export (default: ort)")
    p.add_argument("--calib-images", type=int, default=4, help="calibration images for INT8 (demo set)")
    p.add_argument("--fp32", type=Path, help="existing FP32 export of the seed-0 AST-B (skips the export)")
    p.add_argument("--int8", type=Path, help="existing INT8 ONNX (skips the quantization)")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--profile-size", type=int, default=256, help="0 skips the profile")
    p.add_argument("--keep", type=Path, help="keep the ONNX files and profiles in this folder")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    sizes = square_sides(p, args.sizes)

    import torch

    from ast_deploy.model import AST, AST_B

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AST(**AST_B).eval()
    load0 = os.getloadavg()[0]
    tmp = tempfile.TemporaryDirectory(prefix="bench-speed-")
    work = args.keep or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    fp32, int8 = args.fp32, args.int8
    if fp32 is None:
        from ast_deploy.export import export_onnx

        fp32 = work / "ast_b_fp32.onnx"
        t = time.perf_counter()
        export_onnx(model, fp32)
        print(f"# exported FP32 in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    if int8 is None and not args.no_int8:
        from ast_deploy.precision.calibration import default_calibration_folder, load_calibration
        from ast_deploy.precision.int8 import quantize_int8

        int8 = work / f"ast_b_int8_{args.placement}.onnx"
        calib = load_calibration(default_calibration_folder(), model.size_multiple, limit=args.calib_images)
        t = time.perf_counter()
        quantize_int8(fp32, int8, calib, placement=args.placement)
        print(f"# quantized INT8 ({args.placement}) in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)

    rate = gemm_rate(args.threads)
    macs_small = count_macs(model, min(sizes))
    sessions = {"eager": None, "fp32": session(fp32, args.threads)}
    if int8 is not None:
        sessions["int8"] = session(int8, args.threads)
    rows = []
    for size in sizes:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        feed = x.numpy()

        def runner(key):
            if key == "eager":
                def run():
                    with torch.inference_mode():
                        return model(x).numpy()
            else:
                s = sessions[key]

                def run():
                    return s.run(None, {s.get_inputs()[0].name: feed})[0]
            return run

        fns = {k: runner(k) for k in sessions}
        times = {k: [] for k in fns}
        outs = {}
        for k, fn in fns.items():  # warm-up (or, with --no-warmup, the first timed run)
            start = time.perf_counter()
            outs[k] = fn()
            if args.no_warmup:
                times[k].append(time.perf_counter() - start)
        runs = args.runs - 1 if args.no_warmup else args.runs
        for _ in range(runs):
            for k, fn in fns.items():
                times[k].append(_timed(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        macs = macs_small * (size / min(sizes)) ** 2
        rows.append(dict(size=size, seconds={k: round(v, 3) for k, v in med.items()},
                         macs=macs, fp32_max_abs_diff=float(np.abs(outs["fp32"] - outs["eager"]).max())))
        print(f"# {size}: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()), file=sys.stderr, flush=True)
    rate = max(rate, gemm_rate(args.threads))
    for r in rows:
        r["floor_s"] = r["macs"] * 2 / rate

    shares = {}
    if args.profile_size:
        shares["fp32"] = profile(fp32, args.threads, args.profile_size, work, "fp32")
        if int8 is not None:
            shares["int8"] = profile(int8, args.threads, args.profile_size, work, "int8")
    load1 = os.getloadavg()[0]

    has8 = "int8" in sessions
    print(f"AST-B (random weights, seed 0), {args.threads} threads for PyTorch {torch.__version__} and onnxruntime, "
          f"median of {args.runs} interleaved runs" + (" (no warm-up)" if args.no_warmup else "") + f"; {os.cpu_count()} CPUs, load average {load0:.1f} at start, "
          f"{load1:.1f} at end")
    print(f"GEMM floor: 2048^3 float32 matmul at {rate / 1e9:.0f} GFLOP/s; AST-B {macs_small / 1e9:.1f} GMAC "
          f"at {min(sizes)}x{min(sizes)}" + (f"; INT8 placement {args.placement!r}" if has8 else ""))
    print()
    head = "| size | eager s | ORT FP32 s | FP32 / eager | floor s | FP32 / floor |"
    if has8:
        head += " ORT INT8 s | INT8 / eager | INT8 / FP32 |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for r in rows:
        s = r["seconds"]
        line = (f"| {r['size']}x{r['size']} | {s['eager']:.2f} | {s['fp32']:.2f} | {s['fp32'] / s['eager']:.2f} | "
                f"{r['floor_s']:.2f} | {s['fp32'] / r['floor_s']:.2f} |")
        if has8:
            line += f" {s['int8']:.2f} | {s['int8'] / s['eager']:.2f} | {s['int8'] / s['fp32']:.2f} |"
        print(line)
    if shares:
        print()
        print(f"ONNX Runtime profile at {args.profile_size}x{args.profile_size} (share of node time, last of 2 runs)")
        keys = list(shares)
        ops = sorted({op for v in shares.values() for op in v}, key=lambda op: -max(v.get(op, 0) for v in shares.values()))
        print("| op type | " + " | ".join(keys) + " |")
        print("| --- |" + " --- |" * len(keys))
        for op in ops:
            if max(v.get(op, 0) for v in shares.values()) < 0.005:
                continue
            print(f"| {op} | " + " | ".join(f"{shares[k].get(op, 0) * 100:.1f} %" if op in shares[k] else "-"
                                           for k in keys) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(rows=rows, gemm_flops=rate, shares=shares, load=[load0, load1],
                                             placement=args.placement if has8 else None), indent=1) + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
