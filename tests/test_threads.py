"""One Runner shared by 8 threads on each CPU backend gives what one thread gives (issue 24.6).

The threads start together on a Runner that has not run yet (its first plan and memory probe happen
under contention), each with photos of its own sizes, whole and tiled; the reference is a fresh
Runner of the same model called from one thread."""

import threading

import numpy as np
import pytest

from ast_deploy.runner import Runner
from runtime_helpers import dynamic_onnx, image_model

THREADS = 8
SIZES = [(128, 128), (100, 150), (130, 90), (64, 200)]


def _photos(seed: int):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in SIZES[seed % 2 :: 2]]


def _shared_runs(runner: Runner) -> list:
    results = [None] * THREADS
    start = threading.Barrier(THREADS)

    def work(i):
        start.wait()
        results[i] = [runner(photo) for photo in _photos(i)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
@pytest.mark.parametrize("tile", [None, "128:32"])
def test_eight_threads_on_one_runner_equal_one_thread(backend, tile):
    def open_runner():
        source = image_model() if backend == "pytorch" else dynamic_onnx()
        return Runner(source, protocol="pad:128", tile=tile)

    shared = _shared_runs(open_runner())
    single = open_runner()
    for i in range(THREADS):
        for got, photo in zip(shared[i], _photos(i)):
            want = single(photo)
            assert got.dtype == photo.dtype and got.shape == photo.shape
            np.testing.assert_array_equal(got, want)
