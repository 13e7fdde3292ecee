"""ast-restore on clips (ast_deploy.video): timing, colour, other streams, equality with the
Runner frame by frame, lost frames, truncated files, Ctrl-C and --resume, inputs that are no clip.
Every clip is generated here (tests/video_helpers.py)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from video_helpers import conv_onnx, make_clip, read_clip, to_rgb  # noqa: E402

from ast_deploy.cli import restore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="module")
def model(folder):
    return str(conv_onnx(str(folder)))


@pytest.fixture(scope="module")
def clip_h264(folder):
    """24 frames of moving rain, BT.709 limited range, VFR, audio, rotated 90 degrees, in MP4."""
    path = folder / "rain.mp4"
    make_clip(path, frames=24, vfr=True, rotation=90, audio=True)
    return path


@pytest.fixture(scope="module")
def clip_444(folder):
    """8 frames, lossless FFV1 4:4:4, every frame a keyframe, with audio, in Matroska."""
    path = folder / "rain444.mkv"
    make_clip(path, frames=8, codec="ffv1", pix_fmt="yuv444p", audio=True, options={"g": "1"})
    return path


def _restore(*args) -> int:
    return restore.main([str(a) for a in args] + ["-q"])


def test_clip_keeps_timing_colour_audio_and_rotation(folder, model, clip_h264):
    out = folder / "out_keep"
    assert _restore(clip_h264, "-o", out, "--onnx", model, "--gop", "10") == 0
    src, dst = read_clip(clip_h264), read_clip(out / "rain.mp4")
    assert len(dst["frames"]) == len(src["frames"]) == 24
    assert dst["times"] == src["times"]  # VFR: every timestamp, exactly
    for key in ("time_base", "rate", "width", "height", "sar", "pix_fmt", "codec", "colour", "streams"):
        assert dst[key] == src[key], key
    assert src["colour"] == (1, 1, 1, 1) and dst["rotation"] == src["rotation"] == 90
    assert dst["audio"] and dst["audio"] == src["audio"]  # audio packets copied untouched
    assert sorted(p.name for p in out.iterdir()) == ["rain.mp4"]  # no work folder, no temporary file


def test_ten_bit_clip_is_written_ten_bit_to_a_named_file(folder, model):
    src = folder / "ten.mkv"
    make_clip(src, frames=6, pix_fmt="yuv420p10le", audio=False)
    dst = folder / "ten_out" / "restored.mkv"
    assert _restore(src, "-o", dst, "--onnx", model) == 0
    a, b = read_clip(src), read_clip(dst)
    assert b["pix_fmt"] == "yuv420p10le" and b["times"] == a["times"] and b["rate"] == a["rate"]
    # full precision: the restored luma keeps values that are not multiples of 4 (8-bit would)
    luma = np.frombuffer(b["frames"][2].planes[0], np.uint16)
    assert np.count_nonzero(luma % 4) > luma.size // 4


def test_restored_frames_equal_the_runner_on_each_decoded_frame(folder, model, clip_444):
    import onnxruntime as ort

    out = folder / "out_equal"
    assert _restore(clip_444, "-o", out, "--onnx", model, "--codec", "ffv1") == 0
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    src, dst = read_clip(clip_444), read_clip(out / "rain444.mkv")
    assert len(dst["frames"]) == len(src["frames"]) == 8 and dst["audio"] == src["audio"]
    for a, b in zip(src["frames"], dst["frames"]):
        want = np.clip(session.run(None, {"image": to_rgb(a)[None]})[0][0], 0, 1)
        assert np.abs(to_rgb(b) - want).max() < 2.5 / 255  # 8-bit 4:4:4 code rounding only


@pytest.mark.slow  # the demo AST on the CPU: about 1 s a frame on a quiet machine, 10 s under load
def test_demo_ast_restores_a_clip_like_the_runner(folder):
    from ast_deploy import Runner
    from ast_deploy.demo import demo_weights

    src = folder / "demo.mkv"
    make_clip(src, frames=3, codec="ffv1", pix_fmt="yuv444p", audio=False, seed=3)
    out = folder / "out_demo"
    assert _restore(src, "-o", out, "--weights", demo_weights(), "--protocol", "pad:64", "--codec", "ffv1") == 0
    runner = Runner(str(demo_weights()), protocol="pad:64")
    for a, b in zip(read_clip(src)["frames"], read_clip(out / "demo.mkv")["frames"]):
        want = np.clip(runner.run_nchw(to_rgb(a)[None])[0], 0, 1)
        got = to_rgb(b)
        assert np.abs(got - want).max() < 3 / 255
        assert np.abs(got - to_rgb(a)).mean() > 1 / 255  # the model changed the frame


def _bt709_planes(rgb: np.ndarray, depth: int):
    """Y'CbCr code values of [3, H, W] RGB by BT.709's closed form (limited range, 4:4:4)."""
    m = np.array([[0.2126, 0.7152, 0.0722], [-0.2126 / 1.8556, -0.7152 / 1.8556, 0.5],
                  [0.5, -0.7152 / 1.5748, -0.0722 / 1.5748]])
    ycc = np.einsum("ij,jhw->ihw", m, rgb.astype(np.float64))
    unit = 2 ** (depth - 8)
    return [np.rint(ycc[0] * 219 * unit + 16 * unit), np.rint(ycc[1] * 224 * unit + 128 * unit),
            np.rint(ycc[2] * 224 * unit + 128 * unit)], m


def test_colour_conversion_uses_the_streams_matrix():
    """Frames made from RGB with BT.709's closed form are read back through its inverse matrix
    (a 10-bit 4:4:4 frame: to within the code rounding); reading them as BT.601 is far off;
    FFmpeg's swscale (less exact: white at 943 of 940) agrees loosely."""
    from ast_deploy.video.colour import ColourSpec, frame_to_rgb
    from video_helpers import scene

    rgb = scene(120, 160).transpose(2, 0, 1)
    planes, m = _bt709_planes(rgb, 10)
    frame = av.VideoFrame(160, 120, "yuv444p10le")
    for plane, values in zip(frame.planes, planes):
        view = np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)
        view[:, :160] = values
    unit = 4
    ycc = np.stack([(planes[0] - 16 * unit) / (219 * unit), (planes[1] - 128 * unit) / (224 * unit),
                    (planes[2] - 128 * unit) / (224 * unit)])
    want = np.einsum("ij,jhw->ihw", np.linalg.inv(m), ycc)
    mine = frame_to_rgb(frame, ColourSpec(matrix=1, full_range=False))
    assert np.abs(mine - want).max() < 1e-5
    assert np.abs(mine - rgb).max() < 0.6 / 255  # the 10-bit round trip
    assert np.abs(frame_to_rgb(frame, ColourSpec(matrix=6, full_range=False)) - rgb).max() > 8 / 255
    assert np.abs(mine - to_rgb(frame)).max() < 1.5 / 255


def _damaged(src: Path, dst: Path, which: set) -> Path:
    """A copy of ``src`` whose video packets ``which`` are scrambled (same size and timestamps)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        v = inp.streams.video[0]
        ov = out.add_stream_from_template(v)
        for k, p in enumerate(q for q in inp.demux(v) if q.size):
            if k in which:
                data = bytearray(bytes(p))
                data[len(data) // 4:] = bytes((b * 7 + 13) % 256 for b in data[len(data) // 4:])
                q = av.Packet(bytes(data))
                q.pts, q.dts, q.duration, q.time_base = p.pts, p.dts, p.duration, p.time_base
                p = q
            p.stream = ov
            out.mux(p)
    return dst


def test_a_corrupt_packet_repeats_the_previous_frame(folder, model, clip_444, capsys):
    bad = _damaged(clip_444, folder / "bad.mkv", {0, 5})
    out = folder / "out_bad"
    assert _restore(bad, "-o", out, "--onnx", model, "--codec", "ffv1") == 1
    err = capsys.readouterr().err
    assert "2 frame(s) did not decode" in err and "0.000s, 0.208s" in err  # frames 0 and 5 at 24 fps, by time
    src, dst = read_clip(clip_444), read_clip(out / "bad.mkv")
    assert dst["times"] == src["times"]
    assert np.array_equal(to_rgb(dst["frames"][5]), to_rgb(dst["frames"][4]))
    assert np.array_equal(to_rgb(dst["frames"][0]), to_rgb(dst["frames"][1]))  # none before: the next one


def test_a_truncated_clip_is_reported_not_crashed(folder, model, clip_444, capsys):
    data = clip_444.read_bytes()
    cut = folder / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    out = folder / "out_cut"
    code = _restore(cut, "-o", out, "--onnx", model, "--codec", "ffv1")
    err = capsys.readouterr().err
    assert code == 1 and "internal error" not in err and "cut.mkv" in err
    if (out / "cut.mkv").exists():  # what could be read is written whole
        assert 0 < len(read_clip(out / "cut.mkv")["frames"]) < 8


def test_inputs_that_are_no_clip_fail_one_line_each_the_others_go_on(folder, model, clip_444, capsys):
    from PIL import Image

    src = folder / "mixed"
    src.mkdir()
    (src / "notes.mp4").write_text("not a video\n")
    with av.open(str(src / "sound.mkv"), "w") as out:  # audio only
        stream = out.add_stream("flac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    (src / "clip.mkv").write_bytes(clip_444.read_bytes())
    (src / "recording.dat").write_bytes(clip_444.read_bytes())  # no known suffix: FFmpeg finds a clip
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(src / "photo.png")
    out = folder / "out_mixed"
    # a folder takes files by suffix; a file given by name is probed
    assert _restore(src, src / "recording.dat", "-o", out, "--onnx", model, "--codec", "ffv1") == 1
    err = capsys.readouterr().err
    assert "notes.mp4: not a video FFmpeg can read (it looks like a text file)" in err
    assert "sound.mkv: has no video stream (it holds audio)" in err
    assert "recording.dat: FFmpeg writes no container for the suffix '.dat'" in err  # taken as a clip
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["clip.mkv", "photo.png"]


def _run_until_a_segment(args, work: Path, env):
    proc = subprocess.Popen([sys.executable, "-m", "ast_deploy.cli.restore", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal,
    # also when this test run was started in the background (``cmd &`` ignores SIGINT, children inherit it)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (work / "manifest.json").exists():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_ctrl_c_leaves_no_output_and_resume_finishes_it_identically(folder, capsys):
    src = folder / "long.mkv"
    make_clip(src, frames=36, audio=True, rain=False)
    # a model slow enough that 30 frames are left to run when the first segment is written, on a
    # quiet machine too (about 15 ms a frame there), so SIGINT always lands mid-clip
    slow = conv_onnx(str(folder), depth=12)
    out = folder / "out_resume"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    args = [src, "-o", out, "--onnx", slow, "--gop", "6"]
    code, _, err = _run_until_a_segment(args, out / ".long.mkv.parts", env)
    assert code == 130, err
    assert "interrupted" in err and not (out / "long.mkv").exists()
    assert not [p for p in out.iterdir() if not p.name.startswith(".long.mkv.parts")]  # no partial output
    assert not list((out / ".long.mkv.parts").glob("*.partial"))
    assert _restore(*args, "--resume") == 0
    resumed_at = re.search(r"resumed at frame (\d+)", capsys.readouterr().out)
    assert resumed_at and int(resumed_at.group(1)) in range(6, 36, 6)  # whole segments kept, not restored again
    resumed = read_clip(out / "long.mkv")
    assert not (out / ".long.mkv.parts").exists()
    whole = folder / "out_whole"
    assert _restore(*args[:2], whole, *args[3:]) == 0
    reference = read_clip(whole / "long.mkv")
    assert resumed["times"] == reference["times"] == read_clip(src)["times"]
    assert resumed["audio"] == reference["audio"]
    for a, b in zip(resumed["frames"], reference["frames"]):
        assert np.array_equal(to_rgb(a), to_rgb(b))


def test_resume_without_a_work_folder_starts_over(folder, model, capsys):
    src = folder / "short.mkv"
    make_clip(src, frames=12, audio=False, rain=False)
    out = folder / "out_short"
    assert _restore(src, "-o", out, "--onnx", model, "--gop", "4") == 0
    from ast_deploy.video.segments import work_folder

    assert _restore(src, "-o", out / "again.mkv", "--onnx", model, "--gop", "4", "--resume") == 0
    assert "--resume: starting from the beginning" in capsys.readouterr().err
    assert not work_folder(out / "again.mkv").exists()


def test_a_container_that_cannot_hold_the_codec_fails_before_any_frame(folder, model, clip_444, capsys):
    out = folder / "out_webm"
    assert _restore(clip_444, "-o", out / "x.webm", "--onnx", model, "--codec", "libx264") == 1
    assert "a .webm file cannot hold h264 video (libx264)" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # no work folder, no probe file


def _write_rgb_clip(path: Path, frames) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv444p"
        stream.codec_context.colorspace, stream.codec_context.color_range = 1, 2  # BT.709, full range
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv444p", dst_colorspace="itu709", src_color_range=2, dst_color_range=2)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_bench_video_flicker_and_psnr_against_closed_forms(folder, capsys):
    """A still grey reference; a 'restored' clip whose left half alternates between two greys 16
    levels apart: flicker 8/255 on average over the frame (half of it changes by 16), the
    reference's 0; PSNR from the mean squared error of that half."""
    import json

    from ast_deploy.cli import bench

    grey = np.full((32, 48, 3), 128, np.uint8)
    flicker = [grey.copy() for _ in range(6)]
    for i in range(1, 6, 2):
        flicker[i][:, :24] = 144
    ref = _write_rgb_clip(folder / "grey.mkv", [grey] * 6)
    test = _write_rgb_clip(folder / "flicker.mkv", flicker)
    report = folder / "quality.json"
    assert bench.main(["--video", str(test), "--reference", str(ref), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert abs(result["flicker_restored"] * 255 - 8) < 0.2 and result["flicker_reference"] * 255 < 0.2
    mse = 3 / 6 * 0.5 * (16 / 255) ** 2  # three frames of six, half of each, 16 levels off
    assert abs(result["psnr_restored"] - 10 * np.log10(1 / mse)) < 0.2
    assert "flicker x255" in capsys.readouterr().out


def test_progress_in_a_log_is_a_few_lines_with_rate_and_time_left(folder, model, clip_h264, capsys):
    out = folder / "out_progress"
    assert restore.main([str(clip_h264), "-o", str(out), "--onnx", model]) == 0  # stderr is not a terminal here
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("restoring rain.mp4")]
    assert 2 <= len(lines) <= 13  # every other frame of 24 at most (about 20 lines per clip), not one per frame
    assert lines[-1].startswith("restoring rain.mp4: 24/24 frame(s), ") and " frame/s" in lines[-1]
    assert any(line.endswith("s left") for line in lines[:-1])


def test_progress_thins_log_lines_to_about_the_number_asked():
    import io

    from ast_deploy.console import Progress

    log = io.StringIO()  # not a terminal: plain lines
    with Progress(total=100, desc="restoring x.mp4", unit="frame", stream=log, lines=10) as bar:
        for _ in range(100):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("restoring x.mp4: 10/100 frame(s), ")
    assert lines[-1].startswith("restoring x.mp4: 100/100 frame(s), ") and "left" not in lines[-1]


def test_without_pyav_clips_are_a_usage_error_that_says_what_to_install(folder, model, clip_444):
    code = (f"import sys; sys.modules['av'] = None\n"
            f"from ast_deploy.cli import restore\n"
            f"sys.exit(restore.main({[str(clip_444), '-o', str(folder / 'out_noav'), '--onnx', model]!r}))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert 'needs PyAV, which is not installed: pip install -e ".[video]"' in done.stderr
    assert "Traceback" not in done.stderr
