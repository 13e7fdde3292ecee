"""Decoding a clip into ``stages.Item``s: RGB float frames with their timestamps; a packet that
does not decode becomes a lost frame (reported by time, replaced later), never a crash."""

from __future__ import annotations

from dataclasses import dataclass, field

from .colour import ColourSpec, frame_to_rgb
from .stages import END, Item, Pipe


@dataclass
class ReadReport:
    frames: int = 0  # frames read, lost ones included
    lost: list = field(default_factory=list)  # seconds of the lost frames
    stopped: str | None = None  # why reading ended before the end of the file


def seconds(pts, time_base) -> float | None:
    return None if pts is None else float(pts * time_base)


def read_frames(info, spec: ColourSpec, start: int, pipe: Pipe, outbox, report: ReadReport) -> None:
    """Put frames ``start``... of ``info``'s clip into ``outbox`` (frames before ``start`` are
    decoded, since later ones depend on them, but not converted), then END."""
    import av

    with av.open(str(info.path)) as container:
        stream = container.streams.video[0]
        packets = container.demux(stream)
        index, last_pts, held = 0, None, _Held(pipe, outbox)
        while not pipe.stop.is_set():
            try:
                with pipe.timed("decode"):
                    packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                report.stopped = f"reading stopped after {index} frame(s): {e}"
                break
            try:
                with pipe.timed("decode"):
                    frames = packet.decode()
            except av.error.FFmpegError:
                frames = [None]  # the packet's frame is lost
            for frame in frames:
                if index >= start:
                    item = _item(frame, packet, index, last_pts, spec, pipe, report, info.time_base)
                    if not held.put(item):
                        return
                    last_pts = item.pts
                index += 1
        report.frames = index
        end = None if stream.duration is None else (stream.start_time or 0) + stream.duration
    if held.put(None, end):
        pipe.put(outbox, END)


class _Held:
    """Holds each frame back until the next one comes, so its duration is the gap to the next
    timestamp (decoders report B-frame streams' packet durations, which are in decoding order);
    the last frame lasts until the stream's end, else as long as the one before."""

    def __init__(self, pipe: Pipe, outbox):
        self.pipe, self.outbox, self.item, self.gap = pipe, outbox, None, None

    def put(self, item, end=None) -> bool:
        held, self.item = self.item, item
        if held is None:
            return True
        nxt = item.pts if item is not None else end
        if nxt is not None and held.pts is not None and nxt > held.pts:
            held.duration = self.gap = nxt - held.pts
        elif item is None and self.gap:
            held.duration = self.gap
        return self.pipe.put(self.outbox, held)


def _item(frame, packet, index, last_pts, spec, pipe, report, time_base) -> Item:
    if frame is None or frame.is_corrupt:
        pts = packet.pts if frame is None else frame.pts
        report.lost.append(seconds(pts, time_base))
        return Item(index, pts, packet.duration or None, None)
    pts = frame.pts if frame.pts is not None else (last_pts or 0) + (frame.duration or 1)
    with pipe.timed("decode"):
        rgb = frame_to_rgb(frame, spec)
    return Item(index, pts, frame.duration or None, rgb)


__all__ = ["END", "ReadReport", "read_frames", "seconds"]
