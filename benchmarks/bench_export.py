"""Export benchmark: AST-B (random weights) through ``ast-export``'s pipeline, then ONNX Runtime CPU
latency against PyTorch eager with the same thread count.

    python3 benchmarks/bench_export.py [--threads N] [--sizes 256 512] [--repeats 3] [--onnx PATH]

Prints a table: export time (torch.onnx.export, clean-up, validation on the derain recipe's sizes)
and the median latency of each runtime per size, measured interleaved (torch, ort, torch, ort...)
so that load from other processes hits both alike; targets: export < 90 s on 2 cores, ONNX <= 0.6x
PyTorch. ``--onnx`` skips the export and times an existing file (it must hold the same weights,
i.e. an export of this script's seeded model).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ast_deploy.checks import validate_onnx  # noqa: E402
from ast_deploy.export import export_onnx, load_recipe  # noqa: E402
from ast_deploy.model import AST, AST_B  # noqa: E402
from ast_deploy.ort_session import open_session  # noqa: E402


def ort_session(path: Path, threads: int):
    return open_session(path, intra_op_threads=threads)


def time_export(model: torch.nn.Module, out: Path) -> dict:
    recipe = load_recipe("derain")
    shapes = [(recipe.validation_batch, 3, h, w) for h, w in recipe.validation_sizes]
    start, cpu = time.perf_counter(), time.process_time()
    result = export_onnx(model, out)
    validate_start = time.perf_counter()
    report = validate_onnx(model, out, shapes, recipe.tolerance("fp32"))
    return {"export": result.seconds["export"], "cleanup": result.seconds["cleanup"],
            "validate": time.perf_counter() - validate_start, "total": time.perf_counter() - start,
            "cpu": time.process_time() - cpu, "nodes": result.stats.nodes, "inlined": result.stats.inlined_nodes,
            "passed": report.passed, "report": report}


def time_latency(model: torch.nn.Module, session, size: int, repeats: int) -> tuple[float, float, float]:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    feed = {"input": x.numpy()}

    def run_torch():
        with torch.inference_mode():
            return model(x).numpy()

    def run_ort():
        return session.run(None, feed)[0]

    diff = float(np.abs(run_torch() - run_ort()).max())  # also the warm-up of both
    times = {"torch": [], "ort": []}
    for _ in range(repeats):
        for name, fn in (("torch", run_torch), ("ort", run_ort)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return statistics.median(times["torch"]), statistics.median(times["ort"]), diff


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--onnx", type=Path, help="time this ONNX instead of exporting")
    p.add_argument("--export-runs", type=int, default=3, help="exports timed (the median is the figure)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AST(**AST_B).eval()
    load = os.getloadavg()[0]
    print(f"AST-B, random weights; {args.threads} threads (torch and onnxruntime); "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at start")

    with tempfile.TemporaryDirectory() as tmp:
        path = args.onnx
        if path is None:
            path = Path(tmp) / "ast_b.onnx"
            runs = [time_export(model, path) for _ in range(args.export_runs)]
            e = runs[-1]
            print(f"\nexport: {e['nodes']} nodes ({e['inlined']} with functions inlined), validation "
                  f"{'passed' if all(r['passed'] for r in runs) else 'FAILED'}; median of {len(runs)} run(s)")
            print(f"{'step':<32}{'median s':>10}{'runs':>28}")
            for key, label in (("export", "torch.onnx.export"), ("cleanup", "clean-up + checks + write"),
                               ("validate", "validation (2 sizes, batch 2)"), ("total", "export + validation (wall)"),
                               ("cpu", "total (CPU time, this process)")):
                values = [r[key] for r in runs]
                print(f"{label:<32}{statistics.median(values):>10.1f}{', '.join(f'{v:.1f}' for v in values):>28}")
            total = statistics.median(r["total"] for r in runs)
            print(f"target (issue 16): export + validation <= 60 s -> {'met' if total <= 60 else 'NOT met'}")
        session = ort_session(path, args.threads)
        print(f"\n{'input':<14}{'PyTorch s':>11}{'ORT s':>9}{'ORT/PyTorch':>13}{'max|diff|':>11}")
        ratios = []
        for size in args.sizes:
            t_torch, t_ort, diff = time_latency(model, session, size, args.repeats)
            ratios.append(t_ort / t_torch)
            print(f"{f'1x3x{size}x{size}':<14}{t_torch:>11.2f}{t_ort:>9.2f}{t_ort / t_torch:>13.2f}{diff:>11.1e}")
        print(f"median of {args.repeats}, interleaved; target ORT/PyTorch <= 0.6 -> "
              f"{'met' if max(ratios) <= 0.6 else 'NOT met'}; load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
