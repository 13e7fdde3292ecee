"""Write the fused kernels' PTX for named GPU architectures, without a GPU.

    python -m ast_deploy.cli.build_ptx --arch 87,89,90 --out DIR [--model AST_B] [--dtypes fp16,fp32]

Every distinct kernel variant a model needs (attention per level, masked where the level shifts its
windows, partial convolution per width) is compiled for each architecture into
``DIR/sm_<arch>/<kernel>.ptx``, with ``DIR/manifest.json`` recording what each file is and how to
launch it (block size, shared memory, parameters in order). bias, mix and region ids are assumed in
the same dtype as q; the TensorRT plugins compile whatever the engine's types are at build time.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

from ..ops.kernel_specs import AssaSpec, PartialConvSpec
from ..ops.ptx import assemble, compile_spec

OPS = ("assa", "partial_conv")


def model_specs(config: dict, dtypes=("fp32", "fp16"), ops=OPS) -> list:
    """The kernel variants an AST built with ``config`` runs, deduplicated, in model order."""
    import torch

    from ..model import AST
    from ..model.ast import FRFN, TransformerBlock

    with torch.device("meta"):
        model = AST(**config)
    specs = []
    for dtype in dtypes:
        for m in model.modules():
            if isinstance(m, TransformerBlock) and m.att and "assa" in ops:
                a = m.attn
                specs.append(AssaSpec(a.win_size ** 2, a.dim, a.num_heads, float(a.scale), dtype, dtype, dtype,
                                      dtype if m.shift_size > 0 else None))
            elif isinstance(m, FRFN) and "partial_conv" in ops:
                specs.append(PartialConvSpec(m.dim, m.partial_conv3.weight.shape[0], dtype, dtype))
    return list(dict.fromkeys(specs))


def _config(name_or_json: str) -> dict:
    from ..model import ARCHITECTURES

    if name_or_json in ARCHITECTURES:
        return dict(ARCHITECTURES[name_or_json])
    return json.loads(Path(name_or_json).read_text() if Path(name_or_json).is_file() else name_or_json)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ast_deploy.cli.build_ptx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="comma-separated SM versions, e.g. 87,89,90")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default="AST_B",
                        help="AST_B, AST_T, or AST constructor keywords as JSON (text or file)")
    parser.add_argument("--dtypes", default="fp32,fp16")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--match", default=None, help="only kernels whose name matches this regex")
    parser.add_argument("--ptx-version", type=int, default=None,
                        help="PTX ISA to emit, e.g. 85 for drivers older than the CUDA Triton bundles")
    parser.add_argument("--verify", action="store_true", help="assemble every PTX with ptxas after writing it")
    args = parser.parse_args(argv)

    ops = _csv(args.ops)
    if unknown := set(ops) - set(OPS):
        parser.error(f"unknown ops {sorted(unknown)}; choose from {OPS}")
    specs = model_specs(_config(args.model), _csv(args.dtypes), ops)
    if args.match:
        specs = [s for s in specs if re.search(args.match, s.kernel_name())]
    if not specs:
        parser.error("no kernel variant selected")

    manifest = []
    for arch in (int(a) for a in _csv(args.arch)):
        folder = args.out / f"sm_{arch}"
        folder.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            kernel = compile_spec(spec, arch, args.ptx_version)
            if args.verify:
                assemble(kernel.ptx, arch)
            path = folder / f"{kernel.name}.ptx"
            path.write_text(kernel.ptx)
            manifest.append(dict(file=str(path.relative_to(args.out)), kernel=kernel.name, arch=arch,
                                 target=kernel.ptx_target, ptx_isa=kernel.ptx_isa, block_x=kernel.block_x,
                                 shared_mem=kernel.shared_mem, params=spec.runtime_params(),
                                 op=type(spec).__name__, spec=asdict(spec)))
            print(f"{path}  ({kernel.ptx_target}, PTX {kernel.ptx_isa}, {kernel.block_x} threads, "
                  f"{kernel.shared_mem} B shared)")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
