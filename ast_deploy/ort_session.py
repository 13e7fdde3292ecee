"""Opening an ONNX Runtime session: the one place its options and its log level are set.

Used by the ONNX Runtime backend (``backends/onnxrt.SessionFromOnnx``), by the parity checks of
``ast-export`` (``checks/export_check``) and by the FP16 / INT8 conversion (``precision``). Ground
floor: imports nothing of the package, and onnxruntime only when a session is opened.
"""

from __future__ import annotations

import contextlib
import os

ORT_ERROR, ORT_WARNING = 3, 2  # onnxruntime log severities; 2 is its default
CPU = ("CPUExecutionProvider",)


@contextlib.contextmanager
def quiet_ort_logging(ort):
    """A missing CUDA / TensorRT library makes session creation log a long list of load failures
    before it falls back to the CPU (reported by the caller), and constant folding logs FP16 ops the
    CPU has no kernel for: errors only while a session is made."""
    ort.set_default_logger_severity(ORT_ERROR)
    try:
        yield
    finally:
        ort.set_default_logger_severity(ORT_WARNING)


def session_options(ort, *, optimize: bool = True, intra_op_threads: int | None = None):
    """Full graph optimisation (or none, for probes that read intermediate tensors), errors-only
    logging, and ``intra_op_threads`` when given (one inter-op thread then)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = ORT_ERROR
    # With a memory pattern, runs after the first at a shape allocate the traced pattern whole and can
    # take 1.4x the first run (64x64 and 896x960 tiles of the demo model: 3,065 against 2,150
    # B/pixel), so the budget's probe under-estimated tiles; without it the working set is linear in
    # the pixels, at the same speed (benchmarks/RESULTS.md, issue 21).
    options.enable_mem_pattern = False
    if intra_op_threads:
        options.intra_op_num_threads = int(intra_op_threads)
        options.inter_op_num_threads = 1
    return options


def open_session(model, providers=CPU, *, optimize: bool = True, intra_op_threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` of ``model``: a path, serialized bytes or an
    ``onnx.ModelProto``; ``providers`` as ONNX Runtime takes them (names or (name, options))."""
    import onnxruntime as ort

    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
    elif isinstance(model, bytes):
        source = model
    else:  # an onnx.ModelProto (onnx is not imported for this)
        source = model.SerializeToString()
    options = session_options(ort, optimize=optimize, intra_op_threads=intra_op_threads)
    with quiet_ort_logging(ort):
        return ort.InferenceSession(source, sess_options=options, providers=list(providers))
