"""The photographs the demo trains and evaluates on: scikit-image's bundled samples (no network).

The split is by photograph: held-out photographs are never cropped for training. ``cat`` is the
same photograph as ``chelsea`` and ``stereo_motorcycle`` is a near-duplicate pair, so they are
listed once.
"""

from __future__ import annotations

import numpy as np

TRAIN_COLOUR = ("astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel",
                "stereo_motorcycle", "logo")
TRAIN_GRAY = ("brick", "grass", "gravel", "camera", "coins", "moon", "clock", "text", "page")
HELD_OUT = ("coffee", "chelsea", "rocket")
TRAIN = TRAIN_COLOUR + TRAIN_GRAY


def load_photo(name: str) -> np.ndarray:
    """[H, W, 3] float32 in [0, 1]."""
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError("the demo photographs come from scikit-image: pip install 'ast-deploy[demo]'") from e
    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    image = image.astype(np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:  # logo: composite over white
        alpha = image[..., 3:]
        image = image[..., :3] * alpha + (1.0 - alpha)
    return np.ascontiguousarray(image[..., :3])


def center_crop(image: np.ndarray, multiple: int, max_side: int | None = None) -> np.ndarray:
    """Largest centred crop whose sides are multiples of ``multiple`` (and at most ``max_side``)."""
    h, w = image.shape[:2]
    ch, cw = h // multiple * multiple, w // multiple * multiple
    if max_side is not None:
        ch, cw = min(ch, max_side // multiple * multiple), min(cw, max_side // multiple * multiple)
    if ch == 0 or cw == 0:
        raise ValueError(f"image {h}x{w} is smaller than one {multiple}x{multiple} tile")
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top:top + ch, left:left + cw]
