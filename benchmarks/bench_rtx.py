"""TensorRT-RTX engine builds on this machine (no GPU needed): build time, engine size and the layer
report of each ONNX given, through ``ast-build``'s own ``build_engine``.

    python3 benchmarks/bench_rtx.py MODEL.onnx [MODEL.fp16.onnx ...] [--compute-capability 89]
        [--shapes 1x3x128x128:1x3x512x512:1x3x512x512] [--opt-level N] [--runs 1]

Prints one row per ONNX: wall and CPU seconds of the build (CPU: all the builder's threads, less
sensitive than wall time to other load on the machine), engine bytes, layers, layers per precision
and the number of precision mismatches ``ast-build`` would warn about.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ast_deploy.engines import build_engine  # noqa: E402
from ast_deploy.engines.cache import read_sidecar  # noqa: E402


def measure(onnx: Path, out_dir: Path, args) -> dict:
    walls, cpus = [], []
    for run in range(args.runs):
        out = out_dir / f"{onnx.stem}.{run}.rtx.plan"
        wall, cpu = time.perf_counter(), time.process_time()
        build_engine(onnx, out, target="rtx", compute_capabilities=args.compute_capability, shapes=args.shapes,
                     opt_level=args.opt_level, force=True)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    sidecar = read_sidecar(out)
    return {"onnx": onnx.name, "wall": statistics.median(walls), "cpu": statistics.median(cpus),
            "bytes": out.stat().st_size, "layers": len(sidecar["layers"]["layers"]),
            "summary": sidecar["layers"]["summary"], "mismatches": len(sidecar["layers"]["checks"]["mismatches"])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", nargs="+", type=Path)
    p.add_argument("--compute-capability", default="89")
    p.add_argument("--shapes", default="1x3x128x128:1x3x512x512:1x3x512x512")
    p.add_argument("--opt-level", type=int)
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    print(f"TensorRT-RTX builds for SM {args.compute_capability}, shapes {args.shapes}, opt level "
          f"{'default' if args.opt_level is None else args.opt_level}, median of {args.runs}")
    print(f"{'onnx':<28}{'wall s':>8}{'cpu s':>8}{'MB':>8}{'layers':>8}  per precision; mismatches")
    with tempfile.TemporaryDirectory() as tmp:
        for onnx in args.onnx:
            r = measure(onnx, Path(tmp), args)
            per = ", ".join(f"{k} {v}" for k, v in r["summary"].items())
            print(f"{r['onnx']:<28}{r['wall']:>8.1f}{r['cpu']:>8.1f}{r['bytes'] / 1e6:>8.1f}{r['layers']:>8}  "
                  f"{per}; {r['mismatches']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
