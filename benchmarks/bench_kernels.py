"""GPU benchmark of the fused kernels against the eager reference ops, at AST-B's shapes.

    python benchmarks/bench_kernels.py [--sizes 256,512] [--dtypes fp16,fp32] [--batch 1] [--reps 100]

For every attention level of AST-B (bottleneck and the four decoder levels, masked where the level
shifts its windows) and every partial-convolution width, at each image size and dtype: median time
of the eager reference and of the fused kernel (CUDA events), the speedup, and the fused kernel's
achieved bandwidth (bytes it must read and write / time) next to this GPU's measured copy bandwidth.
Then the whole AST-B with reference ops and with the kernels. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from timing import cuda_median_ms  # noqa: E402  (benchmarks/timing.py)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def cuda_time_ms(fn, reps: int, warmup: int = 10) -> float:
    return cuda_median_ms(fn, reps, warmup)


def copy_bandwidth_gbs(reps: int) -> float:
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src), reps)
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def attention_levels(config: dict):
    """(level, dim, heads, window, shifted) of every distinct attention block of the model."""
    from ast_deploy.model import AST
    from ast_deploy.model.ast import TransformerBlock

    with torch.device("meta"):
        model = AST(**config)
    levels = {}
    for m in model.modules():
        if isinstance(m, TransformerBlock) and m.att:
            level = round(math.log2(config["img_size"] // m.input_resolution[0]))
            levels[(level, m.dim, m.num_heads, m.win_size, m.shift_size > 0)] = m.attn.scale
    return levels


def conv_widths(config: dict):
    from ast_deploy.model import AST
    from ast_deploy.model.ast import FRFN, TransformerBlock

    with torch.device("meta"):
        model = AST(**config)
    widths = set()
    for m in model.modules():
        if isinstance(m, TransformerBlock) and isinstance(m.mlp, FRFN):
            level = round(math.log2(config["img_size"] // m.input_resolution[0]))
            widths.add((level, m.dim, m.mlp.partial_conv3.weight.shape[0]))
    return sorted(widths)


def bench_attention(config, sizes, dtypes, batch, reps, copy_bw, rows):
    from ast_deploy.model.ast import shift_region_ids
    from ast_deploy.ops.assa import assa_reference
    from ast_deploy.ops.triton_assa import assa_triton_launch

    for size in sizes:
        for (level, dim, heads, win, shifted), scale in sorted(attention_levels(config).items()):
            res = size // 2**level
            windows = batch * (res // win) ** 2
            n = win * win
            for name in dtypes:
                dt = DTYPES[name]
                q = torch.randn(windows, n, dim, device="cuda", dtype=dt)
                kv = torch.randn(windows, n, 2 * dim, device="cuda", dtype=dt)
                bias = torch.randn(heads, n, n, device="cuda", dtype=dt)
                mix = torch.softmax(torch.randn(2, device="cuda"), 0).to(dt)
                ids = shift_region_ids(res, res, win, win // 2, device="cuda").to(dt) if shifted else None
                ref_ms = cuda_time_ms(lambda: assa_reference(q, kv, bias, mix, ids, num_heads=heads, scale=scale), reps)
                fused_ms = cuda_time_ms(lambda: assa_triton_launch(q, kv, bias, mix, ids, heads, scale), reps)
                moved = (4 * q.numel() + bias.numel()) * q.element_size() + (ids.numel() * ids.element_size() if
                                                                             shifted else 0)
                gbs = moved / (fused_ms * 1e-3) / 1e9
                rows.append((f"ASSA L{level} d{dim} h{heads}{' mask' if shifted else ''}", size, name, windows,
                             ref_ms, fused_ms, gbs, 100 * gbs / copy_bw))


def bench_partial_conv(config, sizes, dtypes, batch, reps, copy_bw, rows):
    from ast_deploy.ops.partial_conv import partial_conv_reference
    from ast_deploy.ops.triton_partial_conv import partial_conv_triton_launch

    for size in sizes:
        for level, dim, cp in conv_widths(config):
            res = size // 2**level
            for name in dtypes:
                dt = DTYPES[name]
                x = torch.randn(batch, res, res, dim, device="cuda", dtype=dt)
                w = torch.randn(cp, cp, 3, 3, device="cuda", dtype=dt) * 0.1
                ref_ms = cuda_time_ms(lambda: partial_conv_reference(x, w), reps)
                fused_ms = cuda_time_ms(lambda: partial_conv_triton_launch(x, w), reps)
                gbs = 2 * x.numel() * x.element_size() / (fused_ms * 1e-3) / 1e9
                rows.append((f"PConv L{level} C{dim} Cp{cp}", size, name, batch * res * res, ref_ms, fused_ms, gbs,
                             100 * gbs / copy_bw))


def bench_model(config, sizes, dtypes, batch, reps, rows):
    from ast_deploy.model import AST

    for size in sizes:
        for name in dtypes:
            model = AST(**config).eval().cuda().to(DTYPES[name])
            x = torch.rand(batch, 3, size, size, device="cuda", dtype=DTYPES[name])
            model_reps = max(5, reps // 10)
            with torch.no_grad():
                model.set_ops_impl("reference", "reference")
                ref_ms = cuda_time_ms(lambda: model(x), model_reps, 3)
                finite_ref = bool(torch.isfinite(model(x)).all())
                model.set_ops_impl("triton", "triton")
                fused_ms = cuda_time_ms(lambda: model(x), model_reps, 3)
                finite = bool(torch.isfinite(model(x)).all())
            label = f"AST-B model (finite: ref {finite_ref}, kernels {finite})"
            rows.append((label, size, name, batch, ref_ms, fused_ms, float("nan"), float("nan")))


def print_table(rows, copy_bw):
    print(f"\ndevice: {torch.cuda.get_device_name()}, measured copy bandwidth {copy_bw:.0f} GB/s, "
          f"torch {torch.__version__}")
    head = f"{'what':<44} {'image':>5} {'dtype':>5} {'Bw/pix':>8} {'eager ms':>9} {'fused ms':>9} {'speedup':>7} " \
           f"{'GB/s':>7} {'% copy':>6}"
    print(head)
    print("-" * len(head))
    for what, size, dtype, count, ref_ms, fused_ms, gbs, pct in rows:
        print(f"{what:<44} {size:>5} {dtype:>5} {count:>8} {ref_ms:>9.3f} {fused_ms:>9.3f} "
              f"{ref_ms / fused_ms:>6.2f}x {gbs:>7.0f} {pct:>5.0f}%")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--dtypes", default="fp16,fp32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--no-model", action="store_true", help="skip the whole-model timing")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA GPU is available here; this benchmark only measures GPU kernels. "
              "Run it on a machine with a CUDA GPU and triton installed.", file=sys.stderr)
        return 2
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("bench_kernels: unset TRITON_INTERPRET, the interpreter is not what should be timed", file=sys.stderr)
        return 2

    from ast_deploy.model import AST_B

    sizes = [int(s) for s in args.sizes.split(",")]
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    copy_bw = copy_bandwidth_gbs(args.reps)
    rows = []
    bench_attention(AST_B, sizes, dtypes, args.batch, args.reps, copy_bw, rows)
    bench_partial_conv(AST_B, sizes, dtypes, args.batch, args.reps, copy_bw, rows)
    if not args.no_model:
        bench_model(AST_B, sizes, dtypes, args.batch, args.reps, rows)
    print_table(rows, copy_bw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
