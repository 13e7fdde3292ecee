"""AST-B's exports on the CPU runtimes (issue 23): FP32, FP16 and INT8 exports on ONNX Runtime and
OpenVINO, what ``runtime="auto"`` chooses for each, against our eager PyTorch model.

    python benchmarks/bench_cpu_runtimes.py [--sizes 256,512] [--threads 2] [--runs 3] [--work DIR]
                                            [--paths eager,fp32-ort,...] [--parallel-size 256] [--json OUT]
                                            [--one-process]
    python benchmarks/bench_cpu_runtimes.py --profile int8-ov,fp32-ort [--profile-size 256] [--work DIR]

Each path runs in its own process beside its baseline, our eager PyTorch model (AST-B, random, seed 0,
as bench_speed.py makes it): the two interleaved (each once per round, one warm-up round first),
median of ``--runs``; the path's ratio is against the eager run of its own process ("/ eager") and
against the median of all the processes' eager runs ("/ median eager"). One process for
all paths (``--one-process``, every path once per round) is what this script did first; it is kept
to show why it is not the default: with several OpenVINO models loaded beside it, eager PyTorch ran
1.3-2.1x slower than beside one ONNX Runtime session (2026-12-03, AST-B 256x256: 2.55 s beside FP32
ONNX Runtime, 5.42 s beside five OpenVINO and ONNX Runtime models), which made every ratio look better
than a user's process would see. Each child's figures are kept in ``WORK/pairs/PATH.json``.
PSNR (data range 1, unclipped) of each path's output against eager FP32 at each size. Peak memory:
the growth of the process's peak resident set over its resident set before the warm-up call at the
largest size (each path on its own, the other paths' buffers freed). Parallel: images per second
with two requests in flight at once from two threads, on ONNX Runtime (one session shared, as the
Runner shares it) and on OpenVINO's THROUGHPUT mode (two streams), ``--threads`` in total each.

``--profile``: instead of the table, where the named paths' time goes at ``--profile-size``
(cpu_profile.py): OpenVINO's per-layer counters by layer type and by kernel, ONNX Runtime's profile by
op type; shares of one run after a warm-up.

``--keep-heap``: on this virtual machine eager PyTorch spends much of its time in the kernel, mapping
fresh pages for the large buffers that ``malloc`` maps and unmaps on every call (AST-B 256x256: about
1 M minor page faults and 1.8 s of system time in a 2.7 s call; 512x512: half of 13 s), and that cost
moves with the machine's state (2.0 to 4.5 s at 256 in one run). With glibc keeping freed memory in
its heap, the same calls take 1.6 s (256) and 6.5 s (512) with no faults after the first: a steadier
and stricter baseline. ONNX Runtime and OpenVINO keep their own arenas and change little.

Runtimes in a path's name: ``ort`` ONNX Runtime, ``ov`` OpenVINO as the backend runs it (each FRFN
rewritten channels-first), ``ovx`` OpenVINO on the graph as exported (the rewrite off, for comparison).

Exports are made once into ``--work`` (reused when present): FP32 (ast_deploy.export), FP16
(precision.fp16), INT8 with Q/DQ for TensorRT / OpenVINO (the default placement) and INT8 for ONNX
Runtime (``--int8-for onnxruntime``), calibrated on ``--calib-images`` demo images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from timing import square_sides  # noqa: E402  (benchmarks/timing.py)

FILES = {"fp32": "ast_b_fp32.onnx", "fp16": "ast_b_fp16.onnx", "int8": "ast_b_int8_qdq.onnx",
         "int8ort": "ast_b_int8_ort.onnx"}
ALL_PATHS = ("eager", "fp32-ort", "fp32-ov", "fp16-ort", "fp16-ov", "int8-ort", "int8-ov", "int8ort-ort",
             "int8ort-ov", "fp32-ovx", "fp16-ovx", "int8-ovx")


def prepare(model, work: Path, calib_images: int, wanted) -> dict[str, Path]:
    from ast_deploy.precision.calibration import default_calibration_folder, load_calibration

    work.mkdir(parents=True, exist_ok=True)
    files = {k: work / v for k, v in FILES.items()}
    if not files["fp32"].exists():
        from ast_deploy.export import export_onnx

        _step("export FP32", lambda: export_onnx(model, files["fp32"]))
    calib = load_calibration(default_calibration_folder(), model.size_multiple, limit=calib_images)
    if "fp16" in wanted and not files["fp16"].exists():
        from ast_deploy.precision.fp16 import convert_fp16

        _step("FP16", lambda: convert_fp16(files["fp32"], files["fp16"], calib))
    for key, placement in (("int8", "tensorrt"), ("int8ort", "ort")):
        if key in wanted and not files[key].exists():
            from ast_deploy.precision.int8 import quantize_int8

            _step(f"INT8 ({placement})", lambda: quantize_int8(files["fp32"], files[key], calib, placement=placement))
    return files


def _step(what, fn):
    start = time.perf_counter()
    fn()
    print(f"# {what} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def open_path(name: str, files, threads: int, mode: str = "latency"):
    from ast_deploy.backends.onnxrt import OnnxRuntimeBackend
    from ast_deploy.backends.openvino import OpenVINOBackend
    from ast_deploy.backends.options import OpenVINOOptions

    export, runtime = name.split("-")
    if runtime == "ort":
        return OnnxRuntimeBackend(files[export], providers="cpu", intra_op_threads=threads)
    # "ovx": OpenVINO on the graph as exported (the backend's FRFN channels-first rewrite off)
    return OpenVINOBackend(files[export], OpenVINOOptions(threads=threads, mode=mode,
                                                          channels_first_ffn=runtime != "ovx"))


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def measure_size(fns: dict, x, runs: int, memory: bool) -> tuple[dict, dict, dict]:
    """Median seconds per path (interleaved), the outputs, and (``memory``) each path's peak growth."""
    from ast_deploy.budget import current_rss, peak_rss, release_memory, reset_peak

    outs, peaks = {}, {}
    for name, fn in fns.items():  # warm-up round, one path at a time: its peak memory
        release_memory()
        before = current_rss()
        reset_peak()
        outs[name] = fn(x)
        if memory:
            peaks[name] = (peak_rss() - before) / 2 ** 20
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}, outs, peaks


def parallel_rate(backend, x, per_thread: int = 2) -> float:
    """Images per second with two requests in flight (two threads, ``per_thread`` calls each)."""
    backend.infer(x)
    backend.infer(x)  # a second request / buffer set exists before timing
    start = time.perf_counter()
    workers = [threading.Thread(target=lambda: [backend.infer(x) for _ in range(per_thread)]) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return 2 * per_thread / (time.perf_counter() - start)


def auto_choices(files, threads: int) -> dict:
    from ast_deploy.runtime_choice import choose_runtime

    return {k: choose_runtime(p, threads=threads) for k, p in files.items()}


def _paths(parser, args) -> list[str]:
    """``--profile``'s paths (eager excluded), else ``--paths`` (eager included)."""
    paths = [s for s in (args.profile or args.paths).split(",") if s]
    if args.profile and not set(paths) <= set(ALL_PATHS) - {"eager"}:
        parser.error(f"--profile: a subset of {','.join(ALL_PATHS[1:])}")
    if not args.profile and (not set(paths) <= set(ALL_PATHS) or "eager" not in paths):
        parser.error(f"--paths: a subset of {','.join(ALL_PATHS)} with eager")
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", default="256,512", help="comma-separated square sides (multiples of 128)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--paths", default=",".join(ALL_PATHS), help=f"subset of {','.join(ALL_PATHS)}")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-cpu-runtimes"), help="exports (made once)")
    p.add_argument("--calib-images", type=int, default=2)
    p.add_argument("--parallel-size", type=int, default=256, help="0 skips the two-request throughput")
    p.add_argument("--prepare-only", action="store_true", help="make the exports and stop")
    p.add_argument("--json", type=Path)
    p.add_argument("--profile", metavar="PATH[,PATH]", help="profile these paths (not eager) instead of the table")
    p.add_argument("--profile-size", default="256", help="the square side the profile runs at")
    p.add_argument("--one-process", action="store_true",
                   help="all paths in one process (not beside their own eager run; see the text)")
    p.add_argument("--keep-heap", action="store_true",
                   help="glibc keeps freed memory in the heap (mallopt) in every measuring process: eager "
                        "PyTorch's buffers are then not mapped and unmapped on every call (see the text)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # one path beside eager, results to --json
    args = p.parse_args(argv)
    if args.keep_heap:
        keep_heap()
    sizes = square_sides(p, args.profile_size if args.profile else args.sizes)
    paths = _paths(p, args)

    import torch

    from ast_deploy.model import AST, AST_B

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AST(**AST_B).eval()
    files = prepare(model, args.work, args.calib_images, {n.split("-")[0] for n in paths})
    if args.prepare_only:
        return 0
    if args.profile:
        return profile_paths(paths, files, args.threads, sizes[0], args.work)
    if args.child:
        return measure_child(model, args.child, files, sizes, args)
    load0 = os.getloadavg()[0]
    used = {k: v for k, v in files.items() if any(n.startswith(k + "-") for n in paths)}
    choices = auto_choices(used, args.threads)
    if args.one_process:
        rows, parallel = measure_together(model, paths, files, sizes, args)
    else:
        rows, parallel = measure_in_pairs(paths, sizes, args)
    load1 = os.getloadavg()[0]
    report(rows, choices, parallel, args, load0, load1, torch.__version__)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "parallel": parallel, "load": [load0, load1],
                                         "one_process": args.one_process,
                                         "choices": {k: c.runtime for k, c in choices.items()}}, indent=1) + "\n")
    return 0


def keep_heap() -> None:
    """glibc: serve large blocks from the heap and never trim it (mallopt), for this process."""
    import ctypes

    m_trim_threshold, m_mmap_threshold = -1, -3
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 2 ** 31 - 1)):
        raise SystemExit("--keep-heap: mallopt refused (not glibc?)")


def _eager_fn(model):
    import torch

    def eager(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return eager


def _image(size: int, seed: int):
    return np.random.default_rng(seed).random((1, 3, size, size), dtype=np.float32)


def _inputs(sizes):
    return {size: _image(size, size) for size in sizes}


def measure_together(model, paths, files, sizes, args):
    """Every path in this process, once per round (``--one-process``)."""
    backends = {n: open_path(n, files, args.threads) for n in paths if n != "eager"}
    fns = {"eager": _eager_fn(model), **{n: b.infer for n, b in backends.items()}}
    rows = []
    for size, x in _inputs(sizes).items():
        seconds, outs, peaks = measure_size(fns, x, args.runs, memory=size == max(sizes))
        rows.append({"size": size, "seconds": seconds, "eager_seconds": {n: seconds["eager"] for n in seconds},
                     "peak_mib": peaks,
                     "psnr_vs_eager": {n: psnr(o, outs["eager"]) for n, o in outs.items() if n != "eager"}})
        print(f"# {size}: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()), file=sys.stderr, flush=True)
    parallel = {}
    if args.parallel_size:
        x = _image(args.parallel_size, 0)
        for name in backends:
            backend = backends[name] if name.endswith("-ort") else open_path(name, files, args.threads, "throughput")
            parallel[name] = parallel_rate(backend, x)
    return rows, parallel


def measure_child(model, name, files, sizes, args) -> int:
    """``--child``: one path beside eager in this process; its figures to ``--json``."""
    backend = open_path(name, files, args.threads)
    fns = {"eager": _eager_fn(model), name: backend.infer}
    result = {"sizes": {}}
    for size, x in _inputs(sizes).items():
        seconds, outs, peaks = measure_size(fns, x, args.runs, memory=size == max(sizes))
        result["sizes"][size] = {"seconds": seconds, "peak_mib": peaks, "psnr_vs_eager": psnr(outs[name], outs["eager"])}
    if args.parallel_size:
        x = _image(args.parallel_size, 0)
        if not name.endswith("-ort"):
            backend.close()
            backend = open_path(name, files, args.threads, "throughput")
        result["parallel"] = parallel_rate(backend, x)
    args.json.write_text(json.dumps(result))
    return 0


def measure_in_pairs(paths, sizes, args):
    """Each path in a child process of its own, beside eager; rows as ``measure_together`` gives them
    (eager's seconds: the median over the children; each path's ratio: against its own child's)."""
    children = {}
    kept = args.work / "pairs"  # each child's figures stay there: a failure later loses no measurement
    kept.mkdir(parents=True, exist_ok=True)
    for name in [n for n in paths if n != "eager"]:
        out = kept / f"{name}.json"
        cmd = [sys.executable, __file__, "--child", name, "--json", str(out), "--work", str(args.work),
               "--sizes", ",".join(map(str, sizes)), "--threads", str(args.threads), "--runs", str(args.runs),
               "--parallel-size", str(args.parallel_size), "--calib-images", str(args.calib_images)]
        cmd += ["--keep-heap"] if args.keep_heap else []
        subprocess.run(cmd, check=True)
        children[name] = json.loads(out.read_text())
        seconds = children[name]["sizes"]
        print(f"# {name}: " + ", ".join(f"{size}: eager {v['seconds']['eager']:.2f} s, {name} {v['seconds'][name]:.2f} s"
                                          for size, v in seconds.items()), file=sys.stderr, flush=True)
    rows = []
    for size in sizes:
        per = {n: c["sizes"][str(size)] for n, c in children.items()}
        eager = {n: v["seconds"]["eager"] for n, v in per.items()}
        rows.append({"size": size, "seconds": {"eager": statistics.median(eager.values()),
                                               **{n: v["seconds"][n] for n, v in per.items()}},
                     "eager_seconds": eager,
                     "peak_mib": {"eager": statistics.median(v["peak_mib"].get("eager", float("nan"))
                                                             for v in per.values()),
                                  **{n: v["peak_mib"].get(n, float("nan")) for n, v in per.items()}},
                     "psnr_vs_eager": {n: v["psnr_vs_eager"] for n, v in per.items()}})
    parallel = {n: c["parallel"] for n, c in children.items() if "parallel" in c}
    return rows, parallel


def profile_paths(paths, files, threads: int, size: int, work: Path) -> int:
    from cpu_profile import onnxruntime_profile, openvino_profile, print_profile  # benchmarks/cpu_profile.py

    x = np.random.default_rng(1).uniform(0, 1, (1, 3, size, size)).astype(np.float32)
    print(f"{threads} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name in paths:
        export, runtime = name.split("-")
        if runtime in ("ov", "ovx"):
            shares, layer_seconds = openvino_profile(files[export], threads, x, channels_first_ffn=runtime == "ov")
            print(f"\n## {name}: summed layer time {layer_seconds:.3f} s")
        else:
            shares = onnxruntime_profile(files[export], threads, size, work / "profiles")
            print(f"\n## {name}")
        print_profile(name, size, shares)
    return 0


def report(rows, choices, parallel, args, load0, load1, torch_version) -> None:
    import onnxruntime
    import openvino

    where = ("all paths in one process" if args.one_process else
             "each path in its own process beside eager, its ratio against that eager run; eager: the median of those")
    where += "; glibc keeps freed memory (--keep-heap)" if args.keep_heap else "; glibc's default malloc"
    print(f"AST-B (random weights, seed 0), {args.threads} threads, torch {torch_version}, onnxruntime "
          f"{onnxruntime.__version__}, openvino {openvino.__version__.split('-')[0]}; median of {args.runs} "
          f"interleaved runs after a warm-up; {where}; {os.cpu_count()} CPUs, load average {load0:.1f} at start, "
          f"{load1:.1f} at end")
    for key, choice in choices.items():
        print(f"auto on {key}: {choice.summary()}")
    print()
    names = [n for n in rows[0]["seconds"] if n != "eager"]
    head = ("| path | " + " | ".join(f"{r['size']} s | / eager | / median eager | dB vs FP32" for r in rows)
            + " | peak MiB |")
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    print("| eager | " + " | ".join(f"{r['seconds']['eager']:.2f} ({min(r['eager_seconds'].values()):.2f}-"
                                   f"{max(r['eager_seconds'].values()):.2f}) | 1.00 | 1.00 | -" for r in rows)
          + f" | {rows[-1]['peak_mib'].get('eager', float('nan')):.0f} |")
    for n in names:
        export, runtime = n.split("-")
        chosen = choices.get(export)
        auto_runtime = {"ort": "onnxruntime", "ov": "openvino"}.get(runtime)  # "ovx" is never what auto runs
        mark = " (auto)" if chosen and chosen.runtime == auto_runtime else ""
        cells = [f"{r['seconds'][n]:.2f} | {r['seconds'][n] / r['eager_seconds'][n]:.2f} | "
                 f"{r['seconds'][n] / r['seconds']['eager']:.2f} | {r['psnr_vs_eager'][n]:.1f}" for r in rows]
        print(f"| {n}{mark} | " + " | ".join(cells) + f" | {rows[-1]['peak_mib'].get(n, float('nan')):.0f} |")
    if parallel:
        print()
        print(f"two requests in flight at {args.parallel_size}x{args.parallel_size}, images/s: "
              + ", ".join(f"{n} {v:.2f}" for n, v in parallel.items()) + " (OpenVINO in THROUGHPUT mode)")


if __name__ == "__main__":
    sys.exit(main())
