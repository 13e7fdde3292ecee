"""INT8 Q/DQ placements side by side on the demo model: PSNR against FP32 and Q/DQ count per op type.

    python benchmarks/bench_int8_placement.py [--onnx DEMO_FP32.onnx] [--modelopt-python /tmp/venv-modelopt/bin/python]

Placements: ``tensorrt`` (ast_deploy's default: TensorRT's documented pattern), ``ort-per-channel``
(the earlier one) and, when ``--modelopt-python`` names an interpreter with ``nvidia-modelopt[onnx]``
(a scratch environment: it pins an older onnx and onnxruntime-gpu), NVIDIA Model Optimizer's
``modelopt.onnx.quantization.quantize(quantize_mode="int8")`` with max calibration on the same
images and FP32 kept for what it does not quantize. All outputs run in onnxruntime here (CPU). PSNR
is on [0, 1] images with a data range of 1, unclipped (conventions), against the FP32 model, on the
demo's held-out rainy pairs; no exclusions for accuracy (the raw placement is compared).

The Q/DQ counts say where the scales sit: ``act`` pairs on activations, ``weight`` Q/DQ on weights,
per op type of the consumer, and how many weight scales are per-channel.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELOPT_SCRIPT = r"""
import sys, numpy as np
from modelopt.onnx.quantization import quantize
src, data, out = sys.argv[1:4]
quantize(src, quantize_mode="int8", calibration_data={"input": np.load(data)}, calibration_method="max",
         calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=out)
"""


def qdq_counts(path: Path) -> dict:
    import onnx
    from onnx import numpy_helper

    from ast_deploy.precision.graph import tensor_consumers, tensor_producers

    model = onnx.load(str(path))
    init = {t.name: t for t in model.graph.initializer}
    consumers, producers = tensor_consumers(model.graph), tensor_producers(model.graph)
    counts = Counter()
    for dq in (n for n in model.graph.node if n.op_type == "DequantizeLinear"):
        src = dq.input[0]
        is_weight = src in init or (src in producers and producers[src].op_type == "QuantizeLinear"
                                    and producers[src].input[0] in init)
        scale = numpy_helper.to_array(init[dq.input[1]]) if dq.input[1] in init else np.zeros(1)
        for user in consumers.get(dq.output[0], []):
            kind = "weight" if is_weight else "act"
            counts[f"{user.op_type}.{kind}"] += 1
            if is_weight and scale.size > 1:
                counts[f"{user.op_type}.weight_per_channel"] += 1
    counts["Q"] = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    counts["DQ"] = sum(n.op_type == "DequantizeLinear" for n in model.graph.node)
    return dict(sorted(counts.items()))


def psnr_vs(reference: Path, candidate: Path, cases) -> list[float]:
    from ast_deploy.checks.metrics import psnr
    from ast_deploy.precision.validate import run

    ref, out = run(str(reference), cases), run(str(candidate), cases)
    return [round(psnr(o, r), 2) for o, r in zip(out, ref)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", type=Path, help="the demo model's FP32 ONNX (default: export it)")
    p.add_argument("--modelopt-python", help="python of an environment with nvidia-modelopt[onnx]")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "int8_placement.json")
    args = p.parse_args(argv)

    from ast_deploy.demo import DEMO_CONFIG, build_demo_model
    from ast_deploy.model import AST
    from ast_deploy.precision.calibration import default_calibration_folder, load_calibration
    from ast_deploy.precision.int8 import PLACEMENTS, quantize_int8
    from ast_deploy.precision.validate import demo_cases

    tmp = Path(tempfile.mkdtemp(prefix="int8-placement-"))
    fp32 = args.onnx
    if fp32 is None:
        import torch

        from ast_deploy.export import export_onnx

        torch.set_num_threads(2)
        fp32 = tmp / "demo_fp32.onnx"
        export_onnx(build_demo_model(), fp32)
    calib = load_calibration(default_calibration_folder(), AST(**DEMO_CONFIG).size_multiple)
    cases = demo_cases(calib.batches[0].shape[-1] // 2, 256)
    rows = {}
    for placement in PLACEMENTS:
        out = tmp / f"demo_int8_{placement}.onnx"
        quantize_int8(fp32, out, calib, placement=placement, use_cache=True)
        rows[placement] = dict(psnr_vs_fp32=psnr_vs(fp32, out, cases), qdq=qdq_counts(out))
    if args.modelopt_python:
        data = tmp / "calib.npy"
        shapes = {b.shape for b in calib.batches}
        batch = [b for b in calib.batches if b.shape == max(shapes)]
        np.save(data, np.concatenate(batch))
        out = tmp / "demo_int8_modelopt.onnx"
        proc = subprocess.run([args.modelopt_python, "-c", MODELOPT_SCRIPT, str(fp32), str(data), str(out)],
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            rows["modelopt"] = dict(error=" | ".join(tail))
        else:
            try:
                rows["modelopt"] = dict(psnr_vs_fp32=psnr_vs(fp32, out, cases), qdq=qdq_counts(out))
            except Exception as e:  # it wrote a model our onnxruntime cannot run
                rows["modelopt"] = dict(error=f"{type(e).__name__}: {e}"[:500], qdq=qdq_counts(out))
    print(f"{'placement':18} {'min PSNR':>9} {'mean PSNR':>10}  Q/DQ per consumer op")
    for name, r in rows.items():
        if "psnr_vs_fp32" in r:
            v = r["psnr_vs_fp32"]
            print(f"{name:18} {min(v):9.2f} {np.mean(v):10.2f}  {r['qdq']}")
        else:
            print(f"{name:18} {'-':>9} {'-':>10}  {r.get('error')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(cases=[c.name for c in cases], rows=rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
