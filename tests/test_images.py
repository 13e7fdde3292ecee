import warnings

import numpy as np
import pytest
from PIL import Image

from ast_deploy.images import ImageError, quantize, read_image, restore_file, write_png


@pytest.fixture()
def rgb8():
    return np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)


def test_png_jpeg_tiff_8bit(tmp_path, rgb8):
    Image.fromarray(rgb8).save(tmp_path / "a.png")
    Image.fromarray(rgb8).save(tmp_path / "a.tif")
    Image.fromarray(rgb8).save(tmp_path / "a.jpg", quality=95)
    for name in ("a.png", "a.tif"):
        image = read_image(tmp_path / name)
        assert image.bit_depth == 8
        np.testing.assert_array_equal(np.round(image.pixels * 255).astype(np.uint8), rgb8)
    jpeg = read_image(tmp_path / "a.jpg")
    np.testing.assert_array_equal(np.round(jpeg.pixels * 255).astype(np.uint8), np.asarray(Image.open(tmp_path / "a.jpg")))


def test_16bit_png_and_tiff_keep_their_precision(tmp_path):
    import tifffile

    rgb16 = np.random.default_rng(1).integers(0, 65536, (30, 20, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", rgb16, photometric="rgb")
    write_png(tmp_path / "a.png", rgb16)
    for name in ("a.tif", "a.png"):
        image = read_image(tmp_path / name)
        assert image.bit_depth == 16
        np.testing.assert_array_equal(np.round(image.pixels * 65535).astype(np.uint16), rgb16)


def test_gray_and_rgba_convert_with_warnings(tmp_path, rgb8):
    Image.fromarray(rgb8[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb8, rgb8[..., :1]])).save(tmp_path / "rgba.png")
    with pytest.warns(UserWarning, match="grayscale"):
        gray = read_image(tmp_path / "gray.png")
    assert gray.pixels.shape == (40, 60, 3) and np.array_equal(gray.pixels[..., 0], gray.pixels[..., 2])
    with pytest.warns(UserWarning, match="alpha"):
        rgba = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(np.round(rgba.pixels * 255).astype(np.uint8), rgb8)


def test_unsupported_and_broken_images_are_clear_errors(tmp_path, rgb8):
    Image.fromarray(rgb8).convert("CMYK").save(tmp_path / "cmyk.jpg")  # converted, with a note
    with pytest.warns(UserWarning, match="CMYK converted to RGB without a colour profile"):
        assert read_image(tmp_path / "cmyk.jpg").pixels.shape == (*rgb8.shape[:2], 3)
    Image.fromarray(rgb8).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "broken.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="broken.png"):
        read_image(tmp_path / "broken.png")
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(ImageError, match="cannot be read"):
        read_image(tmp_path / "notes.jpg")


def test_write_is_atomic(tmp_path, rgb8, monkeypatch):
    import png

    target = tmp_path / "out.png"
    write_png(target, rgb8)
    before = target.read_bytes()

    def write_half_then_fail(self, f, rows):
        f.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(png.Writer, "write", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_png(target, rgb8[::-1])
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_restore_file(tmp_path, rgb8, tiny_model):
    from ast_deploy import Runner

    Image.fromarray(rgb8).save(tmp_path / "in.png")
    runner = Runner(tiny_model, protocol="pad:128")
    out = restore_file(tmp_path / "in.png", tmp_path / "out" / "in.png", runner, side_by_side=True)
    restored = np.asarray(Image.open(out))
    assert restored.shape == (40, 120, 3)
    np.testing.assert_array_equal(restored[:, :60], rgb8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = runner(rgb8)
    assert np.abs(restored[:, 60:].astype(int) - expected).max() <= 1


def test_16bit_outputs_are_written_at_16bit_precision(tmp_path):
    """Closed form: the floats k / 65535 quantize to k for every 16-bit k, and the 16-bit PNG written
    from them reads back (pypng) as k; an 8-bit detour would keep 256 of the 65536 values."""
    import png

    k = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    pixels = np.repeat((k.astype(np.float64) / 65535).astype(np.float32)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(quantize(pixels, 16), np.repeat(k[..., None], 3, axis=-1))
    write_png(tmp_path / "ramp.png", pixels, 16)
    width, height, rows, info = png.Reader(filename=str(tmp_path / "ramp.png")).asDirect()
    assert info["bitdepth"] == 16 and (width, height) == (256, 256)
    read = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(256, 256, 3)
    np.testing.assert_array_equal(read[..., 1], k)
