"""Images/s of ast-restore on a local Ray cluster (1 and 2 workers) against the single process, on the
same photos, and the fixed cost of starting the cluster.

    python benchmarks/bench_ray.py [--images 12] [--size 96x128] [--runs 3] [--workers 1,2] [--model PATH]

Each job restores every photo (files in, PNG files out, as ast-restore does). A job has a fixed
part (the single process loads the model; on Ray the actors start and load it) and a rate: both come
from the times at which the results arrive in the driver, t_1 ... t_N after the job starts:
    images/s = (N - 1) / (t_N - t_1),   fixed = t_1 - 1 / (images/s).
Medians of ``--runs`` runs; the ratio is against the single process of the same run.
Default model: the demo checkpoint (derain, protocol pad:64).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_photos(folder: Path, count: int, h: int, w: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        hh, ww = h - 8 * (i % 3), w - 8 * (i % 2)  # mixed sizes around HxW
        path = folder / f"photo{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (hh, ww, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def single_job(photos, out: Path, model: str, runner_kwargs: dict, threads: int) -> list[float]:
    import torch

    from ast_deploy.images import restore_file
    from ast_deploy.scale import open_runner

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start, arrivals = time.perf_counter(), []
        runner = open_runner(model, runner_kwargs)
        for src in photos:
            restore_file(src, out / f"{src.stem}.png", runner)
            arrivals.append(time.perf_counter() - start)
        return arrivals
    finally:
        torch.set_num_threads(saved)


def actor_threads(ray, num_cpus: float) -> str:
    def probe():
        import os

        import torch

        return f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, torch threads {torch.get_num_threads()}"

    return ray.get(ray.remote(num_cpus=num_cpus)(probe).remote())


def ray_job(ray, photos, out: Path, model: str, runner_kwargs: dict, workers: int) -> list[float]:
    from ast_deploy.scale import restore_files

    start, arrivals = time.perf_counter(), []
    for _, _, error in restore_files(ray, [(p, out / f"{p.stem}.png") for p in photos], model, runner_kwargs,
                                     workers=workers):
        if error:
            raise RuntimeError(f"the Ray job failed: {error}")
        arrivals.append(time.perf_counter() - start)
    return arrivals


def split(jobs: list[list[float]]) -> tuple[float, float, float]:
    """(fixed s, images/s, job s): medians over the runs."""
    rates = [(len(t) - 1) / (t[-1] - t[0]) for t in jobs]
    fixed = [t[0] - 1 / r for t, r in zip(jobs, rates)]
    return statistics.median(fixed), statistics.median(rates), statistics.median(t[-1] for t in jobs)


def main(argv=None) -> None:
    from ast_deploy.demo import demo_weights
    from ast_deploy.scale import cluster, pool_size

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--size", default="96x128", help="HxW of the photos (mixed: up to 16 pixels smaller)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--model", default=None, help="checkpoint / .onnx / engine (default: the demo checkpoint)")
    p.add_argument("--task", default="derain")
    p.add_argument("--protocol", default="pad:64")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    model = args.model or str(demo_weights())
    runner_kwargs = dict(task=args.task, protocol=args.protocol)
    workers = [int(n) for n in args.workers.split(",")]
    n = args.images
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        tmp = Path(tmp)
        photos = make_photos(tmp / "in", n, h, w)
        import torch

        threads = torch.get_num_threads()
        singles = sorted({threads, 1}, reverse=True)
        times = {("single", t): [] for t in singles} | {k: [] for k in workers}
        starts, stops = [], []
        for _ in range(args.runs):
            for t in singles:
                times["single", t].append(single_job(photos, tmp / "single", model, runner_kwargs, t))
            start = time.perf_counter()
            with cluster("local") as ray:
                starts.append(time.perf_counter() - start)
                inside = actor_threads(ray, pool_size(ray, max(workers))[1])
                for k in workers:
                    times[k].append(ray_job(ray, photos, tmp / f"ray{k}", model, runner_kwargs, k))
                stop = time.perf_counter()
            stops.append(time.perf_counter() - stop)
    fixed, rate, total = split(times["single", threads])
    print(f"{n} photos of about {h}x{w}, model {Path(model).name} ({args.protocol}), median of {args.runs} runs; "
          f"in an actor: {inside}")
    print("| path | fixed cost per job (s) | images/s | job of %d photos (s) | images/s vs single |" % n)
    print("| --- | --- | --- | --- | --- |")
    for t in singles:
        f, r, tt = split(times["single", t])
        print(f"| single process, {t} thread{'s' if t > 1 else ''} | {f:.2f} (model load) | {r:.2f} | {tt:.1f} | "
              f"{r / rate:.2f} |")
    for k in workers:
        f, r, t = split(times[k])
        print(f"| Ray, {k} worker{'s' if k > 1 else ''} | {f:.2f} (actors start, load the model) | {r:.2f} | "
              f"{t:.1f} | {r / rate:.2f} |")
    print(f"| start a local cluster | {statistics.median(starts):.2f} (stop: {statistics.median(stops):.2f}) | | | |")


if __name__ == "__main__":
    main()
