"""The one comparison adapter: each side of a parity check (a function of an NCHW batch) as a
Polygraphy runner, so Polygraphy's Comparator runs them (one after the other, each activated once),
times them and validates their outputs (NaN / Inf). Used by ast-check and by ast-export's
validation alike."""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from typing import Callable

import numpy as np

INPUT, OUTPUT = "image", "restored"


def function_runner(fn: Callable[[np.ndarray], np.ndarray], name: str, on_infer: Callable[[], None] | None = None):
    """A Polygraphy ``BaseRunner`` over ``fn``: float32 [N, 3, H, W] in [0, 1] -> the same kind;
    ``on_infer`` is called after every inference (a progress tick)."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType

    class FunctionRunner(BaseRunner):
        def activate_impl(self):
            pass

        def deactivate_impl(self):
            pass

        def get_input_metadata_impl(self):
            return TensorMetadata().add(INPUT, DataType.FLOAT32, (-1, 3, -1, -1))

        def infer_impl(self, feed_dict):
            start = time.perf_counter()
            out = np.asarray(fn(feed_dict[INPUT]), dtype=np.float32)
            self.inference_time = time.perf_counter() - start
            if on_infer is not None:
                on_infer()
            return OrderedDict([(OUTPUT, out)])

    return FunctionRunner(name=name)


@contextlib.contextmanager
def _numpy_only_results():
    """Polygraphy's ``IterationResult`` asks whether outputs are torch tensors to size them, and that
    question imports torch (slow, and the ONNX / TensorRT paths must not need it): with a swap
    threshold set (one no output reaches), the question is never asked. Restored afterwards."""
    from polygraphy import config

    saved = config.ARRAY_SWAP_THRESHOLD_MB
    config.ARRAY_SWAP_THRESHOLD_MB = 1 << 40 if saved < 0 else saved
    try:
        yield
    finally:
        config.ARRAY_SWAP_THRESHOLD_MB = saved


def run_both(reference: Callable, candidate: Callable, batches: list[np.ndarray],
             on_infer: Callable[[], None] | None = None):
    """Run both sides on every NCHW batch; return (reference outputs, candidate outputs, outputs
    valid?, {"reference": [seconds per batch], "candidate": [...]})."""
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    runners = [function_runner(reference, "reference", on_infer), function_runner(candidate, "candidate", on_infer)]
    feeds = [OrderedDict([(INPUT, np.ascontiguousarray(batch, dtype=np.float32))]) for batch in batches]
    with G_LOGGER.verbosity(G_LOGGER.WARNING), _numpy_only_results():  # Polygraphy logs every activation at INFO
        results = Comparator.run(runners, data_loader=feeds)
        valid = Comparator.validate(results, check_inf=True, check_nan=True)
    outputs = {name: [np.asarray(it[OUTPUT]) for it in iterations] for name, iterations in results.items()}
    times = {name: [it.runtime for it in iterations] for name, iterations in results.items()}
    return outputs["reference"], outputs["candidate"], bool(valid), times
