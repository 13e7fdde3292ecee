"""Decoding a clip into ``stages.Item``s: RGB float frames with their timestamps; a packet that
does not decode becomes a lost frame (reported by time, replaced later), never a crash."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from .colour import ColourSpec, frame_to_rgb
from .stages import END, Item, Pipe

REORDER = 4  # frames held to put a lost frame (known by its packet's time) in presentation order


@dataclass
class ReadReport:
    frames: int = 0  # frames read, lost ones included
    lost: list = field(default_factory=list)  # seconds of the lost frames
    stopped: str | None = None  # why reading ended before the end of the file


def seconds(pts, time_base) -> float | None:
    return None if pts is None else float(pts * time_base)


def read_frames(info, spec: ColourSpec, start: int, pipe: Pipe, outbox, report: ReadReport,
                stop: int | None = None) -> None:
    """Put frames ``start`` to ``stop`` (the end) of ``info``'s clip into ``outbox``, then END
    (earlier frames are decoded, since later ones depend on them, but not converted)."""
    import av

    order = _Order(pipe, outbox, spec, start, report, info.time_base, stop)
    with av.open(str(info.path)) as container:
        stream = container.streams.video[0]
        packets = container.demux(stream)
        while not pipe.stop.is_set() and not order.done:
            try:
                with pipe.timed("decode"):
                    packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                report.stopped = f"reading stopped after {order.count + len(order.held)} frame(s): {e}"
                break
            try:
                with pipe.timed("decode"):
                    frames = packet.decode()
            except av.error.FFmpegError:
                frames = [None]  # the packet's frame is lost
            for frame in frames:
                if not order.put(frame, packet):
                    return
        end = None if stream.duration is None else (stream.start_time or 0) + stream.duration
        announced = container.duration / 1e6 if container.duration else None  # microseconds
    if not order.finish(end):
        return
    if report.stopped is None and stop is None:
        report.stopped = _shortfall(info, order, announced)
    pipe.put(outbox, END)


def _shortfall(info, order, announced) -> str | None:
    """Why a clip that ended cleanly looks cut short (fewer frames, or less time, than its header
    announces), else None."""
    if info.frames and order.count < info.frames:
        return f"the file ends after {order.count} of the {info.frames} frames it announces"
    last = seconds(order.last_end, info.time_base)
    period = 1 / float(info.rate) if info.rate else 0.1
    if announced and last is not None and last < announced - 1.5 * period:
        return f"the file ends after {order.count} frame(s), at {last:.3f}s of the {announced:.3f}s it announces"
    return None


class _Order:
    """Frames in presentation order, numbered, each lasting until the next one's timestamp (the
    packet durations decoders report for B-frame streams are in decoding order); the last one
    lasts until the stream's end, else as long as the one before."""

    def __init__(self, pipe: Pipe, outbox, spec, start: int, report: ReadReport, time_base, stop=None):
        self.pipe, self.outbox, self.spec, self.start, self.report, self.time_base = \
            pipe, outbox, spec, start, report, time_base
        self.stop, self.done = stop, False  # done: frame ``stop`` reached
        self.held: list = []  # (pts, sequence, frame or None, fallback duration)
        self.count, self.sequence, self.last_pts, self.gap, self.last_end = 0, 0, None, None, None

    def put(self, frame, packet) -> bool:
        lost = frame is None or frame.is_corrupt
        pts = packet.pts if frame is None else frame.pts
        if pts is None:
            pts = (self.last_pts or 0) + (self.gap or 1)
        self.last_pts = pts
        bisect.insort(self.held, (pts, self.sequence, None if lost else frame, packet.duration or None))
        self.sequence += 1
        return len(self.held) <= REORDER or self._emit(self.held[1][0] if len(self.held) > 1 else None)

    def finish(self, end) -> bool:
        while self.held and not self.done:
            if not self._emit(self.held[1][0] if len(self.held) > 1 else end):
                return False
        self.report.frames = self.count
        return True

    def _emit(self, next_pts) -> bool:
        pts, _, frame, duration = self.held.pop(0)
        if next_pts is not None and next_pts > pts:
            duration = self.gap = next_pts - pts
        elif self.gap:
            duration = self.gap
        index, self.count = self.count, self.count + 1
        self.last_end = pts + (duration or 0)
        if self.stop is not None and index >= self.stop:
            self.done = True
            return True
        if frame is None:
            self.report.lost.append(seconds(pts, self.time_base))
        if index < self.start:
            return True
        rgb = None
        if frame is not None:
            with self.pipe.timed("decode"):
                rgb = frame_to_rgb(frame, self.spec)
        return self.pipe.put(self.outbox, Item(index, pts, duration, rgb))


__all__ = ["END", "ReadReport", "read_frames", "seconds"]
