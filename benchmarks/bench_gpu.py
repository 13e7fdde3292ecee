"""AST-B on a CUDA GPU: PyTorch eager FP32 / FP16 against ONNX Runtime's CUDA provider on our ONNX
(FP32, and the FP16 export), one table, median of several runs in one process.

    python benchmarks/bench_gpu.py [--sizes 256,512,1024] [--runs 10] [--out-md TABLE.md]

PyTorch is timed with CUDA events; ONNX Runtime with IO binding on the device (input and output
stay in GPU memory, so no host copies are counted), synchronised after each run. The ORT rows
appear only where ``onnxruntime-gpu`` is installed and its CUDA provider starts; otherwise the
table says why. Random weights (seed 0). Exits 2 with a message when there is no CUDA GPU.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from timing import cuda_median_ms, square_sides  # noqa: E402  (benchmarks/timing.py)




def ort_cuda_ms(torch, path: Path, x, runs: int) -> float:
    import numpy as np
    import onnxruntime as ort

    from ast_deploy.backends.onnxrt import SessionFromOnnx

    session = SessionFromOnnx(path, providers="cuda")()
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    xt = x.to(torch.float16 if dtype == np.float16 else torch.float32).contiguous()
    binding = session.io_binding()
    binding.bind_input(inp.name, "cuda", 0, dtype, list(xt.shape), xt.data_ptr())
    binding.bind_output(out.name, "cuda", 0)

    def run():
        session.run_with_iobinding(binding)

    for _ in range(3):
        run()
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000)
    del ort
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--out-md", type=Path, help="also write the table (markdown) here")
    args = p.parse_args(argv)
    sizes = square_sides(p, args.sizes)

    import torch

    if not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False); nothing measured",
              file=sys.stderr)
        return 2
    from ast_deploy.model import AST, AST_B

    torch.manual_seed(0)
    model = AST(**AST_B).eval()
    ort_note = None
    onnx_paths = {}
    tmp = tempfile.TemporaryDirectory(prefix="bench-gpu-")
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            ort_note = f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)"
    except ImportError:
        ort_note = "onnxruntime is not installed"
    if ort_note is None:
        from ast_deploy.export import export_onnx
        from ast_deploy.precision.calibration import default_calibration_folder, load_calibration
        from ast_deploy.precision.fp16 import convert_fp16

        onnx_paths["fp32"] = Path(tmp.name) / "ast_b_fp32.onnx"
        export_onnx(model, onnx_paths["fp32"])
        calib = load_calibration(default_calibration_folder(), model.size_multiple, limit=2)
        onnx_paths["fp16"] = Path(tmp.name) / "ast_b_fp16.onnx"
        convert_fp16(onnx_paths["fp32"], onnx_paths["fp16"], calib)
    model = model.cuda()
    model16 = copy.deepcopy(model).half()
    rows = []
    for size in sizes:
        x = torch.rand(1, 3, size, size, device="cuda", generator=torch.Generator("cuda").manual_seed(size))
        row = {"size": size}
        with torch.inference_mode():
            row["eager_fp32"] = cuda_median_ms(lambda: model(x), args.runs)
            x16 = x.half()
            row["eager_fp16"] = cuda_median_ms(lambda: model16(x16), args.runs)
        for name, path in onnx_paths.items():
            try:
                row[f"ort_{name}"] = ort_cuda_ms(torch, path, x, args.runs)
            except Exception as e:  # report, keep the other rows
                row[f"ort_{name}"] = None
                ort_note = f"ORT {name}: {type(e).__name__}: {str(e)[:200]}"
        rows.append(row)
        print(f"# {size}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in row.items() if k != "size" and v),
              file=sys.stderr, flush=True)
        torch.cuda.empty_cache()
    lines = [f"AST-B (random weights), {torch.cuda.get_device_name()}, torch {torch.__version__}, median of {args.runs}, ms",
             "", "| size | eager FP32 | eager FP16 | ORT CUDA FP32 | ORT CUDA FP16 | FP16/FP32 eager | ORT FP32 / eager FP32 | ORT FP16 / eager FP16 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def fmt(v):
        return "-" if v is None else f"{v:.2f}"

    def ratio(a, b):
        return "-" if a is None or b is None else f"{a / b:.2f}"

    for r in rows:
        lines.append(f"| {r['size']}x{r['size']} | {fmt(r['eager_fp32'])} | {fmt(r['eager_fp16'])} | "
                     f"{fmt(r.get('ort_fp32'))} | {fmt(r.get('ort_fp16'))} | {ratio(r['eager_fp16'], r['eager_fp32'])} | "
                     f"{ratio(r.get('ort_fp32'), r['eager_fp32'])} | {ratio(r.get('ort_fp16'), r['eager_fp16'])} |")
    if ort_note:
        lines += ["", f"ONNX Runtime rows missing: {ort_note}"]
    text = "\n".join(lines)
    print(text)
    if args.out_md:
        args.out_md.write_text(text + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
