"""Small demo weights trained on synthetic rain, so the pipeline runs end to end without the
paper's checkpoints (which are published on Baidu Netdisk only)."""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CALIBRATION_DIR = Path(__file__).resolve().parent / "calib"

# img_size=64 makes the size multiple 64 (not the released models' 128) so that training runs on
# 64x64 crops; the bottleneck is kept shallow because its 128 channels hold most of the parameters.
DEMO_CONFIG = dict(img_size=64, embed_dim=8, depths=[2, 2, 1, 1, 1, 1, 2, 2, 2], win_size=8,
                   mlp_ratio=2.0, token_mlp="frfn")

DEMO_NOTICE = "demo weights trained on synthetic rain, not the paper's"

_WEIGHTS = {"derain": "derain_demo.pth"}


def demo_weights(task: str = "derain") -> Path:
    """Path of the demo checkpoint for ``task`` (only ``derain`` has one)."""
    if task not in _WEIGHTS:
        raise ValueError(f"no demo weights for task {task!r}; demo weights exist for: {', '.join(_WEIGHTS)}")
    path = WEIGHTS_DIR / _WEIGHTS[task]
    if not path.is_file():
        raise FileNotFoundError(f"demo weights {path} are missing from this installation")
    return path


def calibration_images() -> Path:
    """Folder of rainy demo images (crops of the training photographs) used for calibration."""
    if not CALIBRATION_DIR.is_dir():
        raise FileNotFoundError(f"demo calibration images {CALIBRATION_DIR} are missing from this installation")
    return CALIBRATION_DIR


def demo_info(task: str = "derain") -> dict:
    """The JSON record written beside the checkpoint (config, training command, held-out PSNR)."""
    return json.loads(demo_weights(task).with_suffix(".json").read_text())


def build_demo_model(task: str = "derain"):
    """The demo AST with its weights loaded strictly, in eval mode."""
    from ..model import AST, load_checkpoint

    return load_checkpoint(AST(**DEMO_CONFIG), demo_weights(task)).eval()


__all__ = ["DEMO_CONFIG", "DEMO_NOTICE", "build_demo_model", "calibration_images", "demo_info", "demo_weights"]
