"""What a clip holds, read once before restoring it: the video stream's size, pixel format,
timing, colour tags and display matrix, and the other streams that are copied as they are."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..fileio import describe_file

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                  ".wmv", ".flv", ".3gp", ".ogv", ".nut", ".y4m"}
COPIED_TYPES = ("audio", "subtitle", "data")


class VideoError(Exception):
    """A clip that cannot be restored (not a video, no video stream, no decoder): one line naming it."""


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class ClipInfo:
    path: Path
    index: int  # the video stream's index
    codec: str  # the decoder's name
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    rate: Fraction | None  # average frame rate (None when the container does not say)
    frames: int | None  # frame count the container announces (an estimate for some containers)
    colorspace: int
    color_range: int
    color_primaries: int
    color_trc: int
    sample_aspect_ratio: Fraction | None
    display_matrix: tuple | None  # 9 int32 in FFmpeg's layout, None when the clip has none
    metadata: dict = field(default_factory=dict)
    copied: list = field(default_factory=list)  # (index, type, codec name) of streams copied as they are

    @property
    def depth(self) -> int:
        import av

        return av.VideoFormat(self.pix_fmt, 2, 2).components[0].bits


def _open(path: Path):
    import av

    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        try:
            with open(path, "rb") as f:
                what = describe_file(f.read(64))
        except OSError:
            what = None
        raise VideoError(f"{path}: not a video FFmpeg can read" + (f" (it looks like {what})" if what else "")
                         + f": {getattr(e, 'strerror', None) or e}") from None


def _display_matrix(frame) -> tuple | None:
    for data in frame.side_data:
        if "DISPLAYMATRIX" in str(data.type):
            return struct.unpack("<9i", bytes(data)[:36])
    return None


def _first_frame(container, stream, path, tries: int = 50):
    """The first frame that decodes (a damaged first packet is a lost frame, not a foreign file);
    a VideoError when ``tries`` packets in a row do not decode."""
    import av

    failed, error = 0, None
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            failed, error = failed + 1, e
            if failed >= tries:
                break
            continue
        if frames:
            return frames[0]
    if error is not None:
        raise VideoError(f"{path}: cannot decode its {stream.codec_context.name} video: {error}")
    raise VideoError(f"{path}: its video stream has no frame that decodes")


def probe(path) -> ClipInfo:
    """ClipInfo of ``path``, or a VideoError saying in one line why it cannot be restored."""
    path = Path(path)
    container = _open(path)
    try:
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "nothing"
            raise VideoError(f"{path}: has no video stream (it holds {kinds})")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None or not getattr(ctx, "name", None):
            raise VideoError(f"{path}: this FFmpeg build has no decoder for its video codec")
        first = _first_frame(container, stream, path)
        rate = stream.average_rate or stream.guessed_rate
        copied = [(s.index, s.type, getattr(s.codec_context, "name", None) or "?") for s in container.streams
                  if s.type in COPIED_TYPES]
        return ClipInfo(path, stream.index, ctx.name, first.width, first.height, first.format.name,
                        stream.time_base, Fraction(rate) if rate else None, stream.frames or None,
                        int(first.colorspace), int(first.color_range), int(first.color_primaries),
                        int(first.color_trc), stream.sample_aspect_ratio or ctx.sample_aspect_ratio,
                        _display_matrix(first), dict(stream.metadata), copied)
    finally:
        container.close()
