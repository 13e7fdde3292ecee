import pickle

import pytest
import torch

from ast_deploy.model import AST, CheckpointError, load_checkpoint
from conftest import TINY_CONFIG


@pytest.fixture()
def state_dict(tiny_model):
    return {k: v.clone() for k, v in tiny_model.state_dict().items()}


@pytest.mark.parametrize("layout", ["bare", "state_dict", "module_prefixed", "model"])
def test_official_layouts_load(tmp_path, state_dict, layout):
    if layout == "bare":
        obj = state_dict
    elif layout == "state_dict":
        obj = {"epoch": 3, "state_dict": state_dict}
    elif layout == "module_prefixed":
        obj = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}
    else:
        obj = {"model": state_dict}
    torch.save(obj, tmp_path / "ckpt.pth")
    model = load_checkpoint(AST(**TINY_CONFIG), tmp_path / "ckpt.pth")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state_dict[k])


def test_wrong_architecture_names_keys_and_guesses(parity_dir):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(AST(**TINY_CONFIG), parity_dir / "checkpoint.pth")
    message = str(e.value)  # the parity model has depth 1 where the tiny one has depth 2
    assert "100 missing: conv.blocks.1.norm1.weight" in message
    assert "matches no released architecture" in message


def test_shape_mismatch_is_named(tmp_path, state_dict):
    state_dict["input_proj.proj.0.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(state_dict, tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatch: input_proj.proj.0.weight: checkpoint \(16, 3, 3, 3\)"):
        load_checkpoint(AST(**TINY_CONFIG), tmp_path / "wide.pth")


def test_released_architecture_is_recognised(tmp_path):
    from ast_deploy.model import AST_T

    with torch.device("meta"):
        released = AST(**AST_T).state_dict()
    torch.save({k: torch.zeros(v.shape) for k, v in released.items()}, tmp_path / "t.pth")
    with pytest.raises(CheckpointError, match="released AST_T"):
        load_checkpoint(AST(**TINY_CONFIG), tmp_path / "t.pth")


def test_truncated_empty_and_foreign_files(tmp_path, parity_dir):
    data = (parity_dir / "checkpoint.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("this is not a checkpoint")
    (tmp_path / "list.pth").write_bytes(b"")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    model = AST(**TINY_CONFIG)
    with pytest.raises(CheckpointError, match="truncated or damaged zip archive"):
        load_checkpoint(model, tmp_path / "truncated.pth")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(model, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint: it looks like a text file"):
        load_checkpoint(model, tmp_path / "text.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_checkpoint(model, tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(model, tmp_path / "absent.pth")


class Payload:
    def __reduce__(self):
        return (print, ("this ran at load time",))


def test_pickle_that_needs_code_is_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    with pytest.raises(CheckpointError, match="refused for safety: it pickles") as e:
        load_checkpoint(AST(**TINY_CONFIG), tmp_path / "evil.pth")
    assert "this ran at load time" not in capsys.readouterr().out
    assert "weights_only" not in str(e.value)  # never suggest an unsafe load
