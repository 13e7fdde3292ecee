"""One model factory: build_model(arch | config | task, weights)."""

import subprocess
import sys

import pytest
import torch

from conftest import TINY_CONFIG
from ast_deploy.demo import build_demo_model, demo_weights
from ast_deploy.model import AST_B, AST_DEMO, CheckpointError, build_model, read_state_dict, resolve_config
from ast_deploy.tasks import TASKS


def test_resolve_config_by_name_task_or_mapping():
    assert resolve_config("AST_B") == AST_B and resolve_config("demo") == AST_DEMO
    assert resolve_config("derain") == AST_B  # the task's architecture
    config = resolve_config(TINY_CONFIG)
    assert config == TINY_CONFIG and config is not TINY_CONFIG
    with pytest.raises(ValueError, match="unknown architecture 'AST_X'"):
        resolve_config("AST_X")
    assert all(task.architecture in ("AST_B",) for task in TASKS.values())


def test_build_model_loads_weights_strictly_and_guesses_their_architecture(tmp_path):
    state = read_state_dict(demo_weights())
    for model in (build_model("demo", demo_weights()), build_model(None, demo_weights(), task="derain"),
                  build_model(weights=demo_weights()), build_demo_model()):
        assert model.config["depths"] == AST_DEMO["depths"] and not model.training
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="does not fit"):
        build_model("derain", demo_weights())  # an AST-B for the demo weights
    torch.save(build_model(TINY_CONFIG, seed=0).state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        build_model(weights=tmp_path / "tiny.pth", task="derain")
    with pytest.raises(ValueError, match="say which architecture"):
        build_model(weights=tmp_path / "tiny.pth")


def test_build_model_random_init_is_seeded_and_bad_configs_are_value_errors():
    a, b = build_model(TINY_CONFIG, seed=3), build_model(TINY_CONFIG, seed=3)
    c = build_model(TINY_CONFIG, seed=4)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(ValueError, match="cannot build the model"):
        build_model({**TINY_CONFIG, "token_mlp": "xyz"})
    with pytest.raises(ValueError, match="say which model"):
        build_model()


def test_tasks_do_not_import_the_model():
    code = "import sys, ast_deploy.tasks; print(sorted(m for m in ('torch', 'ast_deploy.model') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
