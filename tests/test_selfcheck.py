"""A plan that checks itself (issue 21): each batch's real peak against the budget, allocation
failures retried smaller, a cost cache that is checked and never trusted blindly, and CUDA
queries that fail loudly."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from ast_deploy import budget
from ast_deploy.budget import MiB, BudgetError, BudgetWarning, Cost
from runtime_helpers import dynamic_onnx

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def own_cost_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AST_DEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(budget, "_MEMO", {})
    return tmp_path / "cache" / "cost.json"


def _budget_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]


# ---------------------------------------------------------------- a batch over budget re-plans

def test_a_batch_over_budget_corrects_the_cost_and_replans_the_rest_of_the_photo(own_cost_cache):
    """The runner's cost cut to 1/8 in memory (so the cache check cannot help): the first tile
    uses about 8x its plan; the measured peak corrects the cost (memory and disk), the photo is
    re-planned with smaller tiles and says so, and every later call fits the budget."""
    from ast_deploy import Runner

    runner = Runner(dynamic_onnx(), max_memory="64M")
    true = runner.cost
    runner._cost = Cost(true.bytes_per_pixel / 8, true.constant / 8)
    first = runner.plan_for(512, 640)
    shapes = []
    infer = runner.backend.infer
    runner.backend.infer = lambda b: (shapes.append(b.shape), infer(b))[1]
    x = np.random.default_rng(0).random((1, 3, 512, 640), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = runner(x)
    said = [m for m in _budget_warnings(caught) if "re-planned" in m]
    assert len(said) == 1 and "over the memory budget of 64MiB" in said[0], _budget_warnings(caught)
    final = runner.plan_for(512, 640)
    assert final.protocol.tile_h * final.protocol.tile_w < first.protocol.tile_h * first.protocol.tile_w
    assert shapes[0][2:] == (first.protocol.tile_h, first.protocol.tile_w)
    assert all(s[2:] == (final.protocol.tile_h, final.protocol.tile_w) for s in shapes[1:])
    assert runner.cost.bytes_per_pixel > true.bytes_per_pixel / 2  # corrected from the 1/8
    assert json.loads(own_cost_cache.read_text())["entries"]  # and written to the cache
    assert out.shape == x.shape and np.isfinite(out).all()


PEAK_SCRIPT = r"""
import json, sys, warnings
import numpy as np
from ast_deploy import Runner
from ast_deploy.budget import current_rss, peak_rss, release_memory, reset_peak
runner = Runner(sys.argv[1], max_memory=sys.argv[2])  # its default protocol, pad:128: re-planned
if sys.argv[3] == "probe":
    runner.limits()  # the cost: a probe (256 x 256, beyond this budget) written to the cache
    sys.exit(0)
photo = np.random.default_rng(0).integers(0, 256, (512, 768, 3), dtype=np.uint8)
release_memory()
baseline = current_rss()
reset_peak()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = runner(photo)  # the cost read from the cache and checked, then the plan runs
# the peak of this process since the reset: VmHWM, with the marks the Runner moved (bench.rebase_peak_rss)
print(json.dumps({"baseline": baseline, "peak": peak_rss(), "warnings": [str(w.message) for w in caught],
                  "shape": list(out.shape), "note": runner.tiling_note()}))
"""

SLACK = 8 * MiB  # allocator and interpreter noise above budget + the photo's own buffers (measured: < 0)


def test_peak_within_budget_with_the_cached_cost_cut_to_an_eighth(tmp_path, own_cost_cache):
    """A 0.4 MP photo whose whole run needs about 1 GiB, under a 64 MiB budget, in its own process,
    with the cost cache's entry cut to 1/8: the run reports the correction and its real peak (VmHWM
    above the baseline after loading, the cost check included) stays within budget + the photo's
    buffers + 8 MiB. Measured here: 54.6 MiB above the baseline; a planner that allows twice the
    budget peaks above this bound, and so does a cache trusted unchecked."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "AST_DEPLOY_CACHE": str(own_cost_cache.parent)}
    run = [sys.executable, "-c", PEAK_SCRIPT, str(dynamic_onnx()), "64M"]
    probe = subprocess.run(run + ["probe"], capture_output=True, text=True, env=env, timeout=600)
    assert probe.returncode == 0, probe.stderr
    cache = json.loads(own_cost_cache.read_text())
    for entry in cache["entries"].values():
        entry["bytes_per_pixel"] /= 8
        entry["constant"] /= 8
    own_cost_cache.write_text(json.dumps(cache))
    result = subprocess.run(run + ["run"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["shape"] == [512, 768, 3] and "ran as tiles" in data["note"]
    assert any("under-estimates" in w and "corrected" in w for w in data["warnings"]), data["warnings"]
    photo_buffers = 2 * 512 * 768 * 3 + 4 * 3 * 256 * 768  # uint8 input and output, a float32 band of rows
    assert data["peak"] - data["baseline"] <= 64 * MiB + photo_buffers + SLACK, data


# ---------------------------------------------------------------- allocation failures

ALLOC_SCRIPT = r"""
import resource, sys, warnings
import numpy as np
from ast_deploy import Runner
default = Runner(sys.argv[1], max_memory="unlimited")  # pad:128, the model's default: may be re-planned
named = Runner(sys.argv[1], max_memory="unlimited", protocol="pad:128")
x = np.random.default_rng(0).random((1, 3, 512, 768), dtype=np.float32)
for runner in (default, named):
    runner(x[:, :, :128, :128])  # sessions and libraries loaded before the limit
with open("/proc/self/status") as f:
    size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[2]) * 2 ** 20, resource.RLIM_INFINITY))
warnings.simplefilter("always")
for name, runner in (("default", default), ("named", named)):
    try:
        out = runner(x)
        print(name, "OK", out.shape, runner.tiling_note())
    except MemoryError as e:
        print(name, "FAILED", type(e).__name__, e)
"""


def test_allocation_failure_is_retried_at_half_the_tile_area_then_fails_the_photo():
    """A real allocation failure of ONNX Runtime (the address space capped with RLIMIT_AS below the
    whole 512 x 768 run, about 1.1 GiB): the default protocol is retried once as tiles of at most half
    the area (384 x 384), then finishes or fails with one clear MemoryError (AllocationError): whether
    the retry fits depends on what ONNX Runtime's arena kept of the failed run (both were seen here);
    a named protocol is not re-planned: the photo fails at once."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", ALLOC_SCRIPT, str(dynamic_onnx()), "900"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "retrying as tiles:384:32:feather:grid128 (batch 1)" in out, out
    assert ("default OK (1, 3, 512, 768)" in out or "default FAILED AllocationError out of memory running the "
            "512x768 photo as tiles:384:32:feather:grid128 (batch 1) after a smaller retry" in out), out
    assert "named FAILED AllocationError out of memory running the 512x768 photo as pad:128 (batch 1) (" in out, out
    assert "Failed to allocate" in out


# ---------------------------------------------------------------- the cost cache

@pytest.mark.parametrize("content", ["{not json", '["a", "list"]', '{"format": "someone else", "entries": {}}',
                                     "BAD_ENTRY"])
def test_corrupt_or_foreign_cache_is_ignored_with_a_warning(own_cost_cache, content):
    """Never trusted, never a crash: the probe measures, says so once, and the file is rewritten in
    this cache's format; a malformed entry under the right key is not used either."""
    from ast_deploy.backends import open_backend

    backend = open_backend(dynamic_onnx())
    key = budget.backend_identity(backend)
    if content == "BAD_ENTRY":
        content = json.dumps({"format": budget.CACHE_FORMAT, "version": budget.COST_FORMAT,
                              "entries": {key: {"bytes_per_pixel": -1.0, "constant": "lots"}}})
    own_cost_cache.parent.mkdir(parents=True)
    own_cost_cache.write_text(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cost = budget.measure_cost(backend)
    said = _budget_warnings(caught)
    assert len(said) == 1 and str(own_cost_cache) in said[0] and "ignored" in said[0], said
    assert cost.source == "probe" and cost.bytes_per_pixel > 100
    data = json.loads(own_cost_cache.read_text())
    assert data["format"] == budget.CACHE_FORMAT and data["entries"][key]["bytes_per_pixel"] == cost.bytes_per_pixel


def test_cache_key_holds_what_changes_the_cost(tmp_path):
    """Model file content, backend, runtime and its version, device, threads: changing any of the
    model's bytes or the thread count gives another key."""
    import shutil

    import onnxruntime

    from ast_deploy.backends.onnxrt import OnnxRuntimeBackend

    one = budget.backend_identity(OnnxRuntimeBackend(dynamic_onnx(), providers="cpu", intra_op_threads=1))
    two = budget.backend_identity(OnnxRuntimeBackend(dynamic_onnx(), providers="cpu", intra_op_threads=2))
    copy = tmp_path / "m.onnx"
    shutil.copy(dynamic_onnx(), copy)
    with open(copy, "ab") as f:
        f.write(b"\0")  # one more byte: another file content
    assert one != two and "t1" in one and "t2" in two
    assert f"onnxruntime-{onnxruntime.__version__}" in one and "CPUExecutionProvider" in one
    assert budget.file_digest(copy) != budget.file_digest(dynamic_onnx()) and budget.file_digest(dynamic_onnx()) in one


# ---------------------------------------------------------------- CUDA queries that fail

def test_failed_cuda_query_is_an_error_not_the_cpu_rule(monkeypatch):
    """The automatic budget of a CUDA device whose free memory cannot be read is a BudgetError naming
    the reason, never the CPU's min(2 GiB, RAM / 4)."""
    def broken(index=0):
        raise RuntimeError("cudaMemGetInfo: cudaErrorUnknown")

    monkeypatch.setattr(budget, "query_cuda_free", broken)
    with pytest.raises(BudgetError, match="cannot read the free memory of cuda:1 .*cudaErrorUnknown.*--max-memory"):
        budget.default_budget("cuda:1")
    assert budget.resolve_budget("2G", "cuda:1") == 2 * 2 ** 30  # an explicit budget needs no query
    assert budget.default_budget("cpu") <= budget.CPU_CAP


@pytest.mark.skipif(budget.cuda_free_memory() is not None, reason="this machine can query a CUDA device")
def test_cuda_query_on_a_machine_without_cuda_says_why():
    """The real call path here (no CUDA device, no cuda-python or no driver): a BudgetError with the
    reasons, and the engine target's GPU description warns with each query's failure."""
    from ast_deploy.engines.target import describe_gpu

    with pytest.raises(BudgetError, match="cannot read the free memory of cuda "):
        budget.default_budget("cuda")
    with pytest.warns(RuntimeWarning, match="cannot identify CUDA device 0 .*CUDA driver: .*nvidia-smi: "):
        assert describe_gpu(0) == ("unknown", "unknown")


# ---------------------------------------------------------------- the served core checks itself

class _Log:
    def __init__(self):
        self.lines = []

    def log_warn(self, line):
        self.lines.append(line)


def test_served_core_corrects_an_under_estimated_cost_and_shrinks_its_chunks():
    """The core model's own check (serving.core), with a real ONNX Runtime backend and the resident
    set measured as in the server: with its cost cut to 1/8, a batch of four 128x128 images runs in
    chunks of two, the first peaks far over the prediction and corrects the cost (logged), and the
    images after it run one by one; each image gets its share of its chunk's peak; the output is the
    network's."""
    from types import SimpleNamespace

    from ast_deploy.backends import open_backend
    from ast_deploy.memcheck import OVERRUN, RssMeter
    from ast_deploy.serving.core import CoreModel

    backend = open_backend(str(dynamic_onnx()), providers="cpu")
    true = budget.measure_cost(backend, use_cache=False)
    cut = Cost(true.bytes_per_pixel / 8, true.constant / 8, "cut")
    core = object.__new__(CoreModel)
    core.backend, core.meter, core.model_name = backend, RssMeter(), "derain_core"
    core.pb = SimpleNamespace(Logger=_Log())
    core.cost, core.budget = cut, cut.of(2, 128, 128) * 1.01  # the cut cost holds two images per call
    x = np.random.default_rng(0).random((4, 3, 128, 128), dtype=np.float32)
    out, shares = core._run_group(x)
    assert np.abs(out - backend.infer(x)).max() < 1e-5
    (line,) = core.pb.Logger.lines
    assert "a batch of 2 x 128x128 used" in line and "cost corrected" in line, line
    assert core.cost.of(1, 128, 128) > OVERRUN * cut.of(1, 128, 128)
    assert core._chunk(128, 128) == 1  # the images after the first chunk ran one by one
    assert len(shares) == 4 and all(s is not None and s > 0 for s in shares)
    assert shares[0] == shares[1] and shares[0] * 2 > OVERRUN * cut.of(2, 128, 128)
