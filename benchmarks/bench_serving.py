"""Requests/s and latency through Triton Inference Server (HTTP and gRPC) against the in-process
Runner, on the same model and the same photos, with 1, 4 and 16 clients.

    python benchmarks/bench_serving.py [--clients 1,4,16] [--requests 24] [--repeats 3] [--size 160x224]

The model is the demo AST (trained weights) exported to a dynamic ONNX; the server runs it with the
``python`` core backend (our ONNX Runtime backend, the only one the bundled server has) behind the
front model, which applies the derain protocol (square-pad:128). The in-process side is
``Runner(model.onnx, protocol="square-pad:128")`` shared by the client threads. Each configuration
sends ``--requests`` photos spread over the clients (each client sends its share one after another),
after one warm-up round; the numbers are the median over ``--repeats`` runs, latencies are per
request. Results are printed as a Markdown table and written to benchmarks/results/serving_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def export_demo(path: Path) -> Path:
    import onnx
    import torch

    from ast_deploy.demo import build_demo_model

    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(build_demo_model(), (torch.rand(1, 3, 128, 128),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"], dynamic_axes={"input": axes, "output": axes})
    model = onnx.load(str(path))
    for key, value in {"ast.size_multiple": "64", "ast.task": "derain"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def make_photos(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hh, ww = h + (i % 3) * 7 - 7, w - (i % 2) * 9  # odd sizes around HxW
        yy, xx = np.mgrid[0:hh, 0:ww] / max(hh, ww)
        base = np.stack([0.5 + 0.4 * np.sin(6 * xx + c + i) * np.cos(4 * yy - c) for c in (0.0, 1.0, 2.0)], -1)
        streaks = (rng.random((hh, ww)) > 0.97)[..., None] * 0.4
        out.append((np.clip(base + streaks, 0, 1) * 255).astype(np.uint8))
    return out


def run_load(runner, photos, clients: int, requests: int) -> dict:
    """``requests`` photos over ``clients`` threads; returns requests/s and latency percentiles."""
    latencies, errors = [], []
    lock = threading.Lock()

    def client(k):
        for i in range(k, requests, clients):
            start = time.perf_counter()
            try:
                runner(photos[i % len(photos)])
            except Exception as e:  # counted, reported
                errors.append(e)
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    lat = np.array(latencies) * 1000
    return {"rps": requests / wall, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--requests", type=int, default=24, help="requests per run and configuration (default 24)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", default="160x224", help="photo size HxW (odd sizes around it; default 160x224)")
    p.add_argument("--front-instances", type=int, default=4)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serving_cpu.json"))
    args = p.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    h, w = (int(v) for v in args.size.lower().split("x"))

    from ast_deploy.runner import Runner
    from ast_deploy.serving.repository import write_repository
    from ast_deploy.serving.server import TritonServer, free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    onnx_path = export_demo(tmp / "demo.onnx")
    write_repository(onnx_path, tmp / "repo", name="derain", backend="python", front_instances=args.front_instances)
    photos = make_photos(8, h, w)
    local = Runner(str(onnx_path), protocol="square-pad:128")
    results = []
    with TritonServer(tmp / "repo", http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        runners = {"in-process": local, "http": Runner(server.urls["http"] + "/derain"),
                   "grpc": Runner(server.urls["grpc"] + "/derain")}
        for got, want in ((runners["http"](photos[0]), local(photos[0])), (runners["grpc"](photos[1]), local(photos[1]))):
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, "served output differs from the local Runner"
        for n in clients:
            for mode, runner in runners.items():
                run_load(runner, photos, n, n)  # warm-up: every client once
                runs = [run_load(runner, photos, n, max(args.requests, n)) for _ in range(args.repeats)]
                row = {"mode": mode, "clients": n, **{k: statistics.median(r[k] for r in runs) for k in runs[0]}}
                results.append(row)
                print(f"{mode:10s} clients={n:2d}  {row['rps']:6.2f} req/s  p50 {row['p50_ms']:7.0f} ms  "
                      f"p99 {row['p99_ms']:7.0f} ms", file=sys.stderr, flush=True)
        for runner in runners.values():
            runner.backend.close()
    base = {r["clients"]: r["rps"] for r in results if r["mode"] == "in-process"}
    print(f"\nDemo AST, photos ~{h}x{w} (square-pad:128 -> 256x256), {args.requests} requests per run, median of "
          f"{args.repeats} runs, server: bundled tritonserver 2.51, python core backend, {args.front_instances} "
          "front instances\n")
    print("| path | clients | requests/s | p50 ms | p99 ms | requests/s vs in-process |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['mode']} | {r['clients']} | {r['rps']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
              f"{r['rps'] / base[r['clients']]:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"size": args.size, "requests": args.requests, "repeats": args.repeats,
                               "front_instances": args.front_instances, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
