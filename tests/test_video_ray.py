"""ast-restore --ray on clips: each clip split across two workers at segment boundaries and joined
by the driver, byte for byte the file the single-process run writes (slow: a local Ray cluster
takes seconds to start and about 1 GB)."""

import pytest

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install -e '.[ray]')")
pytest.importorskip("av", reason="PyAV is not installed (pip install -e '.[video]')")

from video_helpers import conv_onnx, make_clip  # noqa: E402

from ast_deploy.cli import restore  # noqa: E402


def _packets(path):
    import av

    with av.open(str(path)) as c:
        return [(p.stream.index, p.pts, p.dts, bytes(p)) for p in c.demux() if p.size]


@pytest.mark.slow
def test_a_clip_split_across_ray_workers_equals_the_single_process_file(tmp_path, capsys):
    src = tmp_path / "clips"
    src.mkdir()
    make_clip(src / "a.mp4", frames=14, audio=True, vfr=True)
    make_clip(src / "b.mkv", frames=6, audio=False, seed=2)
    model = ["--onnx", str(conv_onnx(str(tmp_path))), "--gop", "4", "-q"]
    assert restore.main([str(src), "-o", str(tmp_path / "one"), *model]) == 0
    assert restore.main([str(src), "-o", str(tmp_path / "ray"), *model, "--ray", "local", "--workers", "2"]) == 0
    assert (tmp_path / "ray" / "a.mp4").read_bytes() == (tmp_path / "one" / "a.mp4").read_bytes()
    # Matroska writes a random segment UID: the same packets, timestamps and tracks
    assert _packets(tmp_path / "ray" / "b.mkv") == _packets(tmp_path / "one" / "b.mkv")
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["a.mp4", "b.mkv"]  # no work folder left
