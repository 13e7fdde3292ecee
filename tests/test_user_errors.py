"""Ordinary mistakes get a clear answer (issue 11): through the real CLIs in subprocesses (exit code,
a message that names the problem, no traceback, the user's files byte-for-byte unchanged) and the API.

Most cases use ONNX models made here with onnx.helper (Identity, Neg): ONNX Runtime runs them in
microseconds, so what is tested is the tools' handling, not the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from conftest import REPO, TINY_CONFIG

ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_tool(tool: str, *args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", f"ast_deploy.cli.{tool}", *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=kwargs.pop("cwd", None), timeout=timeout, **kwargs)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_onnx(path: Path, op: str = "Identity", input_name: str = "image", metadata: dict | None = None,
              extra_nodes=(), initializers=()) -> Path:
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["b", 3, "h", "w"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 3, "h", "w"])
    nodes = [*extra_nodes, helper.make_node(op, [input_name], ["out"])] if op else list(extra_nodes)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, str(path))
    return path


def ast_like(tmp_path: Path, task: str | None = None, name="model.onnx") -> Path:
    """An Identity model with the metadata ast-export writes (size multiple 8)."""
    return tiny_onnx(tmp_path / name, metadata={"ast.size_multiple": 8, **({"ast.task": task} if task else {})})


def photos(folder: Path, count=3, size=(24, 40), seed=0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"photo{i}.png")
    return folder


# ------------------------------------------------------------------ corrupt and foreign ONNX

@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_corrupt_onnx_is_a_usage_error_for_restore_check_bench(tmp_path, damage):
    good = ast_like(tmp_path).read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes({"truncated": good[: len(good) // 2], "random": np.random.default_rng(0).bytes(2000),
                     "empty": b""}[damage])
    src = photos(tmp_path / "in", count=1)
    before = digest(tmp_path)
    for tool, args in [("restore", [src, "-o", tmp_path / "out", "--onnx", bad]),
                       ("check", [bad, bad, "--sizes", "16x16"]), ("bench", [bad, "--runs", "1"])]:
        proc = run_tool(tool, *args)
        assert proc.returncode == 2, (tool, proc.stderr)
        assert "bad.onnx: not a usable ONNX model" in proc.stderr
        assert ("empty" if damage == "empty" else "truncated or corrupt") in proc.stderr
    assert digest(tmp_path) == before and not (tmp_path / "out").exists()


def neg_model(tmp_path: Path) -> Path:
    """A one-node model that is no AST export: no metadata at all, input named ``input``."""
    return tiny_onnx(tmp_path / "neg.onnx", op="Neg", input_name="input")


def test_foreign_onnx_is_refused_until_told_its_size_multiple_and_protocol(tmp_path):
    from ast_deploy import Runner
    from ast_deploy.backends import BackendError, ShapeError

    model, src, out = neg_model(tmp_path), photos(tmp_path / "in", count=1), tmp_path / "out"
    proc = run_tool("restore", src, "-o", out, "--onnx", model)
    assert proc.returncode == 2 and "has no ast.size_multiple metadata" in proc.stderr
    assert "--size-multiple" in proc.stderr and not out.exists()
    proc = run_tool("restore", src, "-o", out, "--onnx", model, "--size-multiple", "8")
    assert proc.returncode == 2 and "needs its protocol: give --task or --protocol" in proc.stderr
    proc = run_tool("restore", src, "-o", out, "--onnx", model, "--size-multiple", "8", "--protocol", "pad:8")
    assert proc.returncode == 0, proc.stderr
    assert (out / "photo0.png").is_file()
    # The API says the same; a size message tells what is known (the multiple given), nothing invented.
    with pytest.raises(BackendError, match="no ast.size_multiple metadata"):
        Runner(model)
    runner = Runner(model, size_multiple=8, protocol="pad:8")
    x = np.random.default_rng(0).random((1, 3, 16, 24), dtype=np.float32)
    np.testing.assert_array_equal(runner.run_nchw(x), -x)
    with pytest.raises(ShapeError) as e:
        runner.backend.infer(np.zeros((1, 3, 12, 16), np.float32))
    assert "multiples of 8 (the size multiple given" in str(e.value) and "128" not in str(e.value)


# ------------------------------------------------------------------ device and task

def test_unknown_device_is_a_usage_error(tmp_path):
    from ast_deploy import Runner

    src, model = photos(tmp_path / "in", count=1), ast_like(tmp_path)
    before = digest(tmp_path)
    proc = run_tool("restore", src, "-o", tmp_path / "out", "--onnx", model, "--device", "tpu")
    assert proc.returncode == 2 and "unknown device 'tpu'" in proc.stderr and "cuda:N" in proc.stderr
    assert digest(tmp_path) == before
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        Runner(model, device="tpu")


def test_onnx_of_another_task_needs_force(tmp_path):
    from ast_deploy import Runner

    src, model, out = photos(tmp_path / "in", count=1, size=(128, 128)), ast_like(tmp_path, task="dehaze"), tmp_path / "out"
    proc = run_tool("restore", src, "-o", out, "--onnx", model, "--task", "derain")
    assert proc.returncode == 2 and "exported for task 'dehaze', not 'derain'" in proc.stderr
    assert not out.exists()
    proc = run_tool("restore", src, "-o", out, "--onnx", model, "--task", "derain", "--force")
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(ValueError, match="exported for task 'dehaze'"):
        Runner(model, task="derain")
    assert str(Runner(model).protocol) == str(Runner(model, task="dehaze").protocol)  # the metadata's task


# ------------------------------------------------------------------ outputs

def test_output_that_would_replace_an_input_is_refused_whatever_the_flags(tmp_path):
    from ast_deploy.outputs import OutputError, check_output, plan_outputs

    folder, model = photos(tmp_path / "photos"), ast_like(tmp_path)
    (tmp_path / "link").symlink_to(folder)
    before = digest(folder)
    for out in (folder, tmp_path / "link", Path(os.path.relpath(folder))):
        proc = run_tool("restore", folder, "-o", out, "--onnx", model, "--force")
        assert proc.returncode == 2, proc.stderr
        assert "refusing to write over the inputs" in proc.stderr and "photo0.png" in proc.stderr
        assert digest(folder) == before
    # A hard link to an input is the input too.
    os.link(folder / "photo1.png", tmp_path / "hard.png")
    with pytest.raises(OutputError, match="is one of the inputs"):
        check_output(tmp_path / "hard.png", [folder / "photo1.png"], force=True)
    with pytest.raises(OutputError):
        plan_outputs(sorted(folder.iterdir()), folder, force=True)
    assert check_output(tmp_path / "new.png", [folder / "photo1.png"]) is True
    assert check_output(tmp_path / "hard.png", [folder / "photo0.png"]) is False  # exists, no force


def test_output_folder_that_cannot_be_written_is_found_before_the_model_loads(tmp_path):
    src = photos(tmp_path / "in", count=1)
    (tmp_path / "a_file").write_text("keep me")
    broken_weights = tmp_path / "weights.pth"
    broken_weights.write_text("<!DOCTYPE html><html>not weights</html>")
    before = digest(tmp_path)
    for out, message in [(tmp_path / "a_file", "is an existing file"), (tmp_path / "a_file" / "sub", "is a file")]:
        # The weights are broken too: the message is about -o, so -o was checked first.
        proc = run_tool("restore", src, "-o", out, "--weights", broken_weights, "--config", json.dumps(TINY_CONFIG))
        assert proc.returncode == 2 and message in proc.stderr and "weights" not in proc.stderr, proc.stderr
    assert digest(tmp_path) == before


# ------------------------------------------------------------------ signals

def default_sigint():
    """In the child, SIGINT as a terminal's Ctrl-C finds it: a test run started in the background
    (``cmd &``) ignores SIGINT, its children inherit that, and Python then installs no handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_and_terminate_leave_no_partial_files(tmp_path, sig, code):
    from runtime_helpers import checkpoint

    src = photos(tmp_path / "in", count=8, size=(384, 384))
    out = tmp_path / "out"
    before = digest(src)
    log = open(tmp_path / "stderr.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "ast_deploy.cli.restore", str(src), "-o", str(out),
                             "--weights", str(checkpoint()), "--config", json.dumps(TINY_CONFIG)],
                            stdout=subprocess.DEVNULL, stderr=log, env=ENV, preexec_fn=default_sigint)
    deadline = time.monotonic() + 240
    try:  # the first progress line: one image is written, the next is being restored
        while "restoring: 1/8" not in (tmp_path / "stderr.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.log").read_text()
            time.sleep(0.05)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == code
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = (tmp_path / "stderr.log").read_text()
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == ("ast-restore: interrupted; " if code == 130 else "ast-restore: terminated; ") \
        + "finished outputs are kept, none is half-written"
    written = sorted(p.name for p in out.iterdir())
    assert written and all(p.endswith(".png") and not p.startswith(".") for p in written), written  # no .tmp
    assert len(written) < 8
    for name in written:  # each output is whole
        assert Image.open(out / name).size == (384, 384)
    assert digest(src) == before


# ------------------------------------------------------------------ warnings and progress

def test_library_warnings_are_not_shown(tmp_path):
    # ONNX Runtime logs "Could not find a CPU kernel and hence can't constant fold Sqrt node" for FP16
    # constants on the CPU (as in our FP16 exports); the user can do nothing about it.
    fp16 = numpy_helper.from_array(np.array([4.0], np.float16), "c")
    zero = numpy_helper.from_array(np.array([0.0], np.float32), "zero")
    nodes = [helper.make_node("Sqrt", ["c"], ["s"]), helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["s32", "zero"], ["z"]), helper.make_node("Add", ["image", "z"], ["out"])]
    model = tiny_onnx(tmp_path / "fp16.onnx", op=None, extra_nodes=nodes, initializers=[fp16, zero],
                      metadata={"ast.size_multiple": 8})
    raw = subprocess.run([sys.executable, "-c", f"import onnxruntime as o; o.InferenceSession({str(model)!r}, "
                          "providers=['CPUExecutionProvider'])"], capture_output=True, text=True)
    assert "constant fold Sqrt" in raw.stderr  # what users saw
    proc = run_tool("restore", photos(tmp_path / "in", count=1), "-o", tmp_path / "out", "--onnx", model)
    assert proc.returncode == 0 and "onnxruntime" not in proc.stderr and "Sqrt" not in proc.stderr, proc.stderr
    # torch's UserWarnings inside a tool are silenced; the package's own notes are one line each.
    code = ("import sys, warnings, torch\nfrom ast_deploy.cli.common import tool_main\nfrom ast_deploy.console import note\n"
            "@tool_main('ast-x')\ndef main(argv=None):\n    torch.meshgrid(torch.zeros(2), torch.zeros(2))\n"
            "    note('this is ours')\n    return 0\nsys.exit(main())\n")
    raw = subprocess.run([sys.executable, "-W", "default", "-c", code.replace("@tool_main('ast-x')\n", "")],
                         capture_output=True, text=True, env=ENV)
    assert "UserWarning" in raw.stderr and "meshgrid" in raw.stderr  # torch does warn here
    wrapped = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, env=ENV)
    assert wrapped.returncode == 0 and wrapped.stderr == "ast-x: note: this is ours\n"


def test_progress_in_a_log_is_plain_lines_and_quiet_is_silent(tmp_path):
    src, model = photos(tmp_path / "in", count=3), ast_like(tmp_path)
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "ast_deploy.cli.restore", str(src), "-o", str(tmp_path / "o1"),
                               "--onnx", str(model)], stderr=log, stdout=subprocess.PIPE, text=True, env=ENV)
    text = (tmp_path / "log").read_text()
    assert proc.returncode == 0 and "\r" not in text and "\x1b" not in text
    assert text.splitlines() == [f"restoring: {i}/3 photo{i - 1}.png" for i in (1, 2, 3)]
    proc = run_tool("restore", src, "-o", tmp_path / "o2", "--onnx", model, "--quiet")
    assert proc.returncode == 0 and proc.stderr == ""


def test_version_on_every_console_script():
    from ast_deploy.cli.common import tool_version

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"ast-export", "ast-build", "ast-restore", "ast-check", "ast-bench"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        proc = subprocess.run([sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}(['--version']))"],
                              capture_output=True, text=True, env=ENV, timeout=120)
        assert proc.returncode == 0, (name, proc.stderr)
        assert proc.stdout.strip() == f"{name} (ast-deploy) {tool_version()}", name


# ------------------------------------------------------------------ input values and image modes

def test_non_finite_input_is_refused_saying_where(tmp_path):
    from ast_deploy import Runner

    runner = Runner(ast_like(tmp_path))
    x = np.zeros((2, 3, 16, 16), np.float32)
    x[1, 2, 5, 7], x[1, 2, 9, 9] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\).*first is nan at \[batch=1, channel=2, y=5, x=7\]"):
        runner(x)
    with pytest.raises(ValueError, match=r"channel=0, y=0, x=3"):
        runner(np.pad(np.full((3, 1, 4), np.inf, np.float32), ((0, 0), (0, 0), (3, 0)))[None][0])


EIGHT_BIT_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"]
SIXTEEN_BIT_MODES = ["I;16", "I;16L", "I;16B", "I;16N", "I"]


def test_every_pil_mode_works_like_its_8_bit_rgb_twin_or_is_refused_by_name(tmp_path):
    import warnings

    from ast_deploy import Runner
    from ast_deploy.images import ImageError

    runner = Runner(ast_like(tmp_path))  # Identity: the result is the picture the Runner read
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
    gray = np.asarray(rgb.convert("L"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mode in EIGHT_BIT_MODES:
            image = rgb.convert(mode)
            # Its 8-bit RGB twin is Pillow's own conversion (alpha is opaque here, so dropping it is exact).
            twin = np.asarray((image.convert("LA") if mode == "La" else image).convert("RGB"), np.int16)
            out = np.asarray(runner(image), np.int16)
            assert out.shape == (16, 24, 3) and np.abs(out - twin).max() == 0, mode
            if mode not in ("1", "L", "LA", "La", "P", "PA"):  # colour modes keep the colours
                # Pillow's round trips through LAB / HSV / YCbCr lose a few levels (LAB more for random colours
                # outside its gamut handling); the picture is the same on average.
                error = np.abs(out - np.asarray(rgb, np.int16))
                assert error.mean() <= 1.5 and error.max() <= {"LAB": 32, "HSV": 6, "YCbCr": 3}.get(mode, 1), mode
        # 16-bit grayscale: the 8-bit gray twin scaled by 257, read at full precision (not near-white).
        for mode in SIXTEEN_BIT_MODES:
            wide = gray.astype(np.uint16) * 257
            layout = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "=i4"}[mode]
            image = Image.frombytes(mode, (24, 16), wide.astype(layout).tobytes())
            assert image.mode == mode
            out = np.asarray(runner(image), np.int16)
            np.testing.assert_allclose(out, np.repeat(gray[..., None], 3, -1), atol=1, err_msg=mode)
        for mode, message in [("F", "mode F"), ("I", "mode I .*0..65535")]:
            image = rgb.convert("L").convert(mode)
            if mode == "I":
                image = Image.fromarray(np.full((16, 24), 70000, np.int32))
            with pytest.raises(ImageError, match=message):
                runner(image)


def test_sixteen_bit_gray_through_the_real_model_matches_its_rgb_twin():
    import torch

    from ast_deploy import Runner
    from runtime_helpers import image_model

    runner = Runner(image_model(), protocol="pad:128")
    gray = np.random.default_rng(1).integers(0, 256, (64, 96), dtype=np.uint8)
    twin = np.asarray(runner(Image.fromarray(gray).convert("RGB")), np.int16)
    for image in (Image.fromarray(gray.astype(np.uint16) * 257), Image.fromarray((gray.astype(np.int32) * 257))):
        out = np.asarray(runner(image), np.int16)
        assert np.abs(out - twin).max() <= 1, image.mode  # ~1/255 relative
        assert out.mean() < 250
    del torch


def test_cmyk_is_converted_with_one_note_by_cli_and_api(tmp_path):
    from ast_deploy import Runner

    folder = tmp_path / "in"
    folder.mkdir()
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    rgb.convert("CMYK").save(folder / "print.jpg", quality=95)
    model = ast_like(tmp_path)
    proc = run_tool("restore", folder, "-o", tmp_path / "out", "--onnx", model, "--quiet")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "CMYK" in line]
    assert notes == [f"ast-restore: note: {folder / 'print.jpg'}: CMYK converted to RGB without a colour profile "
                     "(colours may differ from a colour-managed viewer's)"]
    from_file = np.asarray(Image.open(tmp_path / "out" / "print.png"))
    with pytest.warns(UserWarning, match="CMYK converted to RGB without a colour profile"):
        from_api = np.asarray(Runner(model)(Image.open(folder / "print.jpg")))
    np.testing.assert_array_equal(from_file, from_api)


# ------------------------------------------------------------------ checkpoints that are not checkpoints

def test_a_file_that_is_no_checkpoint_says_what_it_looks_like(tmp_path):
    src = photos(tmp_path / "in", count=1)
    files = {"page.pth": ("<!DOCTYPE html>\n<html><body>Sign in</body></html>".encode(), "looks like an HTML page"),
             "random.pth": (np.random.default_rng(0).bytes(4096), "neither PyTorch's zip format nor a pickle"),
             "empty.pth": (b"", "empty"), "photo.pth": ((src / "photo0.png").read_bytes(), "looks like a PNG image")}
    Image.open(src / "photo0.png").save(tmp_path / "jpeg.pth", format="JPEG")
    files["jpeg.pth"] = ((tmp_path / "jpeg.pth").read_bytes(), "looks like a JPEG image")
    for name, (data, message) in files.items():
        (tmp_path / name).write_bytes(data)
    before = digest(tmp_path)
    for name, (_, message) in files.items():
        proc = run_tool("restore", src, "-o", tmp_path / "out", "--weights", tmp_path / name,
                        "--config", json.dumps(TINY_CONFIG))
        assert proc.returncode == 2 and message in proc.stderr, (name, proc.stderr)
        assert "weights_only" not in proc.stderr
    assert digest(tmp_path) == before


# ------------------------------------------------------------------ ast-export's arguments

def test_export_bad_shape_and_opset_are_usage_errors_with_the_supported_range(tmp_path):
    from ast_deploy.opsets import MAX_OPSET, MIN_OPSET

    for args, message in [(["--shape", "0x0"], "bad size '0x0': write HxW with positive integers"),
                          (["--shape", "512"], "bad size '512'"),
                          (["--opset", "99"], f"opset '99' is not supported: use {MIN_OPSET} to {MAX_OPSET}"),
                          (["--opset", "16"], f"use {MIN_OPSET} to {MAX_OPSET}")]:
        proc = run_tool("export", "--task", "derain", "--random-init", "--out", tmp_path / "out", *args, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "out").exists()
    helptext = run_tool("export", "--help").stdout
    assert f"ONNX opset, {MIN_OPSET} to {MAX_OPSET}" in " ".join(helptext.split())


def test_export_int8_with_unreadable_calibration_images_fails_before_any_work(tmp_path):
    calib = photos(tmp_path / "calib", count=2, size=(64, 64))
    (calib / "broken.png").write_bytes((calib / "photo0.png").read_bytes()[:100])
    (calib / "page.jpg").write_text("<html>not an image</html>")
    before = digest(tmp_path)
    started = time.monotonic()
    proc = run_tool("export", "--task", "derain", "--random-init", "--arch-config", tmp_path / "none.json",
                    "--int8", "--calib", calib, "--out", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    assert "2 of the 4 calibration images cannot be read" in proc.stderr
    assert "broken.png" in proc.stderr and "page.jpg" in proc.stderr and "photo0.png" not in proc.stderr
    assert not (tmp_path / "out").exists() and digest(tmp_path) == before
    assert time.monotonic() - started < 60  # nothing was exported (the missing --arch-config was never read)


# ------------------------------------------------------------------ the square-pad protocol's left edge

def test_square_pad_dark_left_edge_is_the_official_protocols(parity_cases, parity_model):
    """The dark line on the left of square-pad outputs comes from the official protocol's zero padding:
    ours reproduces the official outputs (spad0 fixture), and on the trained demo model the line is there
    with square-pad, absent with the same pixels' real surroundings and with reflect padding."""
    import torch
    from skimage import data

    from ast_deploy.demo import DEMO_CONFIG, demo_weights
    from ast_deploy.model import AST, load_checkpoint
    from ast_deploy.protocols import parse_protocol

    def run_with(model):
        return lambda b: model(torch.from_numpy(np.ascontiguousarray(b))).numpy()

    x = parity_cases["spad0_in"].astype(np.float32) / 255
    with torch.no_grad():
        ours = parse_protocol("square-pad:128").run(x, run_with(parity_model))
        assert np.abs(ours - parity_cases["spad0_out"]).max() < 1e-5
        demo = load_checkpoint(AST(**DEMO_CONFIG), demo_weights("derain")).eval()
        full = (data.astronaut().astype(np.float32) / 255).transpose(2, 0, 1)[None]
        crop = full[:, :, 100:300, 100:400]  # 200 x 300: 42 zero columns on each side in the square
        outputs = {"square-pad": parse_protocol("square-pad:128").run(crop, run_with(demo)),
                   "pad": parse_protocol("pad:128").run(crop, run_with(demo)),
                   "context": run_with(demo)(full)[:, :, 100:300, 100:400]}
    first_column = {k: float((v - crop)[..., 0].mean()) for k, v in outputs.items()}
    last_column = {k: float((v - crop)[..., -1].mean()) for k, v in outputs.items()}
    assert first_column["square-pad"] < first_column["context"] - 0.02, first_column  # the dark line
    assert abs(first_column["pad"] - first_column["context"]) < 0.005, first_column
    assert abs(last_column["square-pad"] - last_column["context"]) < 0.015, last_column  # the left edge only
