"""One Runner shared by 8 threads on each CPU backend gives what one thread gives (issue 24.6).

The threads start together on a Runner that has not run yet (its first plan and memory probe happen
under contention), each with a photo of its own size; the reference is a fresh Runner of the same
model called from one thread."""

import threading

import numpy as np
import pytest

from ast_deploy.demo import demo_weights
from ast_deploy.runner import Runner
from runtime_helpers import dynamic_onnx

THREADS = 8


def _photos(multiple: int):
    """One photo per thread, of sizes that pad to one or two model tiles (kept small: 2-core CI)."""
    rng = np.random.default_rng(6)
    sizes = [(multiple, multiple), (multiple - 9, multiple), (multiple, multiple - 20), (multiple // 2, multiple)]
    return [rng.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8) for i in range(THREADS)]


def _shared_runs(runner: Runner, photos) -> list:
    results = [None] * THREADS
    start = threading.Barrier(THREADS)

    def work(i):
        start.wait()
        results[i] = runner(photos[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_eight_threads_on_one_runner_equal_one_thread(backend):
    """PyTorch: the demo checkpoint (size multiple 64), under the automatic budget (its first call
    measures the cost); ONNX Runtime: the tiny dynamic ONNX (128), budget off."""
    def open_runner():
        if backend == "pytorch":
            return Runner(demo_weights(), task="derain", protocol="pad:64")
        return Runner(dynamic_onnx(), protocol="pad:128", max_memory="unlimited")  # no probe at 256 on CI

    photos = _photos(64 if backend == "pytorch" else 128)
    shared = _shared_runs(open_runner(), photos)
    single = open_runner()
    for got, photo in zip(shared, photos):
        assert got.dtype == photo.dtype and got.shape == photo.shape
        np.testing.assert_array_equal(got, single(photo))
