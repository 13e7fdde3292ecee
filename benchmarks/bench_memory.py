"""Memory benchmark (issue 10): where memory goes, and what the budget buys.

    python3 benchmarks/bench_memory.py peak   --model demo|astb --backend ort|torch --sizes 256,512 [--onnx PATH]
    python3 benchmarks/bench_memory.py tiles  --onnx DEMO.onnx [--photo coffee] [--overlaps 16,32,64]
    python3 benchmarks/bench_memory.py budget --onnx PATH --max-memory 1G --photo-size 3000x4000
    python3 benchmarks/bench_memory.py all    --demo-onnx PATH --astb-onnx PATH

``peak``: peak resident growth of one forward per size (its own process per measurement: VmHWM
reset before the call), as MiB per megapixel of model input, and the cost the Runner's probe
fits. ``tiles``: demo weights on a rainy photograph, tiled at several overlaps against the whole
image: PSNR (data range 1) and time per pixel (median of --repeats, whole and tiled interleaved).
``budget``: a photo restored under --max-memory in a fresh process; its peak RSS (ru_maxrss)
against the process baseline after loading. Every table is printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MiB = 2 ** 20


def _child(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _open_backend(model: str, backend: str, onnx: str | None):
    from ast_deploy.budget import release_memory

    if backend == "ort":
        from ast_deploy.backends import open_backend

        b = open_backend(onnx)
    else:
        import torch

        from ast_deploy.backends.pytorch import TorchBackend
        from ast_deploy.model import AST, AST_B

        torch.manual_seed(0)
        if model == "demo":
            from ast_deploy.demo import build_demo_model

            module = build_demo_model("derain")
        else:
            module = AST(**AST_B).eval()
        b = TorchBackend(module)
    release_memory()
    return b


def cmd_peak_one(a) -> dict:
    """In this process: the peak resident growth of one forward at a.size (after a warm-up)."""
    from ast_deploy.budget import current_rss, peak_rss, release_memory, reset_peak

    b = _open_backend(a.model, a.backend, a.onnx)
    m = b.size_multiple
    rng = np.random.default_rng(0)
    b.infer(rng.random((1, 3, m, m), dtype=np.float32))
    x = rng.random((1, 3, a.size, a.size), dtype=np.float32)
    release_memory()
    before = current_rss()
    reset_peak()
    start = time.perf_counter()
    b.infer(x)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    return {"baseline_mb": before / MiB, "growth_mb": (peak - before) / MiB, "seconds": seconds}


def cmd_peak(a) -> list[dict]:
    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        r = _child(["peak-one", "--model", a.model, "--backend", a.backend, "--size", str(size)]
                   + (["--onnx", a.onnx] if a.onnx else []))
        mp = size * size / 1e6
        rows.append({"model": a.model, "backend": a.backend, "onnx": Path(a.onnx).name if a.onnx else "-",
                     "size": f"{size}x{size}", "baseline_mb": r["baseline_mb"], "growth_mb": r["growth_mb"],
                     "mb_per_mp": r["growth_mb"] / mp, "seconds": r["seconds"]})
    return rows


def _rainy_photo(name: str, scale: int = 1):
    from ast_deploy.demo.photos import load_photo
    from ast_deploy.demo.rain import add_rain

    photo = load_photo(name)
    if scale > 1:  # a larger photograph: the picture upsampled, rain rendered at the new size
        photo = np.repeat(np.repeat(photo, scale, axis=0), scale, axis=1)
    rainy, _ = add_rain(photo, 5)
    return np.ascontiguousarray(rainy.transpose(2, 0, 1)[None], dtype=np.float32)


def cmd_tiles(a) -> list[dict]:
    """Whole image against tiles: forced SIZE:OVERLAP tiles for each overlap, then the plan the
    budget --max-memory makes (its default overlap, tiles balanced over the photo)."""
    from ast_deploy import Runner
    from ast_deploy.tiling import count_tiles

    x = _rainy_photo(a.photo, a.scale)
    h, w = x.shape[2:]
    whole_runner = Runner(a.onnx, protocol=a.protocol, max_memory="unlimited")
    whole = whole_runner(x)
    variants = [(f"--tile {a.tile}:{o}", dict(max_memory="unlimited", tile=f"{a.tile}:{o}"))
                for o in [int(o) for o in a.overlaps.split(",") if o]]
    if a.max_memory:
        variants.append((f"--max-memory {a.max_memory}", dict(max_memory=a.max_memory)))
    rows = []
    for label, options in variants:
        tiled_runner = Runner(a.onnx, protocol=a.protocol, **options)
        tiled = tiled_runner(x)
        t_whole, t_tiled = [], []
        for _ in range(a.repeats):  # interleaved, so load from other processes hits both alike
            s = time.perf_counter(); whole_runner(x); t_whole.append(time.perf_counter() - s)
            s = time.perf_counter(); tiled_runner(x); t_tiled.append(time.perf_counter() - s)
        mse = float(np.mean((tiled.astype(np.float64) - whole) ** 2))
        plan = tiled_runner.plan_for(h, w)
        rows.append({"photo": f"{a.photo} x{a.scale} {h}x{w}", "run": label,
                     "whole": str(whole_runner.plan_for(h, w).protocol), "tiles": str(plan.protocol),
                     "count": count_tiles(h, w, plan.protocol) if plan.tiled else 1,
                     "psnr_db": 10 * np.log10(1 / mse) if mse else float("inf"),
                     "whole_s": statistics.median(t_whole), "tiled_s": statistics.median(t_tiled),
                     "ratio": statistics.median(t_tiled) / statistics.median(t_whole)})
        print(markdown(rows[-1:]), file=sys.stderr, flush=True)
    return rows


BUDGET_SCRIPT = r"""
import json, os, resource, sys, time
import numpy as np
from ast_deploy import Runner
from ast_deploy.budget import current_rss, peak_rss, release_memory
onnx, max_memory, h, w = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
runner = Runner(onnx, protocol="pad:128" if len(sys.argv) < 6 else sys.argv[5], max_memory=max_memory)
runner.limits()
release_memory()
baseline = current_rss()
photo = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
start = time.perf_counter()
runner(photo)
seconds = time.perf_counter() - start
# the peak of this process's own address space: VmHWM (ru_maxrss also counts, on Linux, the
# resident size of the process that forked it at the moment of exec: a large pytest parent)
peak = peak_rss() if os.path.exists("/proc/self/status") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"baseline": baseline, "peak": peak, "seconds": seconds, "note": runner.tiling_note(),
                  "budget": runner.budget, "plan": str(runner.plan_for(h, w).protocol)}))
"""


def cmd_budget(a) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    h, w = (int(v) for v in a.photo_size.lower().split("x"))
    args = [sys.executable, "-c", BUDGET_SCRIPT, a.onnx, a.max_memory, str(h), str(w), a.protocol]
    subprocess.run(args[:3] + [a.onnx, a.max_memory, "128", "128", a.protocol], env=env, check=True,
                   capture_output=True)  # the cost probe, cached, so the measured run has none
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    budget = r["budget"]
    limit = r["baseline"] + 1.1 * budget
    return [{"onnx": Path(a.onnx).name, "photo": f"{h}x{w}", "max_memory": a.max_memory, "plan": r["plan"],
             "baseline_mb": r["baseline"] / MiB, "peak_mb": r["peak"] / MiB,
             "limit_mb (baseline + budget + 10 %)": limit / MiB, "ok": r["peak"] <= limit, "seconds": r["seconds"]}]


def markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(v):
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("peak-one")
    peak = sub.add_parser("peak")
    for q in (one, peak):
        q.add_argument("--model", choices=["demo", "astb"], default="demo")
        q.add_argument("--backend", choices=["ort", "torch"], default="ort")
        q.add_argument("--onnx")
    one.add_argument("--size", type=int, required=True)
    peak.add_argument("--sizes", default="256,512")
    tiles = sub.add_parser("tiles")
    tiles.add_argument("--onnx", required=True)
    tiles.add_argument("--photo", default="coffee")
    tiles.add_argument("--protocol", default="pad:64")
    tiles.add_argument("--tile", type=int, default=256)
    tiles.add_argument("--overlaps", default="16,32,64")
    tiles.add_argument("--scale", type=int, default=1, help="upsample the photograph by this factor")
    tiles.add_argument("--max-memory", help="also run the plan this budget makes")
    tiles.add_argument("--repeats", type=int, default=3)
    budget = sub.add_parser("budget")
    budget.add_argument("--onnx", required=True)
    budget.add_argument("--max-memory", default="1G")
    budget.add_argument("--photo-size", default="3000x4000")
    budget.add_argument("--protocol", default="pad:128")
    a = p.parse_args(argv)
    if a.cmd == "peak-one":
        print(json.dumps(cmd_peak_one(a)))
        return 0
    rows = {"peak": cmd_peak, "tiles": cmd_tiles, "budget": cmd_budget}[a.cmd](a)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
