"""One clip restored in parts by several workers and joined into the output a single run writes.

A part is a range of frames on segment boundaries. Each segment is its own closed GOP, encoded by
a fresh encoder from the same restored frames, so the parts' segments are the single run's, and
joining them gives the same file (the joins need no re-encoding). A worker decodes its clip from
the start up to its range (decoding is a few per cent of a frame's restoration) so every frame
is numbered as in the single run."""

from __future__ import annotations

import math
from pathlib import Path

from ..console import Progress
from .pipeline import ClipResult, VideoOptions, job_key, join_into_place, prepare, run_frames
from .probe import VideoError
from .segments import WorkFolder, work_folder


def count_frames(path) -> int:
    """Video packets in ``path`` (one frame each), read without decoding."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


def split(frames: int, gop: int, parts: int) -> list[tuple[int, int | None]]:
    """Up to ``parts`` (start, stop) frame ranges on multiples of ``gop``; the last one's stop is
    None (to the end, however many frames the file really has)."""
    segments = max(1, math.ceil(frames / gop))
    per_part = math.ceil(segments / max(1, min(parts, segments)))
    starts = list(range(0, segments, per_part))
    return [(s * gop, None if i == len(starts) - 1 else starts[i + 1] * gop) for i, s in enumerate(starts)]


class PartRecorder:
    """The work folder as a part's writer sees it: segments go there, records stay in memory (the
    driver writes the manifest)."""

    def __init__(self, dst: Path):
        self.path, self.segments = work_folder(dst), []

    def segment_path(self, number: int, partial: bool = False) -> Path:
        return self.path / (f"seg{number:05d}.nut" + (".partial" if partial else ""))

    def add(self, number: int, first: int, frames: int, lost: list, end) -> None:
        self.segments.append({"file": self.segment_path(number).name, "first": first, "frames": frames,
                              "lost": lost, "end": end})


def restore_part(src, dst, runner, options: VideoOptions, start: int, stop: int | None) -> list[dict]:
    """Restore frames ``start`` to ``stop`` of ``src`` into segments in ``dst``'s work folder (made
    by the driver); their records."""
    info, settings, spec = prepare(src, dst, options)
    recorder = PartRecorder(Path(dst))
    with Progress(quiet=True) as bar:
        run_frames(info, settings, spec, runner, recorder, start, bar, stop)
    return recorder.segments


def start_parts(src, dst, options: VideoOptions, parts: int):
    """Before the workers start: the (start, stop) ranges of ``src`` and a fresh work folder."""
    info, settings, _ = prepare(src, dst, options)
    WorkFolder(Path(dst), job_key(info, settings, options)).start_fresh()
    return split(count_frames(src), settings.gop, parts)


def join_parts(src, dst, options: VideoOptions, records: list[dict]) -> ClipResult:
    """Join the parts' segments (records from ``restore_part``, any order) into ``dst``."""
    info, settings, _ = prepare(src, dst, options)
    work = WorkFolder(Path(dst), job_key(info, settings, options))
    work.segments = sorted(records, key=lambda r: r["first"])
    expected = 0
    for record in work.segments:
        if record["first"] != expected:
            raise VideoError(f"{src}: the parts do not join (a segment starts at frame {record['first']}, "
                             f"frame {expected} was expected)")
        expected += record["frames"]
    if not work.segments:
        raise VideoError(f"{src}: no video frame could be decoded")
    join_into_place(info, work, Path(dst))
    return ClipResult(work.next_frame, work.next_frame, 0, work.lost(), None, settings)
