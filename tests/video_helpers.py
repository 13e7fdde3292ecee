"""Clips and a small model for the video tests, made by the tests themselves.

Clips are encoded with PyAV from RGB through FFmpeg's own swscale (not the project's colour
code), with synthetic rain (ast_deploy.demo.rain) drawn anew each frame over a still scene, an
optional audio track, variable frame rate and rotation. The model is a real ONNX graph (3 x 3
convolutions) that ONNX Runtime runs in milliseconds, so the pipeline's tests do not wait on AST;
one test runs the demo AST itself."""

from __future__ import annotations

import functools
from fractions import Fraction
from pathlib import Path

import numpy as np


def scene(h: int, w: int) -> np.ndarray:
    """A still [H, W, 3] float scene: gradients, a disc and stripes (static regions for flicker)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.25 + 0.5 * xx / w
    g = 0.2 + 0.6 * yy / h
    b = 0.45 + 0.25 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    img = np.stack([r, g, b], -1)
    disc = (yy - h * 0.55) ** 2 + (xx - w * 0.4) ** 2 < (min(h, w) * 0.2) ** 2
    img[disc] = [0.8, 0.35, 0.2]
    img[(xx // 8 % 2 == 0) & (yy < h * 0.2)] *= 0.6
    return np.clip(img, 0, 1)


def rainy_frames(n: int, h: int, w: int, seed: int = 0, rain: bool = True):
    """(rainy, clean) lists of [H, W, 3] float frames; the rain is drawn anew for each frame."""
    from ast_deploy.demo.rain import add_rain

    clean = scene(h, w)
    rng = np.random.default_rng(seed)
    rainy = [add_rain(clean, rng)[0] if rain else clean for _ in range(n)]
    return rainy, [clean] * n


def make_clip(path: Path, frames: int = 24, size=(240, 320), codec: str = "libx264", pix_fmt: str = "yuv420p",
              rate: int = 24, vfr: bool = False, audio: bool = True, rotation: int | None = None,
              colorspace: str = "itu709", full_range: bool = False, rain: bool = True, seed: int = 0,
              options: dict | None = None, container_options: dict | None = None) -> dict:
    """Write a clip; returns what it wrote: pts (in time_base), time_base, the RGB frames given."""
    import av

    h, w = size
    rainy, clean = rainy_frames(frames, h, w, seed, rain)
    time_base = Fraction(1, rate * 512)
    pts, t = [], 0
    for i in range(frames):
        pts.append(t)
        t += 512 * (1 if not vfr else (1, 3, 2)[i % 3])  # VFR: frame durations of 1, 3 and 2 frame periods
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.time_base = time_base
        ctx = stream.codec_context
        ctx.time_base = time_base
        space = {"itu709": 1, "itu601": 6}[colorspace]
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = space, space, space
        ctx.color_range = 2 if full_range else 1
        ctx.options = options or {}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        astream = None
        if audio:
            astream = out.add_stream("aac", rate=48000)
            astream.layout = "stereo"
        for i, frame_rgb in enumerate(rainy):
            rgb48 = np.rint(frame_rgb * 65535).astype(np.uint16)
            frame = av.VideoFrame.from_ndarray(rgb48, format="rgb48le").reformat(
                format=pix_fmt, dst_colorspace=colorspace, src_color_range=2, dst_color_range=2 if full_range else 1)
            frame.pts, frame.time_base = pts[i], time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            seconds = (pts[-1] + 512) / (rate * 512)
            n = int(seconds * 48000) // 1024
            for k in range(n):
                tone = np.sin(2 * np.pi * 440 * (np.arange(1024) + k * 1024) / 48000).astype(np.float32) * 0.2
                af = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
                af.sample_rate, af.pts = 48000, k * 1024
                out.mux(astream.encode(af))
            out.mux(astream.encode(None))
    return {"pts": pts, "time_base": time_base, "rainy": rainy, "clean": clean}


def read_clip(path: Path) -> dict:
    """What a clip holds, read with PyAV alone: video frames (RGB through swscale), timestamps,
    tags, and the packets of its other streams."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        ctx = v.codec_context
        info = {"time_base": v.time_base, "rate": v.average_rate, "width": ctx.width, "height": ctx.height,
                "sar": v.sample_aspect_ratio, "pix_fmt": ctx.pix_fmt, "codec": ctx.name,
                "colour": (ctx.color_range, ctx.color_primaries, ctx.color_trc, ctx.colorspace),
                "streams": [s.type for s in c.streams]}
        times, frames, rotation = [], [], None
        for f in c.decode(v):
            times.append(f.pts * v.time_base)
            rotation = f.rotation if rotation is None else rotation
            frames.append(f)
        info["times"], info["rotation"], info["frames"] = times, rotation, frames
    with av.open(str(path)) as c:
        info["audio"] = [bytes(p) for p in c.demux(audio=0) if p.size] if c.streams.audio else []
    return info


def to_rgb(frame, colorspace: str = "itu709") -> np.ndarray:
    """[3, H, W] float RGB of a decoded frame through FFmpeg's swscale (independent of the project)."""
    rgb = frame.reformat(format="rgb48le", src_colorspace=colorspace, src_color_range=frame.color_range or 1,
                         dst_color_range=2, interpolation="BICUBIC").to_ndarray()
    return rgb.astype(np.float32).transpose(2, 0, 1) / 65535


@functools.cache
def conv_onnx(folder: str, depth: int = 1) -> Path:
    """A [N, 3, H, W] -> [N, 3, H, W] ONNX of ``depth`` fixed 3 x 3 convolutions (a smoothing that
    keeps half of each pixel), with ``ast.size_multiple`` 8: a real model ONNX Runtime runs fast."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kernel = np.zeros((3, 3, 3, 3), np.float32)
    for c in range(3):
        kernel[c, c] = 0.5 / 9
        kernel[c, c, 1, 1] += 0.5
    nodes, name = [], "image"
    for i in range(depth):
        nodes.append(helper.make_node("Conv", [name, "k"], [f"c{i}" if i < depth - 1 else "restored"], pads=[1, 1, 1, 1]))
        name = f"c{i}"
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                           ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [numpy_helper.from_array(kernel, "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="ast.size_multiple", value="8")
    path = Path(folder) / f"conv{depth}.onnx"
    onnx.save(model, str(path))
    return path
