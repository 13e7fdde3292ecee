import json

import numpy as np
import pytest
import torch
from PIL import Image

from ast_deploy import Runner


@pytest.fixture()
def runner(tiny_model):
    return Runner(tiny_model, protocol="pad:128")


def test_returns_the_kind_it_gets(runner):
    rng = np.random.default_rng(0)
    chw = rng.random((3, 130, 100), dtype=np.float32)
    out = runner(chw)
    assert out.shape == chw.shape and out.dtype == np.float32
    batch = runner(chw[None])
    np.testing.assert_allclose(batch[0], out, atol=1e-6)
    tensor = runner(torch.from_numpy(chw))
    assert isinstance(tensor, torch.Tensor) and torch.allclose(tensor, torch.from_numpy(out), atol=1e-6)
    hwc8 = (chw.transpose(1, 2, 0) * 255).astype(np.uint8)
    out8 = runner(hwc8)
    assert out8.dtype == np.uint8 and out8.shape == hwc8.shape
    pil = runner(Image.fromarray(hwc8))
    assert isinstance(pil, Image.Image) and np.array_equal(np.asarray(pil), out8)
    hwc16 = (chw.transpose(1, 2, 0) * 65535).astype(np.uint16)
    assert runner(hwc16).dtype == np.uint16


def test_uint8_output_is_the_quantized_float_output(runner):
    hwc8 = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    float_out = runner(hwc8.transpose(2, 0, 1).astype(np.float32) / 255.0)
    expected = np.round(np.clip(float_out, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    assert np.abs(runner(hwc8).astype(int) - expected).max() <= 1


def test_batch_of_non_square_images_matches_single_runs(runner):
    x = np.random.default_rng(2).random((3, 3, 130, 120), dtype=np.float32)
    runner.backend.batch_limit = 2  # 3 images in two backend calls
    batched = runner(x)
    singles = np.stack([runner(x[i]) for i in range(3)])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_checkpoint_source_with_config(parity_dir, parity_model, parity_cases):
    config = json.loads((parity_dir / "config.json").read_text())
    runner = Runner(parity_dir / "checkpoint.pth", config=config, protocol="none")
    x = parity_cases["forward0_in"].astype(np.float32) / 255.0
    with torch.no_grad():
        expected = parity_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runner(x), expected, atol=1e-6)


def test_task_supplies_the_protocol(tiny_model):
    assert str(Runner(tiny_model, task="deraindrop").protocol) == "tiles:384:80"
    assert str(Runner(tiny_model, task="derain").protocol) == "square-pad:128"


def test_bad_sources_and_inputs(runner, tmp_path):
    with pytest.raises(FileNotFoundError):
        Runner(tmp_path / "missing.pth", task="derain")
    (tmp_path / "model.xyz").write_bytes(b"0")
    with pytest.raises(ValueError, match="unknown model file type"):
        Runner(tmp_path / "model.xyz")
    with pytest.raises(ValueError, match="unknown task"):
        Runner(runner.backend.model, task="desnow")
    with pytest.raises(ValueError, match="channels"):
        runner(np.zeros((64, 64, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        runner(np.zeros((1, 4, 64, 64), dtype=np.float32))


def test_checkpoint_architecture_is_taken_from_its_keys(tmp_path):
    """The demo checkpoint is not AST-B: with task="derain" the Runner still builds the model the
    file holds, and keeps the task's protocol; a file matching nothing known gets the task's error."""
    from ast_deploy.demo import DEMO_CONFIG, demo_weights
    from ast_deploy.model import CheckpointError

    runner = Runner(demo_weights("derain"), task="derain")
    assert runner.backend.model.config["depths"] == DEMO_CONFIG["depths"]
    assert str(runner.protocol) == "square-pad:128"
    from conftest import TINY_CONFIG
    from ast_deploy.model import AST

    torch.save(AST(**TINY_CONFIG).state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        Runner(tmp_path / "tiny.pth", task="derain")
    with pytest.raises(ValueError, match="say which architecture"):
        Runner(tmp_path / "tiny.pth")
