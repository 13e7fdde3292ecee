"""Running an ONNX model imports no PyTorch: the Runner (on ONNX Runtime and, where installed,
OpenVINO), ast-restore, ast-check and ast-bench on .onnx files, in a fresh interpreter; afterwards no torch module may be in ``sys.modules``."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from runtime_helpers import dynamic_onnx, static_onnx

SCRIPT = r'''
import json, sys

import numpy as np
from PIL import Image

from ast_deploy import Runner
from ast_deploy.cli import bench, check, restore

dynamic, static, photo, out = sys.argv[1:5]
runner = Runner(dynamic)
assert runner(np.zeros((100, 140, 3), np.uint8)).shape == (100, 140, 3)
assert runner(Image.open(photo)).size == (96, 80)
assert runner(np.zeros((2, 3, 128, 128), np.float32)).shape == (2, 3, 128, 128)
try:
    import openvino  # noqa: F401  (the OpenVINO backend, its graph rewrite included, needs no torch either)
except ImportError:
    pass
else:
    assert Runner(dynamic, runtime="openvino")(np.zeros((1, 3, 128, 128), np.float32)).shape == (1, 3, 128, 128)
codes = [restore.main([photo, "-o", out, "--onnx", dynamic]),
         check.main([dynamic, static, "--sizes", "128x128"]),
         bench.main([static, "--sizes", "128x128", "--runs", "1", "--warmup", "0"])]
print(json.dumps({"codes": codes, "loaded": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}))
'''


def test_running_onnx_models_never_imports_torch(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(photo)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(dynamic_onnx()), str(static_onnx()), str(photo),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 0], proc.stderr[-3000:]
    assert (tmp_path / "out" / "photo.png").is_file()
    assert result["loaded"] == [], result
