"""Train the demo deraining AST on synthetic rain over scikit-image's photographs.

    python -m ast_deploy.demo.train --out ast_deploy/demo/weights/derain_demo.pth --minutes 20

Training sees random crops of the training photographs only (``images.TRAIN``); the held-out
photographs are used once, at the end, to record PSNR in the JSON written beside the checkpoint.
With ``--minutes`` the cosine schedule follows wall-clock progress, so a run on a busy machine does
fewer steps rather than running over; ``--minutes 0`` makes the run step-based and reproducible.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ..checks.metrics import psnr
from ..model import AST, load_checkpoint
from . import DEMO_CONFIG
from .pairs import held_out_pairs, random_crop_pair
from .photos import TRAIN, TRAIN_COLOUR, load_photo


def restore(model, rainy: np.ndarray) -> np.ndarray:
    """Run the model on one [H, W, 3] image (sides multiples of ``model.size_multiple``)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(rainy.transpose(2, 0, 1)))[None]
        return model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()


def evaluate_held_out(model, multiple: int) -> dict:
    rows = []
    for name, rainy, clean in held_out_pairs(multiple):
        rows.append(dict(image=name, size=list(clean.shape[:2]), rainy_psnr=round(psnr(rainy, clean), 3),
                         restored_psnr=round(psnr(restore(model, rainy), clean), 3)))
    mean = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in ("rainy_psnr", "restored_psnr")}
    return dict(pairs=rows, mean=mean)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="checkpoint path (.pth); a .json record is written beside it")
    p.add_argument("--steps", type=int, default=3000, help="maximum optimizer steps")
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget (0: no limit)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", help="start from this checkpoint (its steps are added to the record)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = AST(**DEMO_CONFIG)
    previous = {}
    if args.resume:
        load_checkpoint(model, args.resume)
        record_path = Path(args.resume).with_suffix(".json")
        previous = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if args.crop % model.size_multiple:
        p.error(f"--crop must be a multiple of {model.size_multiple}")
    start = time.time()
    step = train(model, args, np.random.default_rng(args.seed))
    train_seconds = time.time() - start

    model.eval()
    result = evaluate_held_out(model, model.size_multiple)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    total_steps = step + previous.get("total_steps", previous.get("steps", 0))
    torch.save({"epoch": total_steps, "state_dict": model.state_dict()}, out)
    record = dict(
        task="derain",
        config=DEMO_CONFIG,
        size_multiple=model.size_multiple,
        parameters=sum(p.numel() for p in model.parameters()),
        command="python -m ast_deploy.demo.train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        steps=step, total_steps=total_steps,
        previous_runs=previous.get("previous_runs", []) + ([{k: previous[k] for k in ("command", "steps", "train_seconds")}]
                                                            if previous else []),
        batch=args.batch, crop=args.crop, seed=args.seed, threads=args.threads,
        train_seconds=round(train_seconds, 1), torch=torch.__version__,
        data="synthetic rain (ast_deploy.demo.rain) over scikit-image photographs; "
             "train: " + ", ".join(TRAIN) + "; held out: see held_out",
        held_out=result,
    )
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def train(model, args, rng: np.random.Generator, warmup: int = 100) -> int:
    """AdamW on random rainy/clean crops with a Charbonnier loss, warm-up then cosine decay over
    ``args.steps`` or ``args.minutes`` (whichever ends first); returns the steps taken."""
    import torch

    photos = [load_photo(name) for name in TRAIN]
    # Colour photographs are drawn twice as often as the grey textures: held-out images are colour.
    weights = np.array([2.0 if name in TRAIN_COLOUR else 1.0 for name in TRAIN])
    weights /= weights.sum()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60.0
    start = time.time()
    step, running = 0, None
    model.train()
    while step < args.steps:
        elapsed = time.time() - start
        progress = max(step / args.steps, elapsed / budget if budget > 0 else 0.0)
        if progress >= 1.0:
            break
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = [random_crop_pair(photos[rng.choice(len(photos), p=weights)], args.crop, rng)
                 for _ in range(args.batch)]
        rainy = torch.from_numpy(np.stack([b[0] for b in batch]).transpose(0, 3, 1, 2).copy())
        clean = torch.from_numpy(np.stack([b[1] for b in batch]).transpose(0, 3, 1, 2).copy())
        loss = torch.sqrt((model(rainy) - clean) ** 2 + 1e-6).mean()  # Charbonnier
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {running:.4f} lr {lr:.2e} {time.time() - start:.0f}s", flush=True)
    return step


if __name__ == "__main__":
    raise SystemExit(main())
