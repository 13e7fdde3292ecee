"""``restore_clip``: one clip through the Runner, decode / inference / encode overlapped, into an
output written whole or not at all (segments in a work folder, joined, moved into place)."""

from __future__ import annotations

import os
import queue
from dataclasses import dataclass, field
from pathlib import Path

from ..console import Progress
from .colour import colour_spec, planar_layout
from .decode import ReadReport, read_frames
from .encode import EncoderSettings, check_container, choose_encoder
from .join import join
from .probe import VideoError, probe
from .segments import WorkFolder
from .stages import Pipe, infer_stage
from .write import write_segments

MAX_FRAMES_IN_FLIGHT = 16  # frames held per stage at most, whatever the budget allows: memory stays flat


@dataclass
class VideoOptions:
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    gop: int | None = None
    resume: bool = False
    quiet: bool = False
    model: str = ""  # what restores the frames (part of --resume's check)


@dataclass
class ClipResult:
    frames: int  # frames in the output
    restored: int  # frames restored by this run (fewer after --resume)
    resumed_from: int
    lost: list = field(default_factory=list)  # seconds of frames that did not decode (repeated)
    stopped: str | None = None  # reading ended early (a truncated file)
    settings: EncoderSettings | None = None
    busy: dict = field(default_factory=dict)  # seconds per stage: decode, inference, encode
    wall: float = 0.0


def job_key(info, settings: EncoderSettings, options: VideoOptions) -> dict:
    st = os.stat(info.path)
    return {"input": [str(Path(info.path).resolve()), st.st_size, st.st_mtime_ns], "model": options.model,
            "encoder": settings.describe(), "options": settings.options}


def _start(work: WorkFolder, resume: bool, progress: Progress) -> int:
    if resume:
        kept, why = work.resume()
        if kept:
            work.clear_partial()
            progress.write(f"resuming {work.path.name[1:-6]} at frame {work.next_frame} ({kept} segment(s) kept)")
            return work.next_frame
        progress.write(f"--resume: starting from the beginning ({why})")
    work.start_fresh()
    return 0


def prepare(src, dst, options: VideoOptions):
    """(ClipInfo, EncoderSettings, ColourSpec) of restoring ``src`` into ``dst``: probed, the
    encoder chosen, the container checked, before any frame runs."""
    import av

    src, dst = Path(src), Path(dst)
    info = probe(src)
    settings = choose_encoder(info, dst.suffix, options.codec, options.crf, options.preset, options.gop)
    dst.parent.mkdir(parents=True, exist_ok=True)
    check_container(dst, settings, info.copied)
    spec = colour_spec(info.colorspace, info.color_range, info.height, planar_layout(av.VideoFormat(info.pix_fmt)))
    return info, settings, spec


def run_frames(info, settings, spec, runner, work, start: int, bar: Progress, stop: int | None = None):
    """Restore frames ``start`` to ``stop`` (the end) of the clip into ``work``'s segments, decode,
    inference and encode overlapped; (ReadReport, busy seconds per stage)."""
    plan = runner.plan_for(info.height, info.width)
    batch = 1 if plan.tiled else max(1, min(plan.batch, MAX_FRAMES_IN_FLIGHT))
    pipe, report = Pipe(), ReadReport()
    decoded, restored = queue.Queue(maxsize=batch + 2), queue.Queue(maxsize=batch + 2)
    threads = [pipe.stage(read_frames, info, spec, start, pipe, decoded, report, stop),
               pipe.stage(write_segments, info, settings, spec, work, pipe, restored)]
    try:
        infer_stage(runner, plan, batch, pipe, decoded, restored, bar)
        threads[1].join()
    finally:
        pipe.stop.set()
        for thread in threads:
            thread.join()
    pipe.check()
    return report, dict(pipe.busy)


def restore_clip(src, dst, runner, options: VideoOptions) -> ClipResult:
    """Restore clip ``src`` into ``dst`` (its suffix picks the container)."""
    import time

    wall = time.perf_counter()
    src, dst = Path(src), Path(dst)
    info, settings, spec = prepare(src, dst, options)
    work = WorkFolder(dst, job_key(info, settings, options))
    with Progress(total=info.frames, desc=f"restoring {src.name}", unit="frame", quiet=options.quiet,
                  lines=20) as bar:
        start = _start(work, options.resume, bar)
        bar.n = start
        bar.restart_clock()
        try:
            report, busy = run_frames(info, settings, spec, runner, work, start, bar)
        except BaseException as e:
            if not isinstance(e, Exception):  # Ctrl-C, SIGTERM: say what --resume would keep
                bar.write(f"{src.name}: {work.next_frame} frame(s) in finished segments kept in {work.path}; "
                          "--resume continues from there")
            raise
    if not work.segments:
        raise VideoError(f"{src}: no video frame could be decoded")
    join_into_place(info, work, dst)
    return ClipResult(work.next_frame, work.next_frame - start, start, work.lost(), report.stopped, settings,
                      busy, time.perf_counter() - wall)


def join_into_place(info, work: WorkFolder, dst: Path) -> None:
    tmp = dst.parent / f".{dst.stem}.partial-{os.getpid()}{dst.suffix}"
    try:
        join(info, work.files(), tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    work.remove()
