"""PyTorch CPU latency of AST-B (random weights): the baseline the ONNX and engine numbers are
measured against.

    python benchmarks/bench_pytorch.py [--sizes 256,512] [--runs 3] [--threads N]

Prints a table of the median (and min) of ``--runs`` timed forward passes after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ast_deploy.model import AST, AST_B


def time_forward(model: torch.nn.Module, size: int, runs: int) -> list[float]:
    x = torch.rand(1, 3, size, size)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up: allocator, oneDNN primitive caches
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AST(**AST_B).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"AST-B ({params:.1f} M parameters), PyTorch {torch.__version__} eager, CPU, {args.threads} threads, "
          f"median of {args.runs} runs")
    print(f"| size | median (s) | min (s) | images/s |")
    print(f"| --- | --- | --- | --- |")
    for size in (int(s) for s in args.sizes.split(",")):
        times = time_forward(model, size, args.runs)
        median = statistics.median(times)
        print(f"| {size}x{size} | {median:.2f} | {min(times):.2f} | {1 / median:.2f} |", flush=True)


if __name__ == "__main__":
    main()
