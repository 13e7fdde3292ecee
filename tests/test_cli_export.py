"""``ast-export`` end to end on small architectures (``--arch-config``), and its error paths."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ast_deploy.cli.export import EXIT_CHECKPOINT, EXIT_OK, EXIT_TOLERANCE, EXIT_USAGE, main
from ast_deploy.model import AST
from ast_deploy.recipes import load_recipe
from ast_deploy.tasks import OFFICIAL_WEIGHTS_PAGE, TASKS

from conftest import TINY_CONFIG

# TINY_CONFIG with fewer blocks (one shifted block, in the last decoder level): the standard-op export
# traces every attention in full, so block count drives this test's time.
SMALL_CONFIG = {**TINY_CONFIG, "depths": [1, 1, 1, 1, 1, 1, 1, 1, 2]}

RECIPE = """task = "derain"
[profile]
min = [1, 3, 128, 128]
opt = [1, 3, 256, 256]
max = [2, 3, 512, 512]
[validation]
sizes = [[128, 128], [128, 256]]
batch = 2
[tolerance.fp32]
psnr_db = {psnr}
max_rel = 1e-4
"""


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture()
def recipe(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE.format(psnr=load_recipe("derain").tolerance("fp32").psnr_min))  # the shipped threshold
    return path


@pytest.fixture()
def small_config(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(SMALL_CONFIG))
    return path


@pytest.fixture()
def parity_config(parity_dir, tmp_path):
    config = json.loads((parity_dir / "config.json").read_text())
    config.pop("token_projection", None)
    path = tmp_path / "parity.json"
    path.write_text(json.dumps(config))
    return path


def test_cli_official_weights_static_shape(parity_dir, parity_cases, parity_config, recipe, tmp_path, capsys):
    """--weights + --shape: the static graph reproduces the official implementation's outputs."""
    out = tmp_path / "out"
    code = main(["--task", "derain", "--weights", str(parity_dir / "checkpoint.pth"), "--arch-config",
                 str(parity_config), "--recipe", str(recipe), "--shape", "256x256", "--batch", "2", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == EXIT_OK, stdout
    onnx_path = out / "ast-derain-256x256-b2.onnx"
    model = onnx.load(str(onnx_path))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 256, 256]
    assert any(n.domain == "ast" for n in model.graph.node)
    x = parity_cases["forward1_in"].astype(np.float32) / 255.0
    y = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert rel_err(y, parity_cases["forward1_out"]) < 1e-4

    report = json.loads((out / "ast-derain-256x256-b2.validation.json").read_text())
    assert report["passed"] is True and [c["shape"] for c in report["cases"]] == [[2, 3, 256, 256]]

    # The ast-build command it prints is the static shape, and ast-build takes it (and, without --shapes,
    # uses the ONNX's static shape rather than the task recipe's range). No TensorRT here: the profile
    # ast-build would build with is checked against the ONNX's input.
    from ast_deploy.cli.build import parser as build_parser
    from ast_deploy.engines.build import resolve_profile
    from ast_deploy.engines.onnx_info import inspect_onnx
    from ast_deploy.shapes import ShapeProfile

    (command,) = [line.strip() for line in stdout.splitlines() if line.strip().startswith("ast-build ")]
    assert command == f"ast-build {onnx_path} --shapes 2x3x256x256"
    args = build_parser().parse_args(command.split()[1:])
    info = inspect_onnx(args.onnx)
    assert info.task == "derain"
    assert resolve_profile(info, args.shapes, args.recipe) == ShapeProfile.static((2, 3, 256, 256))
    assert resolve_profile(info, None, None) == ShapeProfile.static((2, 3, 256, 256))
    assert report["extra"]["weights"].endswith("checkpoint.pth")
    assert "PSNR" in stdout  # the validation table
    assert {p.key: p.value for p in model.metadata_props} == {"ast.size_multiple": "128", "ast.task": "derain"}



def test_cli_random_init_dynamic_standard_ops(small_config, recipe, tmp_path, capsys):
    """--random-init --no-custom-ops, dynamic: no ast nodes, and the ONNX matches a PyTorch model
    built the same way (seeded) at a size the validation did not use."""
    out = tmp_path / "out"
    code = main(["--task", "derain", "--random-init", "--arch-config", str(small_config), "--recipe", str(recipe),
                 "--no-custom-ops", "--out", str(out), "--seed", "3"])
    stdout = capsys.readouterr().out
    assert code == EXIT_OK, stdout
    onnx_path = out / "ast-derain-std.onnx"
    model = onnx.load(str(onnx_path))
    assert not any(n.domain == "ast" for n in model.graph.node) and not model.functions
    assert all(o.domain in ("", "ai.onnx") for o in model.opset_import)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"ScatterND", "NonZero", "Loop"} and {"Softmax", "Relu", "Equal"} <= ops  # shifted ASSA inline

    torch.manual_seed(3)
    reference = AST(**SMALL_CONFIG).eval()
    x = torch.rand(1, 3, 256, 128)
    with torch.no_grad():
        expected = reference(x).numpy()
    y = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert rel_err(y, expected) < 1e-4

    report = json.loads((out / "ast-derain-std.validation.json").read_text())
    assert report["passed"] and [c["shape"] for c in report["cases"]] == [[2, 3, 128, 128], [2, 3, 128, 256]]
    assert report["extra"]["custom_ops"] is False and report["extra"]["nodes"] == len(model.graph.node)


def test_cli_beyond_tolerance_exits_1(parity_config, tmp_path, capsys):
    """An impossible tolerance (PSNR >= 1000 dB) must fail the run with exit code 1."""
    recipe = tmp_path / "strict.toml"
    recipe.write_text(RECIPE.format(psnr=1000.0))
    code = main(["--task", "derain", "--random-init", "--arch-config", str(parity_config), "--recipe", str(recipe),
                 "--shape", "128x128", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == EXIT_TOLERANCE
    assert "FAIL" in captured.out and "tolerance" in captured.err
    assert json.loads((tmp_path / "out" / "ast-derain-128x128-b1.validation.json").read_text())["passed"] is False


def test_missing_weights_names_the_official_checkpoint(tmp_path, capsys):
    code = main(["--task", "dehaze", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert TASKS["dehaze"].weights_link in err and OFFICIAL_WEIGHTS_PAGE in err and "--random-init" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"not a checkpoint at all", "bad.pth"),
])
def test_bad_checkpoint_exits_3(parity_config, tmp_path, capsys, content, match):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    code = main(["--task", "derain", "--weights", str(bad), "--arch-config", str(parity_config),
                 "--out", str(tmp_path / "out")])
    assert code == EXIT_CHECKPOINT
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_another_architecture_exits_3(parity_dir, tmp_path, capsys):
    code = main(["--task", "derain", "--weights", str(parity_dir / "checkpoint.pth"), "--out", str(tmp_path)])
    assert code == EXIT_CHECKPOINT
    assert "does not fit this model" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["--task", "denoise", "--random-init"], "invalid choice"),
    (["--task", "derain", "--random-init", "--weights", "x.pth"], "not allowed with"),
    (["--task", "derain", "--random-init", "--shape", "512"], "HxW"),
    (["--task", "derain", "--random-init", "--shape", "512x512", "--dynamic"], "not allowed with"),
    (["--task", "derain", "--random-init", "--batch", "0"], "positive integer"),
    (["--task", "derain", "--random-init", "--int8", "--calib", "/nonexistent/imgs"], "does not exist"),
    (["--task", "derain", "--random-init", "--fp16", "--calib", "/nonexistent/imgs"], "does not exist"),
    (["--task", "derain", "--random-init", "--calib", "imgs"], "--calib only goes with --fp16 or --int8"),
    (["--task", "derain", "--random-init", "--int8-for", "onnxruntime"], "--int8-for only goes with --int8"),
    (["--task", "derain", "--random-init", "--int8", "--int8-for", "cpu"], "invalid choice"),
    (["--task", "derain", "--random-init", "--opset", "13"], "use 17 to 25"),
    (["--task", "derain", "--random-init", "--shape", "200x256"], "multiples of 128"),
    (["--task", "derain", "--random-init", "--recipe", "/nonexistent/r.toml"], "not found"),
])
def test_bad_arguments_exit_2(argv, match, tmp_path, capsys):
    code = main(argv + ["--out", str(tmp_path / "out")])
    assert code == EXIT_USAGE
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_arch_config_must_be_valid(tmp_path, capsys):
    bad = tmp_path / "arch.json"
    bad.write_text("[1, 2]")
    assert main(["--task", "derain", "--random-init", "--arch-config", str(bad), "--out", str(tmp_path)]) == EXIT_USAGE
    assert "JSON object" in capsys.readouterr().err


def test_console_script_is_declared():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["ast-export"] == "ast_deploy.cli.export:main"


def test_static_shape_int8_calibrates_and_validates_at_that_shape(tmp_path, capsys):
    """--shape HxW --batch B with --int8: a static ONNX takes one input shape, so the calibration
    images and the held-out validation pairs are brought to it (ONNX Runtime refused the 256-pixel
    pairs with a dims error before), and the INT8 graph keeps the static input."""
    out = tmp_path / "out"
    code = main(["--task", "derain", "--shape", "128x128", "--batch", "2", "--int8", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    path = out / "ast-derain-128x128-b2.int8.onnx"
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 128, 128]
    report = json.loads((out / "ast-derain-128x128-b2.int8.precision.json").read_text())
    assert report["budget_met"] and report["validation"]["cases"]
    assert json.loads((out / "ast-derain-128x128-b2.int8.validation.json").read_text())["passed"]
    assert "--shapes 2x3x128x128" in captured.out
