"""ast-restore --server URL on a clip: the frames go through a real Triton Inference Server (the
served demo model of tests/test_serving.py) and come out as the local Runner restores them (slow:
the server takes a minute or more to start)."""

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV is not installed (pip install -e '.[video]')")
pytest.importorskip("tritonclient", reason="tritonclient is not installed (pip install -e '.[serving]')")

from test_serving import demo_onnx, local, served, server_env  # noqa: E402,F401  (the fixtures)
from video_helpers import make_clip, read_clip, to_rgb  # noqa: E402

from ast_deploy.cli import restore  # noqa: E402


@pytest.mark.slow
def test_a_clip_restored_through_the_server_equals_the_local_runner(served, local, tmp_path):  # noqa: F811
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=3, size=(128, 160), codec="ffv1", pix_fmt="yuv444p", audio=True, options={"g": "1"})
    out = tmp_path / "out"
    assert restore.main([str(src), "-o", str(out), "--server", f"{served['grpc']}/derain", "--codec", "ffv1",
                         "-q"]) == 0
    a, b = read_clip(src), read_clip(out / "clip.mkv")
    assert b["times"] == a["times"] and b["audio"] == a["audio"]
    for fa, fb in zip(a["frames"], b["frames"]):
        want = np.clip(local.run_nchw(to_rgb(fa)[None])[0], 0, 1)
        assert np.abs(to_rgb(fb) - want).max() < 3 / 255
