"""FP32 / FP16 / INT8 ONNX in onnxruntime on the CPU: latency, and PSNR against the FP32 model and
against the clean image on the demo's held-out rainy pairs.

    python benchmarks/bench_precision.py [--models demo ast_b] [--size 256] [--threads 2] [--repeats 5]

The demo model runs with its trained weights; AST-B with random weights (its latency is what
matters; its PSNR against the clean image means nothing). onnxruntime's CPU provider runs most
FP16 nodes in FP32 behind casts and INT8 Q/DQ through its own kernels, so these latencies say
nothing about TensorRT: they show the converted graphs run and what they cost on a CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def export(model, path: Path, multiple: int) -> float:
    import torch

    start = time.time()
    try:
        from ast_deploy.export import export_onnx
    except ImportError:
        export_onnx = None
    if export_onnx is not None:
        export_onnx(model, path)
    else:  # before the exporter lands: a plain dynamo export, no custom nodes
        from torch.export import Dim

        x = torch.rand(2, 3, multiple, multiple)
        shapes = {"x": {0: Dim("batch"), 2: multiple * Dim("h"), 3: multiple * Dim("w")}}
        torch.onnx.export(model, (x,), dynamo=True, input_names=["input"], output_names=["output"],
                          dynamic_shapes=shapes, verbose=False).save(str(path))
    return time.time() - start


def latency_ms(path: Path, x: np.ndarray, threads: int, repeats: int) -> tuple[float, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: x})  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def build(name: str):
    import torch

    from ast_deploy.model import AST, AST_B

    if name == "demo":
        from ast_deploy.demo import build_demo_model

        return build_demo_model(), "demo (trained)"
    torch.manual_seed(0)
    return AST(**AST_B).eval(), "AST-B (random)"


def bench(name: str, args, work: Path) -> list[dict]:
    from ast_deploy.precision.calibration import default_calibration_folder, load_calibration
    from ast_deploy.precision.fp16 import convert_fp16
    from ast_deploy.precision.int8 import quantize_int8
    from ast_deploy.precision.validate import compare_models, demo_cases

    model, label = build(name)
    m = model.size_multiple
    paths = {p: work / f"{name}_{p}.onnx" for p in ("fp32", "fp16", "int8")}
    timings = {"export_s": export(model, paths["fp32"], m)}
    calib = load_calibration(default_calibration_folder(), m)
    cases = demo_cases(m, args.size)
    start = time.time()
    fp16 = convert_fp16(paths["fp32"], paths["fp16"], calib, validate=cases)
    timings["fp16_s"] = time.time() - start
    start = time.time()
    int8 = quantize_int8(paths["fp32"], paths["int8"], calib, validate=cases)
    timings["int8_s"] = time.time() - start
    fp32 = compare_models(paths["fp32"], paths["fp32"], cases)
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, args.size, args.size)).astype(np.float32)
    rows = []
    for precision, validation, extra in (("fp32", fp32, ""), ("fp16", fp16["validation"],
                                          f"{len(fp16['kept_fp32'])} nodes kept FP32"),
                                         ("int8", int8["validation"],
                                          f"{int8['quantized_nodes']}/{int8['weighted_nodes']} weighted nodes INT8")):
        median, best = latency_ms(paths[precision], x, args.threads, args.repeats)
        rows.append(dict(model=label, precision=precision, size=f"{args.size}x{args.size}",
                         latency_ms=round(median, 1), best_ms=round(best, 1),
                         file_mb=round(paths[precision].stat().st_size / 2 ** 20, 2),
                         psnr_vs_fp32=validation["min_psnr_vs_fp32"] if precision != "fp32" else float("inf"),
                         psnr_vs_clean=validation.get("mean_candidate_vs_clean"),
                         rainy_vs_clean=validation.get("mean_input_vs_clean"), note=extra))
    print(f"{label}: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), file=sys.stderr)
    rows[0]["timings"] = {k: round(v, 1) for k, v in timings.items()}
    fp16.pop("overflow", None)
    return rows, {"fp16": fp16, "int8": int8}


def markdown(rows: list[dict]) -> str:
    head = "| model | precision | input | latency ms (median) | best ms | file MB | PSNR vs FP32 (min) | PSNR vs clean (mean) | note |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        vs32 = "ref" if r["precision"] == "fp32" else f"{r['psnr_vs_fp32']:.2f}"
        clean = "-" if r["psnr_vs_clean"] is None else f"{r['psnr_vs_clean']:.2f}"
        if r["model"].startswith("AST-B"):
            clean = "n/a (random weights)"
        lines.append(f"| {r['model']} | {r['precision']} | {r['size']} | {r['latency_ms']} | {r['best_ms']} | "
                     f"{r['file_mb']} | {vs32} | {clean} | {r['note']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["demo", "ast_b"], choices=["demo", "ast_b"])
    p.add_argument("--size", type=int, default=256, help="square input side (latency and validation)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--keep", type=Path, help="keep the ONNX files in this folder")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows, reports = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models:
            model_rows, reports[name] = bench(name, args, work)
            rows.extend(model_rows)
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(rows=rows, reports=reports), indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
