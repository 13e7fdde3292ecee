"""Join a clip's encoded segments with the input's other streams into the output container.

Video packets come from the segments in order; audio, subtitle and data packets are read from
the input and muxed untouched (stream copy); both are merged by time so the muxer's interleaving
queue stays short whatever the clip's length. Timestamps are the input's, in its time base."""

from __future__ import annotations

import heapq
import itertools
from fractions import Fraction
from pathlib import Path

from .probe import ClipInfo


def _video_packets(segments, time_base):
    """The segments' packets in order, each lasting until the next one's timestamp (the segments
    have no B-frames: decoding order is presentation order), the last one until the segment's end."""
    import av

    for path, end in segments:
        with av.open(str(path)) as seg:
            held = None
            for packet in seg.demux(seg.streams.video[0]):
                if not packet.size:
                    continue
                if held is not None:
                    held.duration = _rescale(packet.pts, packet.time_base, held.time_base) - held.pts
                    yield held
                held = packet
            if held is not None:
                if end is not None:
                    held.duration = max(1, _rescale(end, time_base, held.time_base) - held.pts)
                yield held


def _rescale(ts, src, dst) -> int:
    return int(round(Fraction(ts) * src / dst))


def _other_packets(src: Path, indices):
    import av

    if not indices:
        return
    with av.open(str(src)) as container:
        streams = [s for s in container.streams if s.index in indices]
        for packet in container.demux(streams):
            if packet.size:
                yield packet


def _when(packet) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    return Fraction(ts or 0) * packet.time_base


def _add_video_stream(out, template, info: ClipInfo):
    stream = out.add_stream_from_template(template)
    stream.time_base = info.time_base
    if info.rate:
        stream.codec_context.framerate = info.rate  # Matroska's default duration, MP4's rate
    ctx = stream.codec_context  # codecs that keep no colour tags in their bitstream (FFV1) need them here
    ctx.color_range, ctx.colorspace = info.color_range, info.colorspace
    ctx.color_primaries, ctx.color_trc = info.color_primaries, info.color_trc
    if info.sample_aspect_ratio:
        stream.sample_aspect_ratio = info.sample_aspect_ratio
    if info.display_matrix:
        stream.set_display_matrix(list(info.display_matrix))
    for key, value in info.metadata.items():
        if key.lower() not in ("rotate", "encoder", "duration"):
            stream.metadata[key] = value
    return stream


def join(info: ClipInfo, segments: list[tuple[Path, int | None]], dst: Path, container_format: str | None = None) -> None:
    """Write ``dst`` (a temporary name; the caller moves it into place) from ``segments``, (file,
    timestamp where it ends in the clip's time base) in order."""
    import av

    with av.open(str(info.path)) as src, av.open(str(segments[0][0])) as first, \
            av.open(str(dst), "w", format=container_format) as out:
        out.metadata.update({k: v for k, v in src.metadata.items() if k.lower() != "encoder"})
        mapping = {"video": _add_video_stream(out, first.streams.video[0], info)}
        for index, _, _ in info.copied:
            template = src.streams[index]
            stream = out.add_stream_from_template(template)
            stream.time_base = template.time_base
            stream.metadata.update(template.metadata)
            mapping[index] = stream
        # packets from their own readers (the templates stay open for the header), merged by time
        order = itertools.count()
        video = ((_when(p), next(order), "video", p) for p in _video_packets(segments, info.time_base))
        others = ((_when(p), next(order), p.stream.index, p) for p in _other_packets(info.path, set(mapping) - {"video"}))
        for _, _, key, packet in heapq.merge(video, others, key=lambda item: (item[0], item[1])):
            packet.stream = mapping[key]
            out.mux(packet)
