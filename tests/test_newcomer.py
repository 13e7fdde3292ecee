"""What a new user meets first (issue 21.5): the model found from --task, errors named in CLI words,
one TensorRT install hint, the README's example outputs git-ignored."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ast_deploy.cli import restore
from ast_deploy.demo import demo_weights
from runtime_helpers import dynamic_onnx

REPO = Path(__file__).resolve().parents[1]


def _photo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    return folder / "a.png"


def test_task_alone_runs_the_exported_onnx_or_says_which_command_makes_it(tmp_path, monkeypatch, capsys):
    photo = _photo(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        restore.main([str(photo), "-o", "out", "--task", "derain"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "engines/derain/ast-derain.onnx does not exist" in err
    assert "ast-export --task derain" in err
    with pytest.raises(SystemExit) as e:
        restore.main([str(photo), "-o", "out"])
    assert e.value.code == 2 and "--task TASK to run engines/TASK/ast-TASK.onnx" in capsys.readouterr().err

    (tmp_path / "engines" / "derain").mkdir(parents=True)
    shutil.copy(dynamic_onnx(), tmp_path / "engines" / "derain" / "ast-derain.onnx")
    assert restore.main([str(photo), "-o", "out", "--task", "derain"]) == 0
    assert "using engines/derain/ast-derain.onnx" in capsys.readouterr().err
    assert restore.main([str(photo), "-o", "ref", "--task", "derain", "--onnx", str(dynamic_onnx())]) == 0
    assert (tmp_path / "out" / "a.png").read_bytes() == (tmp_path / "ref" / "a.png").read_bytes()


def test_an_unknown_task_is_the_error_not_the_model(tmp_path, capsys):
    photo = _photo(tmp_path / "in")
    with pytest.raises(SystemExit) as e:
        restore.main([str(photo), "-o", str(tmp_path / "out"), "--weights", str(demo_weights()), "--task", "derian"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "argument --task: unknown task 'derian'" in err and "derain_demo.pth" not in err


def test_device_cuda_without_the_gpu_runtime_is_a_usage_error_in_cli_words(tmp_path, capsys):
    import onnxruntime
    import torch

    photo = _photo(tmp_path / "in")
    if not torch.cuda.is_available():
        code = restore.main([str(photo), "-o", str(tmp_path / "o1"), "--weights", str(demo_weights()), "--task",
                             "derain", "--device", "cuda"])
        err = capsys.readouterr().err
        assert code == 2 and "--device cpu" in err and "PyTorch" in err and "Traceback" not in err, err
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        code = restore.main([str(photo), "-o", str(tmp_path / "o2"), "--onnx", str(dynamic_onnx()), "--task",
                             "derain", "--device", "cuda"])
        err = capsys.readouterr().err
        assert code == 2 and "--device cpu" in err and 'pip install -e ".[gpu]"' in err, err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_one_tensorrt_install_hint_everywhere():
    from ast_deploy.doctor import INSTALL
    from ast_deploy.engines.target import TENSORRT_INSTALL, TENSORRT_MISSING

    command = 'pip install --extra-index-url https://pypi.nvidia.com -e ".[tensorrt]"'
    assert TENSORRT_INSTALL.startswith(command)
    assert INSTALL["tensorrt"] == TENSORRT_INSTALL and TENSORRT_INSTALL in TENSORRT_MISSING
    readme = (REPO / "README.md").read_text()
    assert command in readme and "pip install tensorrt" not in readme


@pytest.mark.parametrize("path", ["models/derain/config.pbtxt", "restored/a.png", "ptx/assa.ptx", "check.xml",
                                  "engines/derain/ast-derain.onnx", "engines/derain/ast-derain.0123abcd.plan"])
def test_the_readme_examples_outputs_are_git_ignored(path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", path])
    assert result.returncode == 0, f"{path} is not git-ignored"
