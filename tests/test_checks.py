"""The parity gate's pieces: metrics (against scikit-image and closed forms), generated images,
tolerances, judging, reports, benchmark statistics."""

import dataclasses
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ast_deploy.bench import latency_stats
from ast_deploy.checks import Case, check_parity, psnr, rel_error, ssim, synthetic_image, tolerance_for
from ast_deploy.checks.metrics import max_abs_error
from ast_deploy.checks.parity import judge
from ast_deploy.checks.report import junit_xml, text_table, write_json
from ast_deploy.checks.tolerances import DEFAULT_TOLERANCES, PRECISIONS, Tolerance


def test_psnr_and_errors_closed_form():
    a = np.zeros((3, 16, 16), np.float32)
    b = a + 0.01
    assert psnr(b, a) == pytest.approx(40.0)
    assert psnr(a, a) == math.inf
    ref = np.full((3, 16, 16), 0.5, np.float32)
    assert max_abs_error(ref + 0.002, ref) == pytest.approx(0.002, rel=1e-4)
    assert rel_error(ref + 0.002, ref) == pytest.approx(0.004, rel=1e-4)


def test_psnr_is_one_definition_data_range_1_unclipped():
    ref = np.full((1, 3, 8, 8), 0.5)
    over = ref.copy()
    over[..., 0, 0] = 1.5  # beyond the image range: counts in full for parity, clipped vs ground truth
    mse = np.mean((over - ref) ** 2)
    assert psnr(over, ref) == pytest.approx(10 * np.log10(1 / mse))
    assert psnr(over, ref, clip=True) == pytest.approx(10 * np.log10(1 / np.mean((np.clip(over, 0, 1) - ref) ** 2)))
    assert psnr(over, ref, clip=True) > psnr(over, ref) + 5
    for bad in (np.nan, np.inf):
        broken = ref.copy()
        broken[0, 0, 0, 0] = bad
        assert psnr(broken, ref) == -math.inf and psnr(broken, ref, clip=True) == -math.inf


def test_cases_are_nchw_batches():
    img = synthetic_image(16, 24, 0)
    case = Case.from_chw("a", img, img)
    assert case.image.shape == case.target.shape == (1, 3, 16, 24) and case.image.dtype == np.float32
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        Case("chw", img)
    with pytest.raises(ValueError, match="target shape"):
        Case("a", img[None], img[None, :, :8])
    from ast_deploy.checks import random_cases

    a, b = random_cases([(2, 3, 8, 16), (1, 3, 8, 8)], seed=3)
    assert a.image.shape == (2, 3, 8, 16) and b.image.shape == (1, 3, 8, 8)
    assert np.array_equal(a.image, random_cases([(2, 3, 8, 16)], seed=3)[0].image)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    ref = synthetic_image(48, 64, 1)
    for noisy in (np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1), ref * 0.8 + 0.1, ref[:, ::-1].copy()):
        want = metrics.structural_similarity(noisy, ref, data_range=1.0, channel_axis=0, gaussian_weights=True,
                                             sigma=1.5, use_sample_covariance=False)
        assert ssim(noisy, ref) == pytest.approx(want, abs=1e-6)


def test_ssim_properties():
    img = synthetic_image(32, 32, 2)
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(np.clip(img + 0.2, 0, 1), img) < 0.99
    batch = np.stack([img, img[:, ::-1]])
    assert ssim(batch, batch) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal shapes"):
        ssim(img, img[:, :16])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(img[:, :8, :8], img[:, :8, :8])


def test_synthetic_images_are_deterministic_and_photo_like():
    a, b = synthetic_image(64, 96, 0), synthetic_image(64, 96, 0)
    assert a.shape == (3, 64, 96) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, synthetic_image(64, 96, 1))
    assert 0 <= a.min() and a.max() <= 1 and 0.2 < a.mean() < 0.8
    assert np.abs(np.diff(a, axis=2)).max() > 0.2  # hard edges
    assert np.median(np.abs(np.diff(a, axis=2))) < 0.1  # mostly smooth


def test_tolerances_from_recipe_or_defaults():
    from ast_deploy.recipes import load_recipe

    assert tolerance_for("fp16") == DEFAULT_TOLERANCES["fp16"]
    recipe = load_recipe("derain")  # its [tolerance.*] tables, as the one Tolerance class
    for precision in PRECISIONS:
        assert tolerance_for(precision, recipe) is recipe.tolerances[precision]
        assert isinstance(recipe.tolerances[precision], Tolerance) and recipe.tolerances[precision].max_rel > 0
    trimmed = dataclasses.replace(recipe, tolerances={"fp32": recipe.tolerances["fp32"]})
    assert tolerance_for("int8", trimmed) == DEFAULT_TOLERANCES["int8"]
    with pytest.raises(ValueError, match="precision must be one of"):
        tolerance_for("fp8")


def test_judge_applies_every_limit():
    ref = synthetic_image(32, 32, 4)
    off = ref + 0.003  # PSNR 50.5 dB
    assert judge("a", ref, ref, Tolerance(60)).passed
    assert judge("a", ref, off, Tolerance(60)).failures == ["PSNR 50.46 dB < 60 dB"]
    assert judge("a", ref, off, Tolerance(45)).passed
    assert "max abs error" in judge("a", ref, off, Tolerance(45, max_abs=0.001)).failures[0]
    assert "relative error" in judge("a", ref, off, Tolerance(45, max_rel=1e-3)).failures[0]
    assert judge("a", ref, off, Tolerance(45, max_rel=1e-2)).passed
    assert "SSIM" in judge("a", ref, np.clip(ref + 0.1, 0, 1), Tolerance(0, ssim_min=0.999)).failures[0]
    assert "shapes differ" in judge("a", ref, ref[:, :16], Tolerance(0)).failures[0]
    nan = ref.copy()
    nan[0, 0, 0] = np.nan
    assert "NaN" in judge("a", ref, nan, Tolerance(0)).failures[0]
    target = np.clip(ref + 0.01, 0, 1)
    gt = judge("a", ref, off, Tolerance(45, gt_psnr_drop_max=0.01), target)
    assert gt.ground_truth["reference"]["psnr"] == pytest.approx(psnr(ref, target))
    assert gt.ground_truth["psnr_drop"] < 0 and gt.passed  # closer to the target here: no loss
    worse = judge("a", ref, ref - 0.01, Tolerance(0, gt_psnr_drop_max=1.0), target)
    assert "loses" in worse.failures[0]


def test_check_parity_and_reports(tmp_path):
    cases = [Case.from_chw(f"img{i}", synthetic_image(24, 40, i)) for i in range(3)]
    report = check_parity(lambda x: x * 0.5, lambda x: x * 0.5 + (x > 0.99) * 0.05, cases, Tolerance(60))
    assert [c.passed for c in report.cases] == [not (c.image > 0.99).any() for c in cases]
    assert not report.passed and report.summary()["failed"] == sum(not c.passed for c in report.cases)
    suite = ET.fromstring(junit_xml(report)).find("testsuite")
    assert int(suite.get("tests")) == 4 and int(suite.get("failures")) == report.summary()["failed"]
    write_json(report, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is False and len(data["cases"]) == 3
    assert "FAIL" in text_table(report).splitlines()[-1]

    nan = check_parity(lambda x: x, lambda x: x * np.nan, cases[:1], Tolerance(0))
    assert not nan.outputs_valid and not nan.passed
    # a batch is one case, run at once by both sides, with each side's time
    batch = Case("batch", np.stack([c.image[0] for c in cases]))
    seen = []
    two = check_parity(lambda x: seen.append(x.shape) or x, lambda x: x + 1e-3, [batch], Tolerance(60),
                       on_infer=lambda: seen.append("tick"))
    assert seen == [(3, 3, 24, 40), "tick", "tick"] and two.cases[0].shape == (3, 3, 24, 40)
    assert two.cases[0].parity["psnr"] == pytest.approx(60.0, abs=1e-3) and set(two.cases[0].seconds) == {"reference", "candidate"}
    with pytest.raises(ValueError, match="no images"):
        check_parity(lambda x: x, lambda x: x, [], Tolerance(0))


def test_latency_stats():
    stats = latency_stats([i / 1000 for i in range(1, 101)], batch=4)
    assert stats["mean_ms"] == pytest.approx(50.5) and stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p90_ms"] == pytest.approx(90.1) and stats["p99_ms"] == pytest.approx(99.01)
    assert stats["images_per_s"] == pytest.approx(4 * 100 / 5.05)
    with pytest.raises(ValueError):
        latency_stats([], 1)


def test_peak_rss_sees_an_allocation():
    # In a fresh process: in this one, memory freed by earlier tests may be resident already and
    # reused by the allocation without raising the peak.
    code = (
        "import numpy as np\n"
        "from ast_deploy.bench import peak_rss_bytes, reset_peak_rss\n"
        "ok = reset_peak_rss(); before = peak_rss_bytes()\n"
        "block = np.ones(64 * 2 ** 20, np.uint8)\n"
        "print(ok, (peak_rss_bytes() - before) / 2 ** 20)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    if out[0] != "True":
        pytest.skip("this kernel does not let a process reset its peak RSS")
    assert float(out[1]) >= 60
