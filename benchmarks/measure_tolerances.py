"""The margins behind the recipes' ``psnr_db`` thresholds: what ``ast-export`` reaches per task and
precision on small models, under the project's one PSNR (data range 1, unclipped).

    python benchmarks/measure_tolerances.py [--tasks derain deraindrop dehaze] [--precisions fp32 fp16 int8]
                                            [--shape 128x128] [--dynamic] [--ast-b]

Each row is one ``ast-export`` run (in this process, through its CLI): the demo model (trained demo
weights for derain, the demo architecture with random weights for the others), at a small static
size and dynamic at the recipe's validation sizes (fp16 / int8: dynamic only). Columns: the worst PSNR and
relative error of the export's validation against PyTorch on seeded random images (what the
recipe's ``[tolerance.<precision>]`` judges), and for fp16 / int8 the worst PSNR of the converted
ONNX against the FP32 one on the demo's held-out rainy photographs (the precision step's budget,
read from the same ``psnr_db``). ``--ast-b`` adds AST-B with random weights, FP32, dynamic (slow:
minutes on 2 cores). The recipe thresholds are relaxed to 0 dB here so that every run completes
and reports what it reached.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ast_deploy.cli.export import main as ast_export  # noqa: E402
from ast_deploy.model.configs import ARCHITECTURES  # noqa: E402
from ast_deploy.recipes import load_recipe  # noqa: E402


def open_recipe(task: str, folder: Path) -> Path:
    """The task's shipped recipe with every psnr_db at 0 (max_rel kept at its most lenient, 1)."""
    text = load_recipe(task).path.read_text()
    text = re.sub(r"(?m)^psnr_db = .*$", "psnr_db = 0.0", text)
    text = re.sub(r"(?m)^max_rel = .*$", "max_rel = 1.0", text)
    path = folder / f"{task}-open.toml"
    path.write_text(text)
    return path


def run(task: str, precision: str, folder: Path, shape: str | None, arch: str) -> dict:
    out = folder / f"{task}-{precision}-{arch}-{shape or 'dynamic'}"
    argv = ["--task", task, "--out", str(out), "--recipe", str(open_recipe(task, folder)), "-q"]
    if arch == "ast_b" or task != "derain":  # derain alone has demo weights
        config = folder / f"{arch}.json"
        config.write_text(json.dumps(dict(ARCHITECTURES["AST_B" if arch == "ast_b" else "demo"])))
        argv += ["--random-init", "--arch-config", str(config)]
    argv += ["--shape", shape] if shape else []
    argv += [f"--{precision}"] if precision != "fp32" else []
    code = ast_export(argv)
    if code not in (0, 1):
        raise SystemExit(f"ast-export {' '.join(argv)} exited with {code}")
    reports = sorted(out.glob("*.validation.json"))
    final = json.loads(next(p for p in reports if (precision == "fp32") == (p.name.count(".") == 2)).read_text())
    row = dict(task=task, model=arch if arch != "demo" or task == "derain" else "demo (random)",
               precision=precision, shape=shape or "recipe sizes", exit=code,
               psnr_vs_torch=min(float(c["parity"]["psnr"]) for c in final["cases"]),
               rel_vs_torch=max(c["parity"]["rel"] for c in final["cases"]))
    if precision != "fp32":
        (prec,) = out.glob("*.precision.json")
        row["psnr_vs_fp32_photos"] = float(json.loads(prec.read_text())["validation"]["min_psnr_vs_fp32"])
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["derain", "deraindrop", "dehaze"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8"])
    p.add_argument("--shape", default="128x128", help="static export size (default 128x128)")
    p.add_argument("--dynamic", action="store_true", help="only dynamic exports, validated at the recipe's sizes")
    p.add_argument("--ast-b", action="store_true", help="also AST-B, random weights, FP32, dynamic")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for task in args.tasks:
            for precision in args.precisions:
                # fp16 / int8 run dynamic: the precision step calibrates and validates on photographs
                # of their own sizes, which a static export refuses (an open defect, see RESULTS.md)
                static = not args.dynamic and precision == "fp32"
                rows.append(run(task, precision, folder, args.shape if static else None, "demo"))
                print(rows[-1], file=sys.stderr)
                if precision == "fp32" and static:
                    rows.append(run(task, precision, folder, None, "demo"))
                    print(rows[-1], file=sys.stderr)
        if args.ast_b:
            rows.append(run("derain", "fp32", folder, None, "ast_b"))
    print(f"\n{'task':<11}{'model':<15}{'prec':<6}{'shape':<14}{'PSNR vs torch':>14}{'max rel':>10}"
          f"{'PSNR vs FP32 (photos)':>23}")
    for r in rows:
        photos = f"{r['psnr_vs_fp32_photos']:.1f}" if "psnr_vs_fp32_photos" in r else "-"
        print(f"{r['task']:<11}{r['model']:<15}{r['precision']:<6}{r['shape']:<14}{r['psnr_vs_torch']:>14.1f}"
              f"{r['rel_vs_torch']:>10.1e}{photos:>23}")
    print("PSNR: data range 1, unclipped, worst case of the run; vs torch: the export's validation on seeded "
          "random images; vs FP32 (photos): the precision step on the demo's held-out photographs")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
