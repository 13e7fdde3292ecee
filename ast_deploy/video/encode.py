"""The encoder of a restored clip: which codec, pixel format and options, and the writer of one
segment (one closed GOP, its own encoder instance, in a NUT file that keeps any time base).

Segments carry no B-frames, so their packets join in decoding order without touching a timestamp
(``join.py``); each starts with a keyframe, so an interrupted clip resumes at a segment boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .colour import ColourSpec, rgb_to_frame

# the input's codec -> the encoder that writes it again (others: libx264, or VP9 in WebM)
ENCODER_FOR = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1", "ffv1": "ffv1",
               "prores": "prores_ks"}
DEFAULT_CRF = {"libx264": 17, "libx265": 20, "libvpx-vp9": 24, "libsvtav1": 28}  # visually lossless-ish
CRF_CODECS = set(DEFAULT_CRF)


class EncoderError(ValueError):
    """An encoder this FFmpeg build lacks or that cannot take the clip (a usage error)."""


@dataclass(frozen=True)
class EncoderSettings:
    codec: str
    pix_fmt: str
    crf: int | None
    preset: str | None
    gop: int  # frames per segment (one closed GOP each)
    options: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (f"{self.codec} {self.pix_fmt}" + (f" crf {self.crf}" if self.crf is not None else "")
                + (f" preset {self.preset}" if self.preset else "") + f", GOP {self.gop}")


def _encoder(name: str):
    import av

    try:
        return av.codec.Codec(name, "w")
    except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpeg errors
        raise EncoderError(f"--codec {name}: this FFmpeg build has no such encoder") from None


def _pix_fmt(codec, wanted: str, depth: int) -> str:
    formats = [f.name for f in (codec.video_formats or [])]
    if not formats or wanted in formats:
        return wanted
    for fmt in (["yuv420p10le", "yuv422p10le", "yuv444p10le"] if depth > 8 else []) + ["yuv420p", "yuv444p"]:
        if fmt in formats:
            return fmt
    return formats[0]


def default_gop(rate: Fraction | None) -> int:
    """About two seconds of frames: the keyframe interval and the unit of --resume."""
    return max(1, min(300, round(2 * float(rate)))) if rate else 48


def choose_encoder(info, out_suffix: str, codec: str | None = None, crf: int | None = None,
                   preset: str | None = None, gop: int | None = None) -> EncoderSettings:
    """The encoder for ``info``'s clip: ``codec``, else the input's own codec when this build
    encodes it, else H.264 (VP9 for WebM), at a visually lossless CRF."""
    if codec is None:
        codec = ENCODER_FOR.get(info.codec) or ("libvpx-vp9" if out_suffix.lower() == ".webm" else "libx264")
        try:
            _encoder(codec)
        except EncoderError:
            codec = "libx264"
    encoder = _encoder(codec)
    if encoder.type != "video":
        raise EncoderError(f"--codec {codec}: is a {encoder.type} encoder, not a video one")
    if crf is not None and codec not in CRF_CODECS:
        raise EncoderError(f"--crf: {codec} takes no CRF (it does for {', '.join(sorted(CRF_CODECS))})")
    crf = DEFAULT_CRF.get(codec) if crf is None else crf
    options = {}
    if codec in ("libx264", "libx265", "libsvtav1"):
        options.update({"crf": str(crf)} | ({"preset": preset} if preset else {}))
    elif codec == "libvpx-vp9":
        options.update({"crf": str(crf), "b": "0", "row-mt": "1"} | ({"cpu-used": preset} if preset else {}))
    elif preset:
        raise EncoderError(f"--preset: {codec} takes no preset here (libx264, libx265, libsvtav1, libvpx-vp9 do)")
    if codec == "libx265":
        options["x265-params"] = "bframes=0:log-level=error"
    return EncoderSettings(codec, _pix_fmt(encoder, info.pix_fmt, info.depth), crf, preset,
                           gop or default_gop(info.rate), options)


def check_container(dst: Path, settings: EncoderSettings, copied) -> None:
    """An EncoderError now, before any frame is restored, when ``dst``'s container cannot hold the
    encoder's codec or one of the streams copied from the input (``copied``: (index, type, codec))."""
    import os

    import av

    probe = dst.parent / f".{dst.stem}.check-{os.getpid()}{dst.suffix}"  # opened, never written
    try:
        container = av.open(str(probe), "w")
    except (av.error.FFmpegError, ValueError) as e:
        raise EncoderError(f"{dst}: FFmpeg writes no container for the suffix {dst.suffix!r} ({e}); name the "
                          "output with -o FILE.mkv") from None
    try:
        supported = container.supported_codecs
    finally:
        container.close()
        probe.unlink(missing_ok=True)
    codec = _encoder(settings.codec).canonical_name
    if codec not in supported:
        raise EncoderError(f"{dst}: a {dst.suffix} file cannot hold {codec} video ({settings.codec}); "
                           "choose another --codec or an output such as .mkv")
    for index, kind, name in copied:
        if name not in supported:
            raise EncoderError(f"{dst}: a {dst.suffix} file cannot hold the input's {kind} stream {index} "
                               f"({name}), which is copied as it is; write .mkv instead")


class SegmentWriter:
    """Encodes frames into one NUT file: ``add(rgb, pts, duration)`` then ``close()``."""

    def __init__(self, path: Path, info, settings: EncoderSettings, spec: ColourSpec):
        import av

        self.path, self.settings, self.spec, self.frames = path, settings, spec, 0
        self.container = av.open(str(path), "w", format="nut")
        stream = self.container.add_stream(settings.codec, rate=info.rate or Fraction(25))
        stream.width, stream.height, stream.pix_fmt = info.width, info.height, settings.pix_fmt
        stream.time_base = self.time_base = info.time_base
        ctx = stream.codec_context
        ctx.time_base = info.time_base
        ctx.color_range, ctx.colorspace = info.color_range, info.colorspace
        ctx.color_primaries, ctx.color_trc = info.color_primaries, info.color_trc
        if info.sample_aspect_ratio:
            ctx.sample_aspect_ratio = info.sample_aspect_ratio
        ctx.gop_size = max(1, settings.gop)
        ctx.max_b_frames = 0
        ctx.options = dict(settings.options)
        self.stream = stream

    def add(self, rgb, pts: int, duration: int | None) -> None:
        frame = rgb_to_frame(rgb, self.settings.pix_fmt, self.spec)
        frame.pts, frame.time_base = pts, self.time_base  # the muxer may change the stream's time base
        frame.color_range, frame.colorspace = self.stream.codec_context.color_range, self.stream.codec_context.colorspace
        if duration:
            frame.duration = duration
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        try:
            self.container.mux(self.stream.encode(None))
        finally:
            self.container.close()

    def abandon(self) -> None:
        try:
            self.container.close()
        except Exception:  # an encoder half-way through a GOP may refuse to close cleanly
            pass
        self.path.unlink(missing_ok=True)
