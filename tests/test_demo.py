import json

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")

from ast_deploy.demo import DEMO_CONFIG, demo_info, demo_weights  # noqa: E402
from ast_deploy.demo.photos import HELD_OUT, TRAIN  # noqa: E402
from ast_deploy.demo.rain import add_rain  # noqa: E402


def psnr(a, b):
    mse = np.mean((np.clip(a, 0, 1).astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(1.0 / mse)


def test_rain_is_deterministic_and_only_brightens():
    clean = np.random.default_rng(0).uniform(0, 1, (96, 80, 3)).astype(np.float32)
    a, layers_a = add_rain(clean, 7)
    b, layers_b = add_rain(clean, 7)
    c, _ = add_rain(clean, 8)
    assert np.array_equal(a, b) and layers_a == layers_b
    assert not np.array_equal(a, c)
    assert a.shape == clean.shape and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    assert np.all(a >= clean - 1e-6)  # screen blend never darkens
    assert np.mean(a - clean) > 0.005  # and there is visible rain


def test_held_out_photographs_never_train():
    assert not set(HELD_OUT) & set(TRAIN)
    assert "cat" not in TRAIN  # skimage's cat is the chelsea photograph, which is held out


def test_demo_checkpoint_is_official_layout_and_loads_strictly():
    from ast_deploy.model import AST, load_checkpoint

    path = demo_weights("derain")
    assert path.stat().st_size < 5 * 2 ** 20
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"epoch", "state_dict"}
    model = AST(**DEMO_CONFIG)
    assert list(raw["state_dict"]) == list(model.state_dict())
    load_checkpoint(model, path)
    info = demo_info("derain")
    assert info["config"] == json.loads(json.dumps(DEMO_CONFIG))
    assert info["command"].startswith("python -m ast_deploy.demo.train")
    with pytest.raises(ValueError, match="no demo weights"):
        demo_weights("dehaze-nonexistent")


def test_demo_model_beats_identity_on_held_out_pairs():
    from ast_deploy.demo import build_demo_model
    from ast_deploy.demo.pairs import held_out_pairs

    model = build_demo_model()
    gains = []
    for name, rainy, clean in held_out_pairs(model.size_multiple, 256):
        with torch.no_grad():
            out = model(torch.from_numpy(rainy.transpose(2, 0, 1).copy())[None])[0].permute(1, 2, 0).numpy()
        gain = psnr(out, clean) - psnr(rainy, clean)
        assert gain > 1.0, f"{name}: restored is only {gain:.2f} dB better than the rainy input"
        gains.append(gain)
    assert np.mean(gains) > 3.0
