import numpy as np
import pytest
import torch

from ast_deploy import Runner
from ast_deploy.protocols import Pad, SquarePad, Tiles, parse_protocol, tile_starts


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


@pytest.mark.parametrize("fixtures", ["depth1", "shifted"])
@pytest.mark.parametrize("case,protocol", [("spad0", "square-pad:128"), ("tiles0", None)])
def test_official_protocols_match_fixtures(request, monkeypatch, fixtures, case, protocol):
    """Each official protocol, named, at default settings (the automatic budget), against the official
    outputs. The automatic budget is made 16 MiB here (a small machine, or AST-B on a large photo):
    a named protocol must still run as named, never re-planned as feathered tiles (which differ from
    the official output by far more than 1e-5)."""
    from ast_deploy import budget

    monkeypatch.setattr(budget, "default_budget", lambda device="cpu": 16 * 2 ** 20)
    model, cases = ((request.getfixturevalue("parity_model"), request.getfixturevalue("parity_cases"))
                    if fixtures == "depth1" else
                    (request.getfixturevalue("shifted_model"), request.getfixturevalue("shifted_cases")))
    if protocol is None:
        crop, overlap = cases[f"{case}_crop_overlap"]
        protocol = f"tiles:{crop}:{overlap}"
    runner = Runner(model, protocol=protocol)
    assert runner.budget == 16 * 2 ** 20
    x = cases[f"{case}_in"].astype(np.float32) / 255.0
    assert rel_err(runner(x), cases[f"{case}_out"]) < 1e-5
    assert runner.tiling_note() is None


def test_named_dehaze_protocol_is_not_replanned_at_default_settings(parity_model):
    """tiles:1152:384 (dehaze) named on a 1300x1240 photo at default settings: its 1152 x 1152 tiles
    need about 4.7 GiB on this model, over the automatic budget (at most 2 GiB), and still run as
    named: uniform 1152 tiles every 768 px, the official layout. (No official fixture holds a
    1152 tiling: the full run against an independent merge is tests/test_protocols.py::
    test_dehaze_protocol_matches_an_independent_official_merge, marked slow.)"""
    runner = Runner(parity_model, protocol="tiles:1152:384")
    plan = runner.plan_for(1300, 1240)
    assert runner.cost.of(1, 1152, 1152) > runner.budget  # the case that was re-planned before
    assert plan.protocol == Tiles(1152, 1152, 384) and not plan.tiled


def _official_merge(x, model, tile, overlap):
    """The official splitimage / mergeimage, written out: crops every tile - overlap pixels (those that
    reach the border dropped, one flush with it), each run whole, outputs averaged uniformly."""
    def starts(length):
        out = [s for s in range(0, length, tile - overlap) if s + tile < length]
        return out + [length - tile]

    h, w = x.shape[2:]
    total, count = np.zeros_like(x), np.zeros((h, w), np.float32)
    for top in starts(h):
        for left in starts(w):
            crop = torch.from_numpy(np.ascontiguousarray(x[:, :, top : top + tile, left : left + tile]))
            with torch.no_grad():
                total[:, :, top : top + tile, left : left + tile] += model(crop).numpy()
            count[top : top + tile, left : left + tile] += 1
    return total / count


@pytest.mark.slow
def test_dehaze_protocol_matches_an_independent_official_merge(parity_model):
    """tiles:1152:384 named, default settings, on a 1152x1216 photo (two tiles of 1152 overlapping by
    1088 px, each about 3 GiB on the CPU): against the official merge written out above."""
    x = np.random.default_rng(7).random((1, 3, 1152, 1216), dtype=np.float32)
    got = Runner(parity_model, protocol="tiles:1152:384")(x)
    assert rel_err(got, _official_merge(x, parity_model, 1152, 384)) < 1e-5


def test_pad_protocol_is_reflect_pad_and_crop(tiny_model):
    x = np.random.default_rng(0).random((1, 3, 100, 200), dtype=np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 28), (0, 56)), mode="reflect")
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(padded)).numpy()[:, :, :100, :200]
    assert rel_err(Runner(tiny_model, protocol="pad:128")(x), expected) < 1e-5


def test_pad_on_fitting_size_is_a_plain_forward(tiny_model):
    x = np.random.default_rng(1).random((2, 3, 128, 256), dtype=np.float32)
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(Runner(tiny_model, protocol="pad:128")(x), expected, rtol=0, atol=1e-6)


def test_tile_starts_follow_official_splitimage():
    assert tile_starts(500, 384, 80) == [0, 116]
    assert tile_starts(420, 384, 80) == [0, 36]
    assert tile_starts(1000, 384, 80) == [0, 304, 608, 616]
    assert tile_starts(384, 384, 80) == [0]


@pytest.mark.parametrize("blend", ["uniform", "feather"])
@pytest.mark.parametrize("shape", [(1, 3, 500, 420), (2, 3, 700, 1000), (1, 3, 90, 200)])
def test_tiles_reassemble_the_image(blend, shape):
    """With an identity model every blend must give back the input exactly, tiles of any layout."""
    x = np.random.default_rng(2).random(shape, dtype=np.float32)
    calls = []

    def identity(batch):
        calls.append(batch.shape)
        return batch.copy()

    out = Tiles(384, 384, 80, blend).run(x, identity)
    np.testing.assert_allclose(out, x, atol=1e-6)
    assert all(c[2:] == (384, 384) for c in calls)


def test_square_pad_is_centred():
    x = np.ones((1, 3, 100, 300), dtype=np.float32)
    seen = {}

    def record(batch):
        seen["batch"] = batch
        return batch

    SquarePad(128).run(x, record)
    square = seen["batch"][0, 0]
    assert square.shape == (384, 384)
    assert square[142:242, 42:342].all() and square.sum() == 100 * 300


def test_parse_protocol_round_trips_and_rejects_garbage():
    for spec in ["square-pad:128", "pad:128", "tiles:384:80", "tiles:384:80:feather", "tiles:256:32:feather:grid64", "none"]:
        assert str(parse_protocol(spec)) == spec
    for bad in ["tiles:384", "pad:x", "blur:3", "tiles:384:80:gaussian", "tiles:384:80:feather:grid", "tiles:384:80:feather:64"]:
        with pytest.raises(ValueError, match="protocol"):
            parse_protocol(bad)
    with pytest.raises(ValueError, match="multiple of 128"):
        Pad(100).check(128)


def test_runner_tiles_into_a_static_backend(tiny_model):
    """A backend that takes only 128x128 gets tiles; the result is the same as running the tiles."""
    runner = Runner(tiny_model, protocol="pad:128")
    runner.backend.shape_range = ((1, 128, 128), (4, 128, 128))  # (B, H, W): backends/base.py
    x = np.random.default_rng(3).random((1, 3, 200, 150), dtype=np.float32)
    plan = runner.plan_for(200, 150)
    assert plan.protocol == Tiles(128, 128, 32, "feather", 128)  # tiled to fit: feathered
    expected = plan.protocol.run(x, runner.backend.infer, batch=plan.batch)
    np.testing.assert_allclose(runner(x), expected, atol=1e-6)


def test_feather_weights_are_linear_ramps_across_the_overlap():
    """Two tiles along W whose model outputs a different constant each: where both cover a pixel the
    result is their weighted mean, each weight min(1, (distance to its tile's edge + 0.5) / overlap)
    (a linear ramp, floored at 1e-3), so a wrong ramp length or direction changes it."""
    tile, overlap, width = 128, 32, 200
    x = np.zeros((1, 3, tile, width), np.float32)
    values = iter([1.0, 3.0])  # the first tile (left) gives 1, the second (right) 3

    def constant(batch):
        return np.concatenate([np.full((1, 3, tile, tile), next(values), np.float32) for _ in batch])

    out = Tiles(tile, tile, overlap, "feather").run(x, constant)[0, 0, 0]
    left_start, right_start = 0, width - tile  # the official tile starts for 200 / 128 / 32
    cols = np.arange(width)

    def weight(col, start):
        inside = (col >= start) & (col < start + tile)
        edge = np.minimum(col - start, start + tile - 1 - col) + 0.5
        return np.where(inside, np.clip(edge / overlap, 1e-3, 1.0), 0.0)

    wl, wr = weight(cols, left_start), weight(cols, right_start)
    expected = (1.0 * wl + 3.0 * wr) / (wl + wr)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    assert out[0] == 1.0 and out[-1] == 3.0 and np.all(np.diff(out) >= -1e-6)
