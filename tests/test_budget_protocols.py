"""The budget never changes numbers silently (issue 21): named protocols run as named, a task's
default protocol re-planned is a BudgetWarning of the package's own, and ast-check runs both sides
on the candidate's plan."""

import warnings

import numpy as np
import pytest
from PIL import Image

from ast_deploy.budget import Cost
from runtime_helpers import dynamic_onnx, image_model


@pytest.fixture(autouse=True)
def own_cost_cache(tmp_path, monkeypatch):
    """Costs measured or corrected here stay in this test (not the user's cache, not other tests)."""
    from ast_deploy import budget

    monkeypatch.setenv("AST_DEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(budget, "_MEMO", {})


def test_budget_warning_is_the_packages_own():
    import ast_deploy
    from ast_deploy import BudgetWarning

    assert issubclass(BudgetWarning, UserWarning) and BudgetWarning is not UserWarning
    assert "BudgetWarning" in ast_deploy.__all__


def test_default_protocol_replanned_warns_once_naming_the_budget_of_the_protocol():
    """pad:128 (the default of a model without a task) over a 40 MiB budget: feathered tiles, one
    BudgetWarning for two photos, naming a --max-memory at which the protocol fits: a Runner with
    that budget plans the protocol itself."""
    from ast_deploy import BudgetWarning, Runner

    runner = Runner(dynamic_onnx(), max_memory="40M")
    x = np.random.default_rng(0).random((1, 3, 200, 300), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner(x)
        runner(x[:, :, :150])
    said = [w for w in caught if issubclass(w.category, BudgetWarning)]
    assert len(said) == 1, [str(w.message) for w in caught]
    text = str(said[0].message)
    assert "pad:128" in text and "40MiB" in text and "200x300" in text and "--max-memory" in text
    suggested = text.split("--max-memory ")[1].split(")")[0]
    roomy = Runner(dynamic_onnx(), max_memory=suggested)
    assert not roomy.plan_for(200, 300).tiled and str(roomy.plan_for(200, 300).protocol) == "pad:128"


def test_named_protocol_over_an_explicit_budget_is_a_value_error_with_the_numbers():
    from ast_deploy import Runner

    x = np.random.default_rng(0).random((1, 3, 300, 400), dtype=np.float32)
    with pytest.raises(ValueError, match=r"pad:128 was named: it needs about [\d.]+MiB .* 300x400 .* over "
                                         r"max_memory 40MiB; give max_memory='\d+M'"):
        Runner(dynamic_onnx(), protocol="pad:128", max_memory="40M")(x)
    with pytest.raises(ValueError, match=r"tiles:384:80 was named: .* over max_memory 40MiB"):
        Runner(dynamic_onnx(), protocol="tiles:384:80", max_memory="40M")  # a fixed tile: said at once


def test_cli_named_protocol_over_budget_exits_2(tmp_path, capsys):
    """ast-restore --protocol pad:128 --max-memory 40M on a photo that needs more: a usage error with
    the numbers, no output written. (The default protocol's one warning line per run:
    tests/test_memory.py::test_restore_says_once_that_photos_were_tiled.)"""
    from ast_deploy.cli import restore

    Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(tmp_path / "p0.png")
    code = restore.main([str(tmp_path / "p0.png"), "--onnx", str(dynamic_onnx()), "--max-memory", "40M",
                         "-o", str(tmp_path / "named"), "--protocol", "pad:128"])
    err = capsys.readouterr().err
    assert code == 2 and "ast-restore: error:" in err and "over max_memory 40MiB" in err and "Traceback" not in err
    assert not list((tmp_path / "named").glob("*.png"))


def test_check_runs_both_sides_on_the_candidates_plan():
    """A reference that costs 100 times the candidate per pixel, under a 64 MiB budget: the old joined
    plan tiled a 256 x 256 image (the reference does not fit); the candidate runs it whole, so both
    sides must run it whole, as ast-restore runs the candidate."""
    from ast_deploy import Runner
    from ast_deploy.cli.check import paired

    reference = Runner(image_model(), protocol=None, max_memory="64M")
    candidate = Runner(dynamic_onnx(), max_memory="64M")
    reference._cost, candidate._cost = Cost(10_000.0), Cost(100.0)  # 640 MiB against 6.4 MiB whole
    seen = {"reference": [], "candidate": []}
    for name, runner in (("reference", reference), ("candidate", candidate)):
        infer = runner.backend.infer
        runner.backend.infer = lambda b, infer=infer, name=name: (seen[name].append(b.shape), infer(b))[1]
    x = np.random.default_rng(1).random((1, 3, 256, 256), dtype=np.float32)
    run_reference, run_candidate = paired(reference, candidate)
    ref, cand = run_reference(x), run_candidate(x)
    assert seen["candidate"] == [(1, 3, 256, 256)] and seen["reference"] == [(1, 3, 256, 256)]
    assert candidate.tiling_note() is None
    assert float(np.abs(ref - cand).max()) < 1e-4
