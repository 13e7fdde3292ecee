"""Video restoration numbers (issue 22): frames per second of the demo model through
``ast-restore``'s clip pipeline at 640x360 and 1280x720 with the share of each stage's busy time,
resident memory sampled over a long 720p clip, and flicker / PSNR on a generated rainy clip.

    python benchmarks/bench_video.py --onnx engines/derain/ast-derain.onnx   # default: exports the demo model

Clips are generated (tests/video_helpers.py: moving synthetic rain over a still scene). The memory
run uses a 3 x 3 convolution ONNX as a stand-in model, so a long clip fits in minutes on a CPU: it
measures the pipeline's own memory (decode, queues, encode), which must stay flat."""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from video_helpers import conv_onnx, make_clip, rainy_frames  # noqa: E402

from ast_deploy import Runner  # noqa: E402
from ast_deploy.video import VideoOptions, restore_clip  # noqa: E402
from ast_deploy.video.quality import video_quality  # noqa: E402


def export_demo(folder: Path) -> Path:
    import warnings

    import onnx
    import torch

    from ast_deploy.demo import build_demo_model

    path = folder / "demo.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(build_demo_model().eval(), (torch.rand(1, 3, 256, 256),), str(path), dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["restored"],
                          dynamic_axes={"image": axes, "restored": axes})
    model = onnx.load(str(path))
    for key, value in {"ast.size_multiple": "64", "ast.task": "derain"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def speed(onnx: Path, folder: Path, sizes, frames: int) -> list[dict]:
    runner = Runner(str(onnx), protocol="pad:64")
    rows = []
    for h, w in sizes:
        clip = folder / f"speed_{h}x{w}.mp4"
        make_clip(clip, frames=frames, size=(h, w), audio=True)
        result = restore_clip(clip, folder / f"out_{h}x{w}.mp4", runner, VideoOptions(quiet=True))
        busy = result.busy
        rows.append({"size": f"{w}x{h}", "frames": result.frames, "fps": result.frames / result.wall,
                     "wall_s": result.wall, **{k: busy.get(k, 0.0) for k in ("decode", "inference", "encode")}})
    return rows


def memory(folder: Path, seconds: int) -> dict:
    import psutil

    clip = folder / "long_720p.mp4"
    frames = 24 * seconds
    make_clip(clip, frames=frames, size=(720, 1280), audio=True, rain=False)
    runner = Runner(str(conv_onnx(str(folder))))
    samples, done = [], threading.Event()
    proc = psutil.Process()
    before = proc.memory_info().rss / 2 ** 20

    def sample():
        start = time.monotonic()
        while not done.is_set():
            samples.append((time.monotonic() - start, proc.memory_info().rss / 2 ** 20))
            time.sleep(0.25)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result = restore_clip(clip, folder / "long_out.mp4", runner, VideoOptions(quiet=True))
    done.set()
    thread.join()
    quarter = max(1, len(samples) // 4)
    return {"frames": result.frames, "seconds": seconds, "wall_s": result.wall, "rss_before_mb": before,
            "rss_first_quarter_mb": max(r for _, r in samples[:quarter]),
            "rss_last_quarter_mb": max(r for _, r in samples[-quarter:]), "rss_peak_mb": max(r for _, r in samples)}


def quality(onnx: Path, folder: Path, frames: int) -> dict:
    import av
    import numpy as np

    rainy, clean = rainy_frames(frames, 240, 320, seed=7)
    paths = {}
    for name, pictures in (("rainy", rainy), ("clean", clean)):
        paths[name] = folder / f"q_{name}.mkv"
        with av.open(str(paths[name]), "w") as out:
            s = out.add_stream("ffv1", rate=24)
            s.width, s.height, s.pix_fmt = 320, 240, "yuv444p"
            s.codec_context.colorspace, s.codec_context.color_range = 1, 1
            for i, f in enumerate(pictures):
                frame = av.VideoFrame.from_ndarray(np.rint(f * 65535).astype(np.uint16), format="rgb48le").reformat(
                    format="yuv444p", dst_colorspace="itu709", src_color_range=2, dst_color_range=1)
                frame.pts = i
                out.mux(s.encode(frame))
            out.mux(s.encode(None))
    restored = folder / "q_restored.mkv"
    restore_clip(paths["rainy"], restored, Runner(str(onnx), protocol="pad:64"), VideoOptions(codec="ffv1", quiet=True))
    return video_quality(restored, paths["clean"], paths["rainy"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", help="the demo model's ONNX (default: exported here)")
    p.add_argument("--frames", type=int, default=6, help="frames per speed clip (default 6)")
    p.add_argument("--memory-seconds", type=int, default=10, help="length of the 720p memory clip (default 10)")
    p.add_argument("--quality-frames", type=int, default=8)
    p.add_argument("--part", choices=("speed", "memory", "quality", "all"), default="all",
                   help="one measurement (memory is best alone: a fresh process's RSS)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        onnx = None
        if args.part in ("speed", "quality", "all"):
            onnx = Path(args.onnx) if args.onnx else export_demo(folder)
        if args.part in ("speed", "all"):
            print("| size | frames | frames/s | wall s | decode s | inference s | encode s | inference share |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
            for r in speed(onnx, folder, [(360, 640), (720, 1280)], args.frames):
                print(f"| {r['size']} | {r['frames']} | {r['fps']:.3f} | {r['wall_s']:.1f} | {r['decode']:.2f} | "
                      f"{r['inference']:.1f} | {r['encode']:.2f} | {r['inference'] / r['wall_s']:.0%} |")
        if args.part in ("memory", "all"):
            report_memory(memory(folder, args.memory_seconds))
        if args.part in ("quality", "all"):
            report_quality(quality(onnx, folder, args.quality_frames))


def report_memory(m: dict) -> None:
    print(f"\n720p memory, {m['seconds']} s clip ({m['frames']} frames, 3x3-conv stand-in model, {m['wall_s']:.0f} s): "
          f"RSS before {m['rss_before_mb']:.0f} MiB; max in the first quarter {m['rss_first_quarter_mb']:.0f} MiB, "
          f"last quarter {m['rss_last_quarter_mb']:.0f} MiB, peak {m['rss_peak_mb']:.0f} MiB")


def report_quality(q: dict) -> None:
    print(f"\nrainy 320x240 clip, {q['frames']} frames: flicker x255 restored {q['flicker_restored'] * 255:.2f}, "
          f"rainy {q['flicker_original'] * 255:.2f}, clean {q['flicker_reference'] * 255:.2f}; PSNR "
          f"{q['psnr_original']:.2f} -> {q['psnr_restored']:.2f} dB; SSIM {q['ssim_original']:.4f} -> "
          f"{q['ssim_restored']:.4f}")


if __name__ == "__main__":
    main()
