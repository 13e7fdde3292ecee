"""The encoding stage: restored frames -> one segment file per GOP in the clip's work folder. A
lost frame is written as the previous restored frame (the next one when none came before)."""

from __future__ import annotations

import os

from .decode import seconds
from .encode import SegmentWriter
from .stages import END, Pipe


class _Segments:
    def __init__(self, info, settings, spec, work, pipe: Pipe):
        self.info, self.settings, self.spec, self.work, self.pipe = info, settings, spec, work, pipe
        self.writer, self.number, self.first, self.lost, self.end = None, None, 0, [], None

    def open(self, index: int) -> None:
        self.finish()
        self.number, self.first, self.lost = index // self.settings.gop, index, []
        path = self.work.segment_path(self.number, partial=True)
        self.writer = SegmentWriter(path, self.info, self.settings, self.spec)

    def add(self, rgb, item) -> None:
        with self.pipe.timed("encode"):
            self.writer.add(rgb, item.pts, item.duration)
        if item.pts is not None:
            self.end = item.pts + (item.duration or 0)

    def finish(self) -> None:
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        with self.pipe.timed("encode"):
            writer.close()
        os.replace(writer.path, self.work.segment_path(self.number))
        self.work.add(self.number, self.first, writer.frames, self.lost, self.end)

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.abandon()
            self.writer = None


def write_segments(info, settings, spec, work, pipe: Pipe, inbox) -> None:
    segments = _Segments(info, settings, spec, work, pipe)
    previous, waiting = None, []
    try:
        while True:
            item = pipe.get(inbox)
            if item is END:
                break
            if segments.writer is None or (item.index % settings.gop == 0 and segments.writer.frames):
                segments.open(item.index)
            if item.rgb is None:
                segments.lost.append(seconds(item.pts, info.time_base))
                if previous is None:
                    waiting.append(item)
                    continue
            else:
                previous = item.rgb
                for early in waiting:
                    segments.add(previous, early)
                waiting.clear()
            segments.add(previous, item)
        if pipe.stop.is_set():  # interrupted: the unfinished segment is not kept
            segments.abandon()
            return
        segments.finish()
    except BaseException:
        segments.abandon()
        raise
