"""Video frames <-> RGB float, with the stream's own matrix and range (never an assumed BT.601).

Planar Y'CbCr frames (4:2:0, 4:2:2, 4:4:4; 8 to 16 bits; limited or full range) are converted
here in float32, so a 10-bit clip keeps its precision; chroma is upsampled bilinearly at centred
siting and downsampled with the matching 2 x 2 box. Other pixel formats go through FFmpeg's
swscale (PyAV's ``reformat``) first: semi-planar ones (NV12, P010) are repacked losslessly to
planar, RGB-like ones are read as 16-bit RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (Kr, Kb) of the matrix coefficients, by FFmpeg's AVColorSpace number
KR_KB = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
         9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
MATRIX_NAMES = {1: "BT.709", 4: "FCC", 5: "BT.601", 6: "BT.601", 7: "SMPTE 240M", 9: "BT.2020", 10: "BT.2020"}
RANGE_LIMITED, RANGE_FULL = 1, 2
SEMI_PLANAR = {"nv12": "yuv420p", "nv21": "yuv420p", "nv16": "yuv422p", "p010le": "yuv420p10le",
               "p016le": "yuv420p16le", "nv20le": "yuv422p10le", "p210le": "yuv422p10le"}


def default_matrix(height: int) -> int:
    """An untagged stream's matrix as players guess it: BT.709 from 720 lines up, else BT.601."""
    return 1 if height >= 720 else 6


@dataclass(frozen=True)
class PixelLayout:
    """A planar Y'CbCr format: bit depth and chroma subsampling shifts (0 or 1 per axis)."""

    depth: int
    shift_x: int
    shift_y: int
    full_range_format: bool = False  # yuvj*: full range whatever the tag says

    @property
    def dtype(self):
        return np.uint8 if self.depth <= 8 else np.uint16


def planar_layout(fmt) -> PixelLayout | None:
    """The layout of a PyAV VideoFormat that is planar Y'CbCr in three planes (8 to 16 bits,
    native byte order), else None."""
    import av

    probe = av.VideoFormat(fmt.name, 4, 4)
    comps = probe.components
    if (probe.is_rgb or not probe.is_planar or len(comps) != 3 or probe.is_big_endian
            or [c.plane for c in comps] != [0, 1, 2] or not 8 <= comps[0].bits <= 16):
        return None
    return PixelLayout(comps[0].bits, int(comps[1].width < 4), int(comps[1].height < 4),
                       fmt.name.startswith("yuvj"))


@dataclass(frozen=True)
class ColourSpec:
    """How a stream's code values map to RGB: matrix (AVColorSpace), full range or not."""

    matrix: int
    full_range: bool

    @property
    def kr_kb(self) -> tuple[float, float]:
        return KR_KB.get(self.matrix, KR_KB[1])


def colour_spec(colorspace: int, color_range: int, height: int, layout: PixelLayout | None) -> ColourSpec:
    matrix = colorspace if colorspace in KR_KB else default_matrix(height)
    full = color_range == RANGE_FULL or bool(layout and layout.full_range_format)
    return ColourSpec(matrix, full)


def _plane(frame, index: int, dtype) -> np.ndarray:
    plane = frame.planes[index]
    itemsize = np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // itemsize)
    return rows[:, : plane.width]


def _scale(depth: int, full: bool) -> tuple[float, float, float, float]:
    """(luma offset, luma span, chroma centre, chroma span) in code values."""
    if full:
        top = float((1 << depth) - 1)
        return 0.0, top, float(1 << (depth - 1)), top
    unit = float(1 << (depth - 8))
    return 16 * unit, 219 * unit, 128 * unit, 224 * unit


def _upsample(c: np.ndarray, axis: int) -> np.ndarray:
    """Double ``c`` along ``axis``, bilinear at centred siting (edge samples repeated)."""
    prev = np.concatenate([np.take(c, [0], axis), np.take(c, range(c.shape[axis] - 1), axis)], axis)
    nxt = np.concatenate([np.take(c, range(1, c.shape[axis]), axis), np.take(c, [-1], axis)], axis)
    even, odd = 0.75 * c + 0.25 * prev, 0.75 * c + 0.25 * nxt
    out = np.stack([even, odd], axis + 1)
    return out.reshape(*c.shape[:axis], 2 * c.shape[axis], *c.shape[axis + 1:])


def _downsample(c: np.ndarray, axis: int) -> np.ndarray:
    """Halve ``c`` along ``axis`` by averaging pairs (an odd length repeats its last sample)."""
    if c.shape[axis] % 2:
        c = np.concatenate([c, np.take(c, [-1], axis)], axis)
    pairs = c.reshape(*c.shape[:axis], c.shape[axis] // 2, 2, *c.shape[axis + 1:])
    return pairs.mean(axis + 1)


def yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, layout: PixelLayout, spec: ColourSpec) -> np.ndarray:
    """Planes of code values -> float32 [3, H, W] RGB in [0, 1] (not clipped)."""
    off, span, centre, cspan = _scale(layout.depth, spec.full_range)
    h, w = y.shape
    luma = (y.astype(np.float32) - off) / span
    chroma = []
    for c in (u, v):
        c = (c.astype(np.float32) - centre) / cspan
        if layout.shift_y:
            c = _upsample(c, 0)
        if layout.shift_x:
            c = _upsample(c, 1)
        chroma.append(c[:h, :w])
    cb, cr = chroma
    kr, kb = spec.kr_kb
    kg = 1.0 - kr - kb
    r = luma + 2 * (1 - kr) * cr
    b = luma + 2 * (1 - kb) * cb
    g = (luma - kr * r - kb * b) / kg
    return np.stack([r, g, b]).astype(np.float32, copy=False)


def rgb_to_yuv(rgb: np.ndarray, layout: PixelLayout, spec: ColourSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float [3, H, W] RGB (clipped to [0, 1] here) -> quantized Y, Cb, Cr planes."""
    r, g, b = np.clip(rgb, 0.0, 1.0).astype(np.float32, copy=False)
    kr, kb = spec.kr_kb
    luma = kr * r + (1 - kr - kb) * g + kb * b
    cb = (b - luma) / (2 * (1 - kb))
    cr = (r - luma) / (2 * (1 - kr))
    off, span, centre, cspan = _scale(layout.depth, spec.full_range)
    top = (1 << layout.depth) - 1

    def code(x, offset, scale):
        return np.clip(np.rint(x * scale + offset), 0, top).astype(layout.dtype)

    planes = []
    for c in (cb, cr):
        if layout.shift_x:
            c = _downsample(c, 1)
        if layout.shift_y:
            c = _downsample(c, 0)
        planes.append(code(c, centre, cspan))
    return code(luma, off, span), planes[0], planes[1]


def frame_to_rgb(frame, spec: ColourSpec) -> np.ndarray:
    """A decoded PyAV VideoFrame -> float32 [3, H, W] RGB in [0, 1]."""
    name = frame.format.name
    if name in SEMI_PLANAR:
        frame = frame.reformat(format=SEMI_PLANAR[name])  # a lossless repack
    layout = planar_layout(frame.format)
    if layout is not None:
        planes = [_plane(frame, i, layout.dtype) for i in range(3)]
        return yuv_to_rgb(*planes, layout, spec)
    # RGB, palette, grey, alpha or big-endian formats: FFmpeg's swscale to 16-bit RGB
    rgb = frame.reformat(format="rgb48le", src_colorspace=_swscale_space(spec.matrix),
                         src_color_range=RANGE_FULL if spec.full_range else RANGE_LIMITED,
                         dst_color_range=RANGE_FULL).to_ndarray()
    return (rgb.astype(np.float32) / 65535.0).transpose(2, 0, 1)


def _swscale_space(matrix: int) -> str:
    return {1: "itu709", 4: "fcc", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}.get(matrix, "itu601")


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, spec: ColourSpec):
    """Float [3, H, W] RGB -> a PyAV VideoFrame of ``pix_fmt`` (planar Y'CbCr here, else via swscale)."""
    import av

    _, h, w = rgb.shape
    target = av.VideoFormat(pix_fmt)
    layout = planar_layout(target)
    if layout is None:
        pixels = np.rint(np.clip(rgb, 0, 1).transpose(1, 2, 0) * 65535).astype(np.uint16)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb48le")
        return frame.reformat(format=pix_fmt, dst_colorspace=_swscale_space(spec.matrix),
                              src_color_range=RANGE_FULL,
                              dst_color_range=RANGE_FULL if spec.full_range else RANGE_LIMITED)
    frame = av.VideoFrame(w, h, pix_fmt)
    for index, plane in enumerate(rgb_to_yuv(rgb, layout, spec)):
        _plane(frame, index, layout.dtype)[...] = plane
    return frame
