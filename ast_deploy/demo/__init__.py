"""Small demo weights trained on synthetic rain, so the pipeline runs end to end without the
paper's checkpoints (which are published on Baidu Netdisk only)."""

from __future__ import annotations

import json
from pathlib import Path

from ..model.configs import AST_DEMO as DEMO_CONFIG  # the demo model's architecture, ARCHITECTURES["demo"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CALIBRATION_DIR = Path(__file__).resolve().parent / "calib"


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
    from ..model.factory import build_model  # imports torch: only when a model is built

    return build_model("demo", weights=demo_weights(task))


__all__ = ["DEMO_CONFIG", "DEMO_NOTICE", "build_demo_model", "calibration_images", "demo_info", "demo_weights"]
