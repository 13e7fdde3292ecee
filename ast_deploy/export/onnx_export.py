"""PyTorch AST -> one clean, checked ONNX file (``torch.onnx.export`` with ``dynamo=True``)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx
import torch

from ..fileio import atomic_write
from ..metadata import export_metadata
from . import custom_nodes as _custom_nodes
from .cleanup import GraphStats, check_graph, clean_graph
from .fusions import legalize_split_for_opset17, split_gated_linear

INPUT_NAME = "input"
OUTPUT_NAME = "output"
from ..opsets import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, SUPPORTED_OPSETS  # noqa: F401  (re-exported)


class ExportError(RuntimeError):
    """torch.onnx.export failed or produced an unusable graph."""


@dataclass
class ExportResult:
    path: Path
    stats: GraphStats
    input_shape: list  # ints, or names ("batch", "height", "width") for dynamic axes
    custom_ops: bool
    opset: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def dynamic(self) -> bool:
        return any(isinstance(d, str) for d in self.input_shape)


@contextlib.contextmanager
def ops_impl(model: torch.nn.Module, name: str):
    """Temporarily switch every ASSA / partial-conv module of ``model`` to implementation ``name``."""
    saved = [(m, m.ops_impl) for m in model.modules() if hasattr(m, "ops_impl")]
    model.set_ops_impl(assa=name, partial_conv=name)
    try:
        yield model
    finally:
        for m, impl in saved:
            m.ops_impl = impl


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs optional-dependency notes and deprecation warnings that are not ours."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _without_slices_split():
    """The exporter's ONNX optimizer (onnxscript's ``optimize_ir``, run by ``optimize=True``) without
    its SlicesSplit rule: a two-output pattern that the rewriter matches by pairing every Slice with
    every other node of the graph, which took 3 of the optimizer's 4.6 s on AST-B (2-core CPU), and
    which never fires on AST (it needs a static last dimension split in halves; measured: 0 matches,
    and the same bytes written with and without it). Where onnxscript's layout differs, a no-op."""
    try:
        from onnxscript import rewriter
        from onnxscript.rewriter.rules.common import slice_split_rule
    except ImportError:
        yield
        return
    saved = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if not isinstance(saved, tuple) or slice_split_rule not in saved:
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(rule for rule in saved if rule is not slice_split_rule)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = saved


def _dynamic_shapes(multiple: int) -> dict:
    Dim = torch.export.Dim
    return {"x": {0: Dim("batch", min=1, max=64), 2: multiple * Dim("h", min=1, max=64),
                  3: multiple * Dim("w", min=1, max=64)}}


def save_atomically(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` (weights inline) to ``path`` atomically."""
    return atomic_write(path, model.SerializeToString())


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, *, shape: tuple[int, int] | None = None,
                batch: int = 1, opset: int = DEFAULT_OPSET, custom_ops: bool = True, fuse: bool = True,
                progress: Callable[[str], None] | None = None, metadata: dict[str, str] | None = None
                ) -> ExportResult:
    """Export an ``AST`` to ``path`` and return what was written.

    ``shape=None`` (default) gives dynamic batch, H and W (each side a multiple of
    ``model.size_multiple``); ``shape=(H, W)`` with ``batch`` gives a static-shape graph.
    ``custom_ops`` emits ``ast::AdaptiveSparseAttention[Shifted]`` / ``ast::PartialConv`` nodes
    with their local functions (see :mod:`ast_deploy.export.custom_nodes`); otherwise the graph holds
    standard ONNX ops only. The graph is constant-folded, cleaned, shape-inferred, rewritten by
    :mod:`ast_deploy.export.fusions` (``fuse``) and checked before it is written (atomically).
    The model's metadata records ``ast.size_multiple`` (what the backends pad to) and ``metadata``
    (the CLI adds ``ast.task``, from which ``ast-build`` finds the recipe's shape profile).
    """
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} is not supported: use {MIN_OPSET} to {MAX_OPSET} (>= {MIN_OPSET} for "
                         f"LayerNormalization as one node; {MAX_OPSET} is the newest this exporter, the ONNX checker "
                         f"and ONNX Runtime all take)")
    example, dynamic_shapes, input_shape = _example_input(model, shape, batch)
    report = progress or (lambda _msg: None)
    seconds = {}

    start = time.perf_counter()
    report("torch.onnx.export")
    proto = _torch_export(model, example, dynamic_shapes, opset, custom_ops)
    seconds["export"] = time.perf_counter() - start

    start = time.perf_counter()
    report("clean-up")
    if custom_ops:
        _custom_nodes.attach_functions(proto)
    # one folding pass: the exporter's optimizer has folded already, and a second Polygraphy pass (one
    # more graph round trip and shape inference of the whole model with its weights: 1.8 s on AST-B)
    # folded nothing more on AST-B or the tiny model (the same bytes written)
    proto = clean_graph(proto, rewrites=[legalize_split_for_opset17] + ([split_gated_linear] if fuse else []),
                        fold_passes=1)
    _name_dynamic_axes(proto, input_shape)
    onnx.helper.set_model_props(proto, {**export_metadata(model.size_multiple), **(metadata or {})})
    stats = check_graph(proto)
    seconds["cleanup"] = time.perf_counter() - start

    report("write")
    save_atomically(proto, path)
    return ExportResult(Path(path), stats, input_shape, custom_ops, opset, seconds)


def _example_input(model: torch.nn.Module, shape, batch: int):
    """(example input, dynamic_shapes for torch.onnx.export, the ONNX input's shape)."""
    multiple = model.size_multiple
    device = next(model.parameters()).device
    if shape is not None:
        h, w = shape
        if h <= 0 or w <= 0 or h % multiple or w % multiple:
            raise ValueError(f"static shape {h}x{w}: H and W must be positive multiples of {multiple}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        return torch.rand(batch, model.dd_in, h, w, device=device), None, [batch, model.dd_in, h, w]
    # Batch 2 and H != W: an example dimension of 1 (or two equal ones) would be specialised.
    example = torch.rand(2, model.dd_in, 2 * multiple, 3 * multiple, device=device)
    return example, _dynamic_shapes(multiple), ["batch", model.dd_in, "height", "width"]


def _torch_export(model: torch.nn.Module, example, dynamic_shapes, opset: int, custom_ops: bool) -> onnx.ModelProto:
    """The dynamo exporter's ModelProto, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        with _quiet_exporter(), _without_slices_split(), \
                ops_impl(model, _custom_nodes.IMPL_NAME if custom_ops else "reference"):
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=opset, dynamic_shapes=dynamic_shapes, external_data=False, optimize=True,
                verbose=False)
    except Exception as e:  # the exporter raises many types; keep its message
        raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
    return program.model_proto


def _name_dynamic_axes(model: onnx.ModelProto, input_shape: list) -> None:
    """Give the input and output the same readable dynamic axis names (the exporter's are s0, s1...)."""
    for value in (model.graph.input[0], model.graph.output[0]):
        for dim, want in zip(value.type.tensor_type.shape.dim, input_shape):
            if isinstance(want, str):
                dim.Clear()
                dim.dim_param = want
