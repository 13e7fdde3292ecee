import json

import numpy as np
import pytest
import torch

from ast_deploy.model import AST, AST_B, AST_T


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("case", ["forward0", "forward1"])
def test_forward_matches_official(parity_model, parity_cases, case):
    x = torch.from_numpy(parity_cases[f"{case}_in"]).float() / 255.0
    with torch.no_grad():
        y = parity_model(x).numpy()
    assert rel_err(y, parity_cases[f"{case}_out"]) < 1e-5  # a correct port reaches ~1e-6


def test_shifted_windows_match_official(shifted_model, shifted_cases):
    """Depth 2: the second block of each level shifts; a wrong roll or mask moves this by ~0.5."""
    x = torch.from_numpy(shifted_cases["forward0_in"]).float() / 255.0
    with torch.no_grad():
        y = shifted_model(x).numpy()
    assert rel_err(y, shifted_cases["forward0_out"]) < 1e-5


@pytest.mark.parametrize("name,config", [("AST_B", AST_B), ("AST_T", AST_T)])
def test_state_dict_keys_and_shapes_match_released(parity_dir, name, config):
    expected = json.loads((parity_dir / f"keys_{name}.json").read_text())
    with torch.device("meta"):
        model = AST(**config)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected


def test_ast_b_size():
    with torch.device("meta"):
        model = AST(**AST_B)
    assert 65e6 < sum(p.numel() for p in model.parameters()) < 66e6
    assert model.size_multiple == 128


def test_img_size_decides_window_and_shift():
    model = AST(img_size=64, embed_dim=8, depths=[2] * 9, token_mlp="frfn")
    bottleneck = model.conv.blocks  # 64 / 16 = 4 <= 8: window 4, never shifted
    assert [b.win_size for b in bottleneck] == [4, 4] and [b.shift_size for b in bottleneck] == [0, 0]
    top = model.decoderlayer_3.blocks
    assert [b.win_size for b in top] == [8, 8] and [b.shift_size for b in top] == [0, 4]
    assert not hasattr(model.encoderlayer_0.blocks[0], "attn")
    assert model.size_multiple == 64


def test_non_square_and_batch_agree_with_single_runs(tiny_model):
    x = torch.rand(2, 3, 128, 256)
    with torch.no_grad():
        batched = tiny_model(x)
        single = torch.cat([tiny_model(x[i : i + 1]) for i in range(2)])
    assert batched.shape == x.shape
    assert rel_err(batched, single) < 1e-5


def test_shift_mask_is_the_official_slice_painting():
    from ast_deploy.model.ast import shift_region_ids, window_partition

    h, w, win, shift = 24, 40, 8, 4
    painted = torch.zeros(1, h, w, 1)
    count = 0
    for hs in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
        for ws in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
            painted[:, hs, ws, :] = count
            count += 1
    expected = window_partition(painted, win).squeeze(-1)
    assert torch.equal(shift_region_ids(h, w, win, shift), expected)


def test_wrong_input_size_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="multiples of 128"):
        tiny_model(torch.rand(1, 3, 100, 128))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny_model(torch.rand(3, 128, 128))


@pytest.mark.slow
def test_ast_b_non_square_batch_agrees_with_single_runs():
    torch.manual_seed(0)
    model = AST(**AST_B).eval()
    x = torch.rand(2, 3, 128, 256)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(2)])
    assert rel_err(batched, single) < 1e-5


@pytest.mark.slow
def test_ast_b_checkpoint_runs_without_saying_its_architecture(tmp_path):
    """A released-architecture checkpoint in the official layout is recognised from its keys."""
    from ast_deploy import Runner

    torch.manual_seed(1)
    model = AST(**AST_B).eval()
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "ast_b.pth")
    runner = Runner(tmp_path / "ast_b.pth", protocol="pad:128")
    x = np.random.default_rng(0).random((3, 100, 140), dtype=np.float32)
    padded = np.pad(x[None], ((0, 0), (0, 0), (0, 28), (0, 116)), mode="reflect")
    with torch.no_grad():
        expected = model(torch.from_numpy(padded)).numpy()[0, :, :100, :140]
    assert rel_err(runner(x), expected) < 1e-5
