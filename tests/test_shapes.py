"""One parser and one spelling of sizes: HxW, HxW,HxW and BxCxHxW profiles."""

import pytest

from ast_deploy import metadata
from ast_deploy.shapes import (ProfileError, ShapeProfile, format_shape_range, format_size, parse_shape, parse_size,
                               parse_sizes, shape_in_range)


def test_parse_size_and_sizes():
    assert parse_size("512x384") == (512, 384)
    assert parse_size(" 128 X 256 ") == (128, 256)
    assert format_size(parse_size("100x140")) == "100x140"
    assert parse_sizes("256x256, 100X140") == [(256, 256), (100, 140)]
    assert parse_sizes("128x128,") == [(128, 128)]


@pytest.mark.parametrize("bad", ["0x0", "0x128", "-128x128", "128x-1", "garbage", "128", "128x128x3", "ax5", "",
                                 "1.5x2", "128x"])
def test_parse_size_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="write HxW"):
        parse_size(bad)


def test_parse_sizes_rejects_lists_with_a_bad_size_or_none():
    with pytest.raises(ValueError, match="'8x8'.*at least 16"):
        parse_sizes("256x256,8x8", min_side=16)
    assert parse_sizes("16x16", min_side=16) == [(16, 16)]
    with pytest.raises(ValueError, match="no sizes given"):
        parse_sizes(" , ")
    with pytest.raises(ValueError, match="'0x4'"):
        parse_sizes("4x4,0x4")


def test_parse_shape_shares_the_parser():
    assert parse_shape("1x3x512x512") == (1, 3, 512, 512)
    for bad in ("1x3x512", "0x3x128x128", "1x3x-1x128", "1x3xAx128"):
        with pytest.raises(ProfileError, match="BxCxHxW"):
            parse_shape(bad)
    assert ShapeProfile.parse("1x3x128x128:1x3x256x256:2x3x512x512").shape_range == ((1, 128, 128), (2, 512, 512))


def test_shape_range():
    rng = ((1, 128, 128), (4, None, 512))
    assert shape_in_range((4, 4096, 512), rng) and not shape_in_range((5, 128, 128), rng)
    assert not shape_in_range((1, 128, 640), rng) and not shape_in_range((1, 64, 128), rng)
    assert format_shape_range(rng) == "batch 1..4, H 128..any, W 128..512"
    assert format_shape_range(((2, 256, 256), (2, 256, 256))) == "batch 2, H 256, W 256"


def test_metadata_keys_and_readers():
    assert metadata.export_metadata(64, "derain") == {"ast.size_multiple": "64", "ast.task": "derain"}
    assert metadata.export_metadata(128) == {"ast.size_multiple": "128"}
    assert metadata.size_multiple({}) == metadata.DEFAULT_SIZE_MULTIPLE == 128
    assert metadata.size_multiple({"ast.size_multiple": "256"}) == 256
    assert metadata.task({"ast.task": "dehaze"}) == "dehaze" and metadata.task({}) is None
    for bad in ("0", "-3", "abc"):
        with pytest.raises(ValueError, match="ast.size_multiple"):
            metadata.size_multiple({"ast.size_multiple": bad})
