import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from ast_deploy.checks.tolerances import DEFAULT_TOLERANCES
from ast_deploy.cli import bench, check, restore
from conftest import TINY_CONFIG
from runtime_helpers import checkpoint, damaged_copy, dynamic_onnx, have_tensorrt, static_onnx, torch_infer

CONFIG = json.dumps(TINY_CONFIG)
FP32_MIN = DEFAULT_TOLERANCES["fp32"].psnr_min  # ast-check's threshold without a task recipe


def psnr(a, b):  # written out here, independently of ast_deploy.checks
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def ort_infer(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})[0]


# ---------------------------------------------------------------- ast-check

def test_check_passes_a_correct_export(tmp_path, capsys):
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    code = check.main([str(checkpoint()), str(dynamic_onnx()), "--config", CONFIG, "--protocol", "pad:128",
                       "--sizes", "128x128,100x140", "--report", str(report), "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS" in out and "synthetic-100x140-seed1" in out
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["precision"] == "fp32" and data["tolerance"]["psnr_min"] == FP32_MIN
    assert [c["size"] for c in data["cases"]] == [[128, 128], [100, 140]]
    for case in data["cases"]:
        assert case["parity"]["psnr"] == "inf" or case["parity"]["psnr"] >= FP32_MIN
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == 3


def test_check_fails_a_damaged_export_with_the_right_numbers(tmp_path, capsys):
    from ast_deploy.checks.synthetic import synthetic_image

    bad = damaged_copy(dynamic_onnx(), tmp_path / "damaged.onnx")
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    code = check.main([str(checkpoint()), str(bad), "--config", CONFIG, "--protocol", "pad:128",
                       "--sizes", "128x128", "--seed", "7", "--report", str(report), "--junit", str(junit)])
    assert code == 1
    assert "FAIL" in capsys.readouterr().out
    (case,) = json.loads(report.read_text())["cases"]
    # The numbers in the report are those of the two models, computed here without ast_deploy.checks.
    x = synthetic_image(128, 128, 7)[None]
    want, got = torch_infer(x), ort_infer(bad, x)
    assert case["parity"]["psnr"] == pytest.approx(psnr(got, want), abs=1e-3)
    assert case["parity"]["max_abs"] == pytest.approx(float(np.abs(got - want).max()), rel=1e-4)
    assert case["parity"]["psnr"] < FP32_MIN and not case["passed"] and "PSNR" in case["failures"][0]
    suite = ET.parse(junit).getroot().find("testsuite")
    failure = suite.find("testcase[@name='synthetic-128x128-seed7 (128x128)']/failure")
    assert suite.get("failures") == "1" and f"< {FP32_MIN:g} dB" in failure.get("message")


def test_check_scores_both_sides_against_ground_truth(tmp_path):
    from ast_deploy.checks.synthetic import synthetic_image

    for sub in ("input", "target"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
    clean = synthetic_image(96, 128, 3)
    rainy = np.clip(clean + 0.1 * (np.arange(128) % 9 == 0), 0, 1)
    to8 = lambda a: Image.fromarray(np.round(a.transpose(1, 2, 0) * 255).astype(np.uint8))  # noqa: E731
    to8(rainy).save(tmp_path / "pairs" / "input" / "scene.png")
    to8(clean).save(tmp_path / "pairs" / "target" / "scene.png")
    report = tmp_path / "r.json"
    code = check.main([str(checkpoint()), str(dynamic_onnx()), "--config", CONFIG, "--protocol", "pad:128",
                       "--images", str(tmp_path / "pairs"), "--report", str(report)])
    assert code == 0
    (case,) = json.loads(report.read_text())["cases"]
    x = np.asarray(Image.open(tmp_path / "pairs" / "input" / "scene.png"), np.float32).transpose(2, 0, 1)[None] / 255
    target = np.asarray(Image.open(tmp_path / "pairs" / "target" / "scene.png"), np.float32).transpose(2, 0, 1) / 255
    padded = np.pad(x, ((0, 0), (0, 0), (0, 32), (0, 0)), mode="reflect")  # pad:128 on a 96 x 128 image
    restored = np.clip(torch_infer(padded)[0, :, :96], 0, 1)
    assert case["ground_truth"]["reference"]["psnr"] == pytest.approx(psnr(restored, target), abs=1e-3)
    assert abs(case["ground_truth"]["psnr_drop"]) < 1e-3


def test_check_usage_errors_exit_2(tmp_path, capsys):
    assert check.main([str(checkpoint()), str(tmp_path / "missing.onnx"), "--config", CONFIG]) == 2
    assert "missing.onnx: no such file" in capsys.readouterr().err
    assert check.main([str(checkpoint()), str(dynamic_onnx()), "--config", CONFIG, "--sizes", "12x"]) == 2
    assert "--sizes" in capsys.readouterr().err
    assert check.main([str(checkpoint()), str(dynamic_onnx()), "--images", str(tmp_path / "nope")]) == 2
    assert check.main([str(checkpoint()), str(dynamic_onnx()), "--config", "{not json"]) == 2
    with pytest.raises(SystemExit) as e:
        check.main([str(checkpoint())])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        check.main([str(checkpoint()), str(dynamic_onnx()), "--precision", "fp8"])
    assert e.value.code == 2


# ---------------------------------------------------------------- ast-restore

def test_restore_folder_with_a_broken_file(tmp_path, capsys):
    from ast_deploy.checks.synthetic import synthetic_image

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    pictures = {name: np.round(synthetic_image(64, 80, seed).transpose(1, 2, 0) * 255).astype(np.uint8)
                for seed, name in enumerate(["a", "c"])}
    for name, pixels in pictures.items():
        Image.fromarray(pixels).save(src / f"{name}.png")
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (src / "notes.txt").write_text("ignored: not an image suffix")

    code = restore.main([str(src), "-o", str(out), "--onnx", str(dynamic_onnx()), "--protocol", "pad:128"])
    err = capsys.readouterr().err
    assert code == 1
    assert "restored 2 image(s)" in err and "1 failed" in err and "b.png" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    for name, pixels in pictures.items():
        x = pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255
        padded = np.pad(x, ((0, 0), (0, 0), (0, 64), (0, 48)), mode="reflect")
        want = np.round(np.clip(torch_infer(padded)[0, :, :64, :80], 0, 1) * 255).transpose(1, 2, 0)
        got = np.asarray(Image.open(out / f"{name}.png")).astype(np.int16)
        assert np.abs(got - want).max() <= 1

    # An existing output is kept unless --force; a glob picks files too.
    sentinel = Image.fromarray(np.zeros((64, 80, 3), np.uint8))
    sentinel.save(out / "a.png")
    assert restore.main([str(src / "a.*"), "-o", str(out), "--onnx", str(dynamic_onnx())]) == 0
    assert "skipped 1" in capsys.readouterr().out
    assert np.asarray(Image.open(out / "a.png")).max() == 0
    assert restore.main([str(src / "a.png"), "-o", str(out), "--onnx", str(dynamic_onnx()), "--force",
                         "--side-by-side"]) == 0
    assert np.asarray(Image.open(out / "a.png")).shape == (64, 160, 3)


def test_restore_usage(tmp_path, capsys):
    assert restore.main([str(tmp_path), "-o", str(tmp_path / "o"), "--engine", str(tmp_path / "none.plan")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # two sources
        restore.main(["x.png", "-o", "o", "--onnx", "a.onnx", "--weights", "w.pth"])
    assert e.value.code == 2
    code = restore.main([str(tmp_path / "missing.png"), "-o", str(tmp_path / "o"), "--onnx", str(static_onnx())])
    assert code == 1 and "missing.png: no such file or folder" in capsys.readouterr().err
    if not have_tensorrt():
        (tmp_path / "m.plan").write_bytes(b"not an engine")
        assert restore.main([str(tmp_path), "-o", str(tmp_path / "o"), "--engine", str(tmp_path / "m.plan")]) == 2
        assert "TensorRT is not installed" in capsys.readouterr().err


# ---------------------------------------------------------------- ast-bench

def test_bench_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main([str(static_onnx()), str(checkpoint()), "--config", CONFIG, "--sizes", "128x128",
                       "--runs", "3", "--warmup", "1", "--batch", "2", "--json", str(out)])
    table = capsys.readouterr().out
    assert code == 0
    header, *rows = table.strip().splitlines()
    assert header.split()[:4] == ["source", "size", "batch", "mean"] and len(rows) == 2
    results = json.loads(out.read_text())
    assert [r["source"] for r in results] == [str(static_onnx()), str(checkpoint())]
    for r in results:
        assert r["runs"] == 3 and r["batch"] == 2 and r["size"] == "128x128"
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["images_per_s"] > 0 and r["peak_rss_mb"] > 50
    # runtime auto (the default) names what it chose; under the suite's AST_RUNTIME=onnxruntime, ONNX Runtime
    assert results[0]["backend"].startswith(("onnxruntime[CPU]", "openvino[CPU"))
    assert results[0]["runtime"] == results[0]["runtime_choice"]["runtime"]


def test_bench_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main([str(static_onnx()), "--runs", "0"])
    assert e.value.code == 2
    assert bench.main([str(tmp_path / "x.onnx")]) == 2


def test_check_tiles_both_sides_alike():
    """A candidate that takes only 128 x 128 tiles a 100 x 140 image; the reference must run the same
    tiles, or tiling differences would fail a correct model."""
    from ast_deploy import Runner

    reference = Runner(checkpoint(), config=TINY_CONFIG, protocol="pad:128")
    candidate = Runner(static_onnx(), protocol="pad:128")
    ref_fn, cand_fn = check.paired(reference, candidate)
    x = np.random.default_rng(0).random((1, 3, 100, 140), dtype=np.float32)
    assert str(candidate.protocol_for(100, 140)) == "tiles:128:32:feather:grid128"  # tiled to fit: feathered
    np.testing.assert_allclose(cand_fn(x), ref_fn(x), rtol=0, atol=1e-5)
    assert np.abs(reference(x) - cand_fn(x)).max() > 1e-3  # what an unpaired comparison would see


# ---------------------------------------------------------------- on a TensorRT machine with a GPU

@pytest.mark.tensorrt
@pytest.mark.gpu
def test_check_and_bench_a_tensorrt_engine(tmp_path, capsys):
    from ast_deploy.engines import build_engine

    shapes = "1x3x128x128:1x3x128x128:2x3x256x256"
    good = build_engine(dynamic_onnx(), tmp_path / "good.plan", shapes=shapes, plugins="off")
    bad = build_engine(damaged_copy(dynamic_onnx(), tmp_path / "bad.onnx"), tmp_path / "bad.plan", shapes=shapes,
                       plugins="off")
    common = ["--config", CONFIG, "--protocol", "pad:128", "--sizes", "128x128,100x140,300x200"]
    assert check.main([str(checkpoint()), str(good), *common]) == 0  # 300 x 200 runs as tiles on both sides
    assert check.main([str(checkpoint()), str(bad), *common]) == 1
    out = tmp_path / "bench.json"
    assert bench.main([str(good), "--sizes", "256x256", "--runs", "3", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["backend"] == "tensorrt:good.plan" and row["peak_gpu_mb"] > 0
