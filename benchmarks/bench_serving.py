"""Requests/s and latency through Triton Inference Server (HTTP and gRPC) against the in-process
Runner, on the same model and the same photos, with 1, 4 and 16 clients; with ``--load``, the
reliability run (issue 24) instead; with ``--photo-mp``, one big photo through the server.

    python benchmarks/bench_serving.py [--clients 1,4,16] [--requests 24] [--repeats 3] [--size 160x224]
    python benchmarks/bench_serving.py --load [--load-clients 64] [--load-requests 500] [--size 48x64]
    python benchmarks/bench_serving.py --photo-mp 24 [--max-memory 2G]

The model is the demo AST (trained weights) exported to a dynamic ONNX; the server runs it with the
``python`` core backend (our ONNX Runtime backend, the only one the bundled server has) behind the
front model, which applies the derain protocol (square-pad:128). The in-process side is
``Runner(model.onnx, protocol="square-pad:128")`` shared by the client threads. Each configuration
sends ``--requests`` photos spread over the clients (each client sends its share one after another),
after one warm-up round; the numbers are the median over ``--repeats`` runs, latencies are per
request. Results are printed as a Markdown table and written to benchmarks/results/serving_cpu.json.

``--load``: ``--load-clients`` threads share one ``Runner(URL)`` per protocol (HTTP, then gRPC), each
sending whole uint8 photos until ``--load-requests`` per protocol are answered; every answer is compared
with the local Runner's (within 1/255); errors are counted. The server's resident memory (tritonserver
and its stubs, psutil) is read after the first 100 requests and after the last; the core's statistics
(``/v2/models/derain_core/stats``: executions, inferences, batch sizes) show the dynamic batching. The
row goes to benchmarks/results/serving_load.json.

``--photo-mp N``: an N-megapixel photo (3:2) through the server (gRPC, ``IMAGE``), with the core's
measured cost, the plan the server ran and the core process's peak resident growth (VmHWM reset
first) against the served budget (``--max-memory``, per core instance); results/serving_photo.json.
"""

from __future__ import annotations

import argparse
import itertools
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


def server_rss(server) -> int:
    """Resident bytes of the server and its stubs (psutil)."""
    import psutil

    root = psutil.Process(server.process.pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def core_statistics(http_url: str, core: str = "derain_core") -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{http_url}/v2/models/{core}/stats", timeout=30) as r:
        stats = json.loads(r.read())["model_stats"][0]
    return {"inferences": int(stats["inference_count"]), "executions": int(stats["execution_count"]),
            "batches": {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}}


def core_process(repo: Path, core: str = "derain_core"):
    import psutil

    model = str(Path(repo).resolve() / core / "1" / "model.py")
    return next(p for p in psutil.process_iter(["cmdline"]) if model in " ".join(p.info["cmdline"] or []))


def hammer(runner, photos, expected, clients: int, requests: int) -> dict:
    """``requests`` photos over ``clients`` threads (each takes the next until all are sent); latencies,
    errors, and answers that differ from ``expected`` by more than 1/255."""
    counter, lock = itertools.count(), threading.Lock()
    latencies, errors, mismatches = [], [], []

    def client():
        while (i := next(counter)) < requests:
            k = i % len(photos)
            start = time.perf_counter()
            try:
                out = runner(photos[k])
            except Exception as e:  # counted, reported
                errors.append(repr(e)[:300])
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
            if out.shape != expected[k].shape or np.abs(out.astype(int) - expected[k].astype(int)).max() > 1:
                mismatches.append(i)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"wall": time.perf_counter() - start, "latencies": latencies, "errors": errors, "mismatches": mismatches}


def summarize(parts: list[dict], clients: int) -> dict:
    lat = np.array([x for p in parts for x in p["latencies"]]) * 1000
    wall = sum(p["wall"] for p in parts)
    done = len(lat) + sum(len(p["errors"]) for p in parts)
    return {"clients": clients, "requests": done, "errors": sum(len(p["errors"]) for p in parts),
            "mismatches": sum(len(p["mismatches"]) for p in parts),
            "first_error": next((p["errors"][0] for p in parts if p["errors"]), None),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "rps": done / wall}


def run_reliability(args, onnx_path: Path, tmp: Path) -> dict:
    """The load run (see the module's docstring): one server, HTTP then gRPC."""
    from ast_deploy.runner import Runner
    from ast_deploy.serving.repository import write_repository
    from ast_deploy.serving.server import TritonServer, free_port

    h, w = (int(v) for v in args.size.lower().split("x"))
    write_repository(onnx_path, tmp / "load", name="derain", backend="python", front_instances=args.front_instances,
                     protocol=args.load_protocol)
    photos = make_photos(8, h, w)
    local = Runner(str(onnx_path), protocol=args.load_protocol)
    expected = [local(p) for p in photos]
    with TritonServer(tmp / "load", http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        runners = {kind: Runner(f"{server.urls[kind]}/derain") for kind in ("http", "grpc")}
        before = core_statistics(server.urls["http"])
        parts, memory, done = {"http": [], "grpc": []}, {}, 0
        # both front ends in every stretch: 100 requests (then the first memory reading), a half, the rest
        n = args.load_requests
        for share in (50, n // 2 - 50, n - n // 2):
            for kind in ("http", "grpc"):
                parts[kind].append(hammer(runners[kind], photos, expected, args.load_clients, share))
            done += 2 * share
            memory[done] = server_rss(server)
        after = core_statistics(server.urls["http"])
        for runner in runners.values():
            runner.backend.close()
    batches = {b: n - before["batches"].get(b, 0) for b, n in after["batches"].items()}
    return {"protocol": args.load_protocol, "size": args.size, "front_instances": args.front_instances,
            "http": summarize(parts["http"], args.load_clients), "grpc": summarize(parts["grpc"], args.load_clients),
            "memory": memory, "memory_after_100": memory[100], "memory_after_all": memory[done], "requests_total": done,
            "core_inferences": after["inferences"] - before["inferences"],
            "core_executions": after["executions"] - before["executions"],
            "core_batches": {b: n for b, n in sorted(batches.items()) if n}}


def print_reliability(r: dict) -> None:
    print(f"\nDemo AST, {r['size']} photos ({r['protocol']}), {r['front_instances']} front instances, bundled "
          "tritonserver 2.51, python core backend\n")
    print("| path | clients | requests | errors | outputs = local | p50 ms | p99 ms | requests/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in ("http", "grpc"):
        row = r[kind]
        print(f"| {kind} | {row['clients']} | {row['requests']} | {row['errors']} | "
              f"{row['requests'] - row['errors'] - row['mismatches']}/{row['requests']} | {row['p50_ms']:.0f} | "
              f"{row['p99_ms']:.0f} | {row['rps']:.1f} |")
    ratio = r["memory_after_all"] / r["memory_after_100"]
    readings = ", ".join(f"{m / 2 ** 20:.0f} MiB after {n}" for n, m in r["memory"].items())
    print(f"\nserver memory (tritonserver + stubs): {readings} requests ({ratio:.3f}x the first)")
    print(f"core: {r['core_inferences']} inferences in {r['core_executions']} executions; batch sizes "
          f"{r['core_batches']}")


def big_photo(mp: float) -> np.ndarray:
    """An mp-megapixel 3:2 photo: a photo-like 500x750 patch repeated (mirrored: no seams)."""
    h = int(round((mp * 1e6 / 1.5) ** 0.5))
    w = int(round(1.5 * h))
    patch = make_photos(1, 500, 750)[0]
    block = np.concatenate([patch, patch[::-1]], 0)
    block = np.concatenate([block, block[:, ::-1]], 1)
    return np.ascontiguousarray(np.tile(block, (h // block.shape[0] + 1, w // block.shape[1] + 1, 1))[:h, :w])


def run_photo(args, onnx_path: Path, tmp: Path) -> dict:
    """One big photo through the server; the core's peak resident growth against the budget."""
    from ast_deploy.runner import Runner
    from ast_deploy.serving.repository import write_repository
    from ast_deploy.serving.server import TritonServer, free_port

    write_repository(onnx_path, tmp / "photo", name="derain", backend="python", front_instances=1,
                     max_memory=args.max_memory)
    photo = big_photo(args.photo_mp)
    with TritonServer(tmp / "photo", http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        runner = Runner(f"{server.urls['grpc']}/derain")
        runner.backend.timeout = 3 * 3600  # a 24 MP photo on 2 busy cores takes longer than the default 600 s
        plan = runner.plan_for(*photo.shape[:2])
        core = core_process(tmp / "photo")
        base = core.memory_info().rss
        Path(f"/proc/{core.pid}/clear_refs").write_text("5")
        start = time.perf_counter()
        out = runner(photo)
        seconds = time.perf_counter() - start
        with open(f"/proc/{core.pid}/status") as f:
            peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")) - base
        runner.backend.close()
    cost = runner.cost
    return {"photo": list(photo.shape), "max_memory": args.max_memory, "budget": runner.budget,
            "bytes_per_pixel": cost.bytes_per_pixel, "constant": cost.constant, "plan": str(plan.protocol),
            "batch": plan.batch, "core_peak_growth": peak, "seconds": seconds, "output": list(out.shape),
            "within_budget": peak <= runner.budget}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--requests", type=int, default=24, help="requests per run and configuration (default 24)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", default="160x224", help="photo size HxW (odd sizes around it; default 160x224)")
    p.add_argument("--front-instances", type=int, default=4)
    p.add_argument("--out", help="the JSON file (default benchmarks/results/serving_{cpu,load,photo}.json)")
    p.add_argument("--load", action="store_true", help="the reliability run instead (see above)")
    p.add_argument("--load-clients", type=int, default=64)
    p.add_argument("--load-requests", type=int, default=500, help="requests per protocol (default 500: 1,000 in all)")
    p.add_argument("--load-protocol", default="pad:64", help="the served protocol of the load run (default pad:64)")
    p.add_argument("--photo-mp", type=float, help="one photo of this many megapixels through the server instead")
    p.add_argument("--max-memory", default="2G", help="the served budget of --photo-mp (default 2G)")
    args = p.parse_args(argv)
    if args.load or args.photo_mp:
        return main_reliability(args)
    args.out = args.out or str(REPO / "benchmarks" / "results" / "serving_cpu.json")
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


def main_reliability(args) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    onnx_path = export_demo(tmp / "demo.onnx")
    if args.load:
        args.size = args.size if args.size != "160x224" else "48x64"
        result, name = run_reliability(args, onnx_path, tmp), "serving_load.json"
        print_reliability(result)
    else:
        result, name = run_photo(args, onnx_path, tmp), "serving_photo.json"
        print(json.dumps(result, indent=2))
    out = Path(args.out or REPO / "benchmarks" / "results" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
