"""Before/after figure of the demo model on held-out photographs (rainy | restored | clean).

    python -m ast_deploy.demo.figure --out docs/demo_before_after.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..checks.metrics import psnr
from . import build_demo_model
from .pairs import held_out_pairs
from .train import restore


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--images", nargs="+", default=["chelsea", "rocket"])
    p.add_argument("--side", type=int, default=192, help="tile side in pixels")
    args = p.parse_args(argv)

    from PIL import Image, ImageDraw


    model = build_demo_model()
    rows = []
    for name, rainy, clean in held_out_pairs(model.size_multiple, 256):
        if name not in args.images:
            continue
        restored = restore(model, rainy)
        tiles = []
        for image, label in ((rainy, f"rainy {psnr(rainy, clean):.1f} dB"),
                             (restored, f"restored {psnr(restored, clean):.1f} dB"), (clean, "clean")):
            tile = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).resize(
                (args.side, args.side), Image.LANCZOS)
            draw = ImageDraw.Draw(tile)
            draw.rectangle((0, 0, args.side, 14), fill=(0, 0, 0))
            draw.text((3, 1), label, fill=(255, 255, 255))
            tiles.append(np.asarray(tile))
        rows.append(np.concatenate(tiles, axis=1))
    figure = Image.fromarray(np.concatenate(rows, axis=0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the PNG small enough for a README.
    figure.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
