"""ast-restore's clips (ast_deploy.video): the options, where each restored clip goes, the run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..outputs import OutputError, ReplacesInput, check_output, check_output_dir
from ..video.probe import VIDEO_SUFFIXES, is_video
from .common import UsageError, positive_int


def _crf(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer CRF, got {text!r}") from None
    if not 0 <= value <= 63:
        raise argparse.ArgumentTypeError(f"CRF {value} is outside 0..63")
    return value


def add_video_options(p: argparse.ArgumentParser) -> None:
    video = p.add_argument_group("clips (mp4, mkv, mov, avi, webm, ...; pip install -e \".[video]\")")
    video.add_argument("--codec", metavar="ENCODER", help="FFmpeg encoder of restored clips (default: the input's "
                       "codec when this build encodes it, else libx264)")
    video.add_argument("--crf", type=_crf, help="constant rate factor (default: visually lossless, 17 for libx264)")
    video.add_argument("--preset", help="encoder preset (libx264/libx265: ultrafast..veryslow)")
    video.add_argument("--gop", type=positive_int, metavar="FRAMES", help="keyframe interval, also the unit --resume "
                       "continues from (default: about 2 seconds)")
    video.add_argument("--resume", action="store_true", help="continue an interrupted clip from the last complete "
                       "GOP written (kept in a .NAME.parts folder beside the output)")


IMAGE_FORMATS = ("image2", "_pipe")  # FFmpeg's demuxers of still images


def _probes_as_clip(path) -> bool:
    """A file of no known suffix that FFmpeg opens as a container with a video stream."""
    try:
        import av

        with av.open(str(path)) as container:
            return bool(container.streams.video) and not container.format.name.endswith(IMAGE_FORMATS)
    except Exception:  # not installed, not a container: the image reader will say what it is
        return False


def split_inputs(inputs) -> tuple[list[Path], list[Path]]:
    """(photos, clips): clips by their suffix, or, for a suffix neither images nor clips have, by
    what FFmpeg finds in the file."""
    from ..images import READABLE_SUFFIXES

    clips = [p for p in inputs if is_video(p) or (Path(p).suffix.lower() not in READABLE_SUFFIXES
                                                   and _probes_as_clip(p))]
    return [p for p in inputs if p not in clips], clips


def single_file_output(out: str, photos, clips) -> Path | None:
    """``-o clip.mkv``: the one clip's output file; None when ``-o`` is a folder."""
    path = Path(out)
    if path.suffix.lower() not in VIDEO_SUFFIXES or path.is_dir():
        return None
    if len(clips) != 1 or photos:
        raise OutputError(f"-o {out}: a video file name takes exactly one clip and no photo; give a folder")
    return path


VIDEO_MISSING = 'restoring clips needs PyAV, which is not installed: pip install -e ".[video]"'


def plan_clips(clips, out: str, inputs, force: bool):
    """(jobs, skipped, failures) of the clips, as outputs.plan_outputs does for photos; a
    UsageError when there are clips and PyAV is missing."""
    if clips:
        try:
            import av  # noqa: F401
        except ImportError:
            raise UsageError(VIDEO_MISSING) from None
    target = single_file_output(out, [], clips) if clips else None
    check_output_dir(target.parent if target else Path(out))
    jobs, skipped, failures = [], [], []
    for src in clips:
        dst = target or Path(out) / Path(src).name
        try:
            write = check_output(dst, inputs, force)
        except ReplacesInput:
            raise
        except OutputError as e:  # a folder in the way: this clip fails, the others run
            failures.append(f"{src}: {e}")
            continue
        if write:
            jobs.append((src, dst))
        else:
            skipped.append(dst)
    return jobs, skipped, failures


def model_key(args) -> str:
    """What restores the frames, for --resume's check: the model (a file with its size and time) and
    the options that change its output."""
    import os

    source = args.engine or args.onnx or args.weights or args.server
    try:
        st = os.stat(source)
        source = f"{os.path.abspath(source)}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:  # a server URL
        pass
    return "|".join(str(v) for v in (source, args.task, args.protocol, args.tile, args.max_memory, args.config))


def restore_clips(jobs, runner, args) -> tuple[int, list[str]]:
    """Restore each (src, dst); (clips done, failures). A clip with lost frames or cut short is
    written and counted as a failure (exit 1)."""
    import av

    from ..video import ClipResult, EncoderError, VideoError, VideoOptions, restore_clip

    options = VideoOptions(args.codec, args.crf, args.preset, args.gop, args.resume, args.quiet, model_key(args))
    done, failures = 0, []
    for src, dst in jobs:
        try:
            result: ClipResult = restore_clip(src, dst, runner, options)
        except (VideoError, EncoderError) as e:
            failures.append(str(e))
        except av.error.FFmpegError as e:
            failures.append(f"{src}: FFmpeg: {e}")
        else:
            done += 1
            print(describe(src, dst, result), file=sys.stderr if result.lost or result.stopped else sys.stdout)
            if result.lost:
                failures.append(f"{src}: {len(result.lost)} frame(s) did not decode and repeat the previous one, at "
                                + ", ".join(f"{t:.3f}s" for t in result.lost[:10] if t is not None)
                                + (" ..." if len(result.lost) > 10 else ""))
            if result.stopped:
                failures.append(f"{src}: {result.stopped} (truncated?); the output holds the frames read")
            continue
        print(f"ast-restore: failed: {failures[-1]}", file=sys.stderr)
    return done, failures


def describe(src, dst, result) -> str:
    resumed = f", resumed at frame {result.resumed_from}" if result.resumed_from else ""
    return (f"{src} -> {dst}: {result.frames} frame(s), {result.settings.describe()}{resumed}, "
            f"{result.wall:.1f} s")
