"""Quality of a restored clip: flicker (frame-to-frame change on static regions) and, against a
clean reference, PSNR and SSIM (the project's one definitions, ast_deploy.checks.metrics).

Flicker is the mean absolute difference of consecutive frames, in [0, 1] units, over the pixels
that do not change in the clean reference (its own consecutive difference below 2/255 in every
channel): on a still scene any change there is rain left behind or restoration that differs frame
to frame. Without a reference every pixel counts. Reported for the restored clip, the reference
and, when given, the original (rainy) clip. PSNR is over the whole clip (the mean squared error of
all frames, data range 1, clipped as written), so frames equal to the reference do not make it
infinite; SSIM is the mean of the frames'."""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..checks.metrics import ssim
from .colour import colour_spec, frame_to_rgb, planar_layout
from .probe import VideoError, probe

STATIC = 2 / 255


def clip_frames(path):
    """[3, H, W] float frames of ``path`` in display order, with the stream's own colour matrix."""
    import av

    info = probe(path)
    spec = colour_spec(info.colorspace, info.color_range, info.height, planar_layout(av.VideoFormat(info.pix_fmt)))
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            yield frame_to_rgb(frame, spec)


class _Flicker:
    def __init__(self):
        self.total, self.pixels, self.previous = 0.0, 0, None

    def add(self, frame, mask):
        if self.previous is not None and mask is not None and mask.any():
            diff = np.abs(np.clip(frame, 0, 1) - np.clip(self.previous, 0, 1)).mean(0)
            self.total += float(diff[mask].sum())
            self.pixels += int(mask.sum())
        self.previous = frame

    @property
    def value(self) -> float:
        return self.total / self.pixels if self.pixels else math.nan


def video_quality(restored, reference=None, original=None, every: int = 1) -> dict:
    """Flicker of each clip given (static regions from ``reference``), and PSNR / SSIM of the
    restored and original clips against ``reference`` (every ``every``-th frame for SSIM)."""
    names = [n for n, p in (("restored", restored), ("reference", reference), ("original", original)) if p]
    streams = [clip_frames(p) for p in (restored, reference, original) if p]
    flicker = {name: _Flicker() for name in names}
    scores = {name: {"mse": [], "ssim": []} for name in names if name != "reference"}
    frames, previous_ref = 0, None
    for group in itertools.zip_longest(*streams):
        if any(f is None for f in group):
            raise VideoError("the clips have different frame counts: " + ", ".join(names))
        frame_of = dict(zip(names, group))
        ref = frame_of.get("reference")
        mask = None
        if ref is not None and previous_ref is not None:
            mask = (np.abs(ref - previous_ref) < STATIC).all(0)
        elif ref is None:
            mask = np.ones(group[0].shape[1:], bool)
        previous_ref = ref
        for name, frame in frame_of.items():
            flicker[name].add(frame, mask)
            if ref is not None and name != "reference":
                scores[name]["mse"].append(float(np.mean((np.clip(frame, 0, 1) - np.clip(ref, 0, 1)) ** 2)))
                if frames % every == 0:
                    scores[name]["ssim"].append(ssim(np.clip(frame, 0, 1), ref))
        frames += 1
    result = {"frames": frames, **{f"flicker_{n}": f.value for n, f in flicker.items()}}
    if reference:
        for name, values in scores.items():
            mse = float(np.mean(values["mse"]))
            result[f"psnr_{name}"] = math.inf if mse == 0 else 10 * math.log10(1 / mse)
            result[f"ssim_{name}"] = float(np.mean(values["ssim"]))
    return result
