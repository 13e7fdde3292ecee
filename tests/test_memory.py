"""The memory budget: sizes, plans, streamed tiles, engine-shaped limits, and peak memory measured
in a separate process."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ast_deploy import budget
from ast_deploy.budget import GiB, MiB, Cost, fit_cost, parse_size
from ast_deploy.planning import Limits, TileSpec, make_plan, parse_tile
from ast_deploy.protocols import Pad, SquarePad, Tiles
from runtime_helpers import dynamic_onnx

REPO = Path(__file__).resolve().parents[1]


def psnr(a, b):  # data range 1, written out independently of ast_deploy.checks
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


# ---------------------------------------------------------------- sizes and tile specs

def test_parse_size():
    assert parse_size("512M") == 512 * MiB
    assert parse_size("4G") == parse_size("4GiB") == parse_size("4gb") == 4 * GiB
    assert parse_size("1.5G") == int(1.5 * GiB)
    assert parse_size("100k") == 100 * 1024
    assert parse_size(123456) == parse_size("123456") == 123456
    assert parse_size("unlimited") == math.inf
    for bad in ["", "4X", "-1G", "0", "G", "1.5", "four", 0, -5, True]:
        with pytest.raises(ValueError):
            parse_size(bad)


def test_parse_tile():
    assert parse_tile("512") == TileSpec(512, None)
    assert parse_tile("512:48") == TileSpec(512, 48)
    assert parse_tile(256) == TileSpec(256, None) and parse_tile(None) is None
    assert TileSpec(512).resolved_overlap() == 32 and TileSpec(1024).resolved_overlap() == 64
    for bad in ["512x512", "a", "0", "128:128", "128:-1"]:
        with pytest.raises(ValueError):
            parse_tile(bad)


def test_fit_cost_is_a_line_above_the_points():
    cost = fit_cost([(100, 110_000), (400, 410_000)])
    assert cost.bytes_per_pixel == pytest.approx(1100.0) and cost.constant == pytest.approx(11_000.0)
    assert all(cost.of(1, p, 1) >= b for p, b in [(100, 110_000), (400, 410_000)])


@pytest.mark.parametrize("points", [[(4096, 0), (16384, 0)], [(4096, 8192), (16384, 0)], [(4096, 0)]])
def test_a_probe_that_sees_no_growth_costs_at_least_the_input_and_output(points):
    """A small model's probe can see no growth of the resident set: the cost is then the call's own
    float32 input and output (24 B/pixel), never 0 (a plan without end, and a cache entry that the
    next run rejects as malformed)."""
    cost = fit_cost(points)
    assert cost.bytes_per_pixel == pytest.approx(2 * 3 * 4)
    assert budget._valid_entry({"bytes_per_pixel": cost.bytes_per_pixel, "constant": cost.constant})


# ---------------------------------------------------------------- plans: a pure function

COST = Cost(bytes_per_pixel=1000.0, constant=10 * MiB)


def test_plan_keeps_the_protocol_when_it_fits():
    plan = make_plan(500, 420, SquarePad(128), Limits(2 * GiB, COST), 128)
    assert plan.protocol == SquarePad(128) and not plan.tiled and plan.batch >= 1
    official = Tiles(384, 384, 80)
    plan = make_plan(1000, 700, official, Limits(2 * GiB, COST), 128)
    assert plan.protocol == official and not plan.tiled  # uniform averaging, as the paper runs it


def test_plan_tiles_a_photo_that_does_not_fit():
    budget = 10 * MiB + 1000 * 512 * 512  # room for one 512 x 512 tile
    plan = make_plan(4000, 6000, SquarePad(128), Limits(budget, COST), 128)
    t = plan.protocol
    assert plan.tiled_to_fit and plan.batch == 1 and t.blend == "feather" and t.overlap > 0
    assert t.tile_h % 128 == 0 and t.tile_w % 128 == 0 and COST.of(1, t.tile_h, t.tile_w) <= budget
    assert max(t.tile_h, t.tile_w) == 512
    # the official tiles shrink when the budget asks, and blend feathered then
    small = make_plan(1000, 1000, Tiles(384, 384, 80), Limits(10 * MiB + 1000 * 256 * 256, COST), 128)
    assert small.tiled_to_fit and small.protocol.tile_h <= 256 and small.protocol.blend == "feather"


def test_two_backends_run_the_stricter_plan():
    roomy, tight = Limits(4 * GiB, COST), Limits(10 * MiB + 1000 * 256 * 256, COST)
    assert make_plan(2000, 2000, Pad(128), [roomy, tight], 128) == make_plan(2000, 2000, Pad(128), [tight], 128)
    engine = Limits(math.inf, None, ((128, 128), (384, 384)), max_batch=2)
    plan = make_plan(2000, 2000, Pad(128), [roomy, engine], 128)
    assert max(plan.protocol.tile_h, plan.protocol.tile_w) <= 384 and plan.batch <= 2


def test_forced_tiles():
    plan = make_plan(300, 500, Pad(128), Limits(math.inf), 128, tile=TileSpec(256, 16))
    assert plan.forced and plan.protocol == Tiles(256, 256, 16, "feather", 128)
    with pytest.raises(ValueError, match="multiple of 128"):
        make_plan(300, 500, Pad(128), Limits(math.inf), 128, tile=TileSpec(200))


# ---------------------------------------------------------------- streamed tiles

def _ramp(length: int, overlap: int) -> np.ndarray:
    """Feather weights in closed form: pixel i of a tile weighs min(1, (its distance to the nearer
    tile edge + 0.5) / overlap), floored at 1e-3 (independent of ast_deploy.tiling.feather)."""
    i = np.arange(length, dtype=np.float64)
    return np.clip(np.minimum(i + 0.5, length - i - 0.5) / overlap, 1e-3, 1.0).astype(np.float32)


@pytest.mark.parametrize("blend", ["uniform", "feather"])
def test_streamed_tiles_equal_accumulating_all_tiles(blend):
    """The official merge (all tiles' weighted outputs summed, divided by the summed weights),
    written out here, against the streamed implementation, with a model that is not the identity."""
    from ast_deploy.protocols import tile_starts

    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 700, 530), dtype=np.float32)

    def model(batch):
        return np.tanh(batch * 3.0 + batch.mean(axis=(1, 2, 3), keepdims=True))

    tiles = Tiles(256, 256, 48, blend)
    got = tiles.run(x, model, batch=3)
    weight = np.outer(_ramp(256, 48), _ramp(256, 48)) if blend == "feather" else np.ones((256, 256), np.float32)
    merged, total = np.zeros_like(x), np.zeros((700, 530), np.float32)
    for t in tile_starts(700, 256, 48):
        for left in tile_starts(530, 256, 48):
            merged[:, :, t : t + 256, left : left + 256] += model(x[:, :, t : t + 256, left : left + 256]) * weight
            total[t : t + 256, left : left + 256] += weight
    np.testing.assert_allclose(got, merged / total, rtol=0, atol=2e-6)


class EngineShaped:
    """An ONNX Runtime backend that behaves like an engine built for one profile: it refuses (and
    records) any batch outside H, W in [128, 256] and batch <= 2."""

    def __init__(self, inner):
        self.inner, self.size_multiple = inner, inner.size_multiple
        self.shape_range, self.max_batch, self.name = ((1, 128, 128), (2, 256, 256)), 2, "engine-shaped"
        self.seen = []

    def infer(self, batch):
        self.seen.append(batch.shape)
        b, _, h, w = batch.shape
        if not (1 <= b <= 2 and 128 <= h <= 256 and 128 <= w <= 256):
            raise AssertionError(f"batch {batch.shape} is outside the profile")
        return self.inner.infer(batch)

    def memory_cost(self):
        return None


@pytest.mark.parametrize("max_memory", ["unlimited", "24M"])
def test_engine_shaped_backend_never_gets_more_than_its_profile(max_memory):
    from ast_deploy import Runner

    runner = Runner(dynamic_onnx(), protocol="square-pad:128", max_memory=max_memory)
    runner.backend = EngineShaped(runner.backend)
    x = np.random.default_rng(1).random((3, 3, 300, 520), dtype=np.float32)
    out = runner(x)
    assert out.shape == x.shape and np.isfinite(out).all()
    assert runner.backend.seen and all(s[0] <= 2 and 128 <= s[2] <= 256 and 128 <= s[3] <= 256
                                       for s in runner.backend.seen)
    assert "tiles" in runner.tiling_note()


def test_forced_tile_size_reaches_the_backend():
    from ast_deploy import Runner

    runner = Runner(dynamic_onnx(), protocol="pad:128", max_memory="unlimited", tile="128:16")
    seen = []
    infer = runner.backend.infer
    runner.backend.infer = lambda b: (seen.append(b.shape), infer(b))[1]
    x = np.random.default_rng(2).random((1, 3, 200, 300), dtype=np.float32)
    runner(x)
    assert seen and {s[2:] for s in seen} == {(128, 128)}
    assert "tiles:128:16:feather" in runner.tiling_note() and "--tile" in runner.tiling_note()


# ---------------------------------------------------------------- quality: tiles against the whole image

@pytest.mark.parametrize("crop", [(384, 576), (400, 600)])
def test_tiled_demo_model_matches_the_whole_image(crop):
    """Demo weights on a rainy photograph: tiles at the default overlap against one whole run, on a
    crop that is a multiple of 64 and on the whole 400 x 600 photo, which ``pad:64`` reflect-pads to
    448 x 640 (tiles cut from the unpadded photo, off the 64-pixel grid, gave 46 dB there)."""
    from ast_deploy import Runner
    from ast_deploy.demo import build_demo_model
    from ast_deploy.demo.photos import load_photo
    from ast_deploy.demo.rain import add_rain

    rainy, _ = add_rain(load_photo("coffee")[: crop[0], : crop[1]], 5)
    x = np.ascontiguousarray(rainy.transpose(2, 0, 1)[None], dtype=np.float32)
    model = build_demo_model("derain")
    whole = Runner(model, protocol="pad:64", max_memory="unlimited")(x)
    tiled_runner = Runner(model, protocol="pad:64", max_memory="unlimited", tile=256)
    tiled = tiled_runner(x)
    assert tiled_runner.plan_for(*crop).protocol.overlap == 32
    assert tiled.shape == whole.shape == x.shape
    assert psnr(tiled, whole) >= 50


def test_grid_tiles_cover_the_reflect_padded_image():
    """Tiles on a grid: origins on the grid (first 0, last flush, gaps within tile - overlap, as
    many tiles as the official layout), cut from the image reflect-padded to the grid; the streamed
    result equals accumulating those tiles over np.pad's padded image, cropped."""
    from ast_deploy.protocols import tile_starts

    rng = np.random.default_rng(4)
    x = rng.random((2, 3, 300, 430), dtype=np.float32)

    def model(batch):
        return np.tanh(batch * 3.0 + batch.mean(axis=(1, 2, 3), keepdims=True))

    tiles = Tiles(192, 192, 16, "feather", 64)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 320 - 300), (0, 448 - 430)), mode="reflect")
    layout = {}
    for axis, length, size in (("h", 320, 192), ("w", 448, 192)):
        starts = tiles.starts(length, size)
        assert starts[0] == 0 and starts[-1] == length - size
        assert len(starts) == len(tile_starts(length, size, 16))
        assert all(0 < b - a <= size - 16 for a, b in zip(starts, starts[1:]))
        layout[axis] = starts
    assert all(s % 64 == 0 for s in layout["h"] + layout["w"])  # the full grid fits here
    got = tiles.run(x, model, batch=3)
    weight = np.outer(_ramp(192, 16), _ramp(192, 16))
    merged, total = np.zeros_like(padded), np.zeros((320, 448), np.float32)
    for t in layout["h"]:
        for left in layout["w"]:
            merged[:, :, t : t + 192, left : left + 192] += model(padded[:, :, t : t + 192, left : left + 192]) * weight
            total[t : t + 192, left : left + 192] += weight
    np.testing.assert_allclose(got, (merged / total)[:, :, :300, :430], rtol=0, atol=2e-6)
    # the grid falls back to a divisor where the full grid would need more tiles (none are added)
    fallback = Tiles(512, 512, 32, "feather", 128).starts(6016, 512)
    assert all(s % 32 == 0 for s in fallback) and not all(s % 64 == 0 for s in fallback)
    assert len(fallback) == len(tile_starts(6016, 512, 32)) and fallback[-1] == 6016 - 512


# ---------------------------------------------------------------- CLI: message and peak memory

def test_restore_says_once_that_photos_were_tiled(tmp_path, capsys):
    from ast_deploy.cli import restore

    rng = np.random.default_rng(3)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    Image.fromarray(rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    code = restore.main([str(tmp_path / "p0.png"), str(tmp_path / "p1.png"), str(tmp_path / "small.png"),
                         "-o", str(tmp_path / "out"), "--onnx", str(dynamic_onnx()), "--max-memory", "40M"])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if "ran as tiles" in line]
    assert len(lines) == 1 and "2 photos ran as tiles" in lines[0] and "memory budget (40MiB)" in lines[0]
    said = [line for line in err.splitlines() if "does not fit the memory budget" in line]  # once per run
    assert len(said) == 1 and said[0].startswith("ast-restore: warning: the default protocol pad:128"), err
    assert "--max-memory" in said[0]
    assert Image.open(tmp_path / "out" / "p0.png").size == (400, 300)


def test_restore_rejects_bad_sizes(tmp_path, capsys):
    from ast_deploy.cli import restore

    for flag in (["--max-memory", "lots"], ["--tile", "12x12"]):
        with pytest.raises(SystemExit) as e:
            restore.main([str(tmp_path), "-o", str(tmp_path / "o"), "--onnx", str(dynamic_onnx()), *flag])
        assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_tile_progress_is_plain_lines_in_a_log_and_nothing_with_quiet(tmp_path):
    """ast-restore with stderr a pipe (not a terminal): the tiles of a photo that runs as many
    batches are reported as plain lines (no bar redraws), at most about ten per photo, ending with
    the total; with -q there is no progress at all."""
    import re

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "AST_DEPLOY_CACHE": str(tmp_path / "cache")}
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    errs = {}
    for name, extra in (("log", []), ("quiet", ["-q"])):
        # --tile 128 under 24 MiB: tiles of 128 one per call (the budget holds no more), 4 x 5 of them
        result = subprocess.run([sys.executable, "-m", "ast_deploy.cli.restore", str(tmp_path / "p.png"),
                                 "-o", str(tmp_path / name), "--onnx", str(dynamic_onnx()), "--protocol", "pad:128",
                                 "--tile", "128", "--max-memory", "24M", *extra],
                                capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr
        errs[name] = result.stderr
    lines = [line for line in errs["log"].splitlines() if line.startswith("tiles of p.png:")]
    counts = [tuple(map(int, re.fullmatch(r"tiles of p\.png: (\d+)/(\d+)", line).groups())) for line in lines]
    assert counts and counts[-1] == (20, 20) and 2 <= len(counts) <= 11, errs["log"]
    assert [done for done, _ in counts] == sorted(done for done, _ in counts)
    assert "\r" not in errs["log"] and "restoring: 1/1" in errs["log"]
    assert "tiles of" not in errs["quiet"] and "restoring" not in errs["quiet"]
    assert "ran as tiles" in errs["quiet"]  # the one message about tiling is not progress


def test_tile_progress_on_a_stream():
    """The callable itself: nothing for a photo of one batch, lines on a stream that is not a
    terminal, nothing when quiet."""
    import io

    from ast_deploy.console import TileProgress

    stream = io.StringIO()
    progress = TileProgress("tiles of a.png", stream=stream)
    progress(4, 4)
    assert stream.getvalue() == ""
    for done in range(1, 31):
        progress(done, 30)
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "tiles of a.png: 30/30" and len(lines) == 10 and lines[0] == "tiles of a.png: 3/30"
    quiet = io.StringIO()
    silent = TileProgress(quiet=True, stream=quiet)
    for done in range(1, 31):
        silent(done, 30)
    assert quiet.getvalue() == ""


# The peak of a large photo within the budget (VmHWM in its own process), with the cost cache cut to
# 1/8: tests/test_selfcheck.py::test_peak_within_budget_with_the_cached_cost_cut_to_an_eighth.
