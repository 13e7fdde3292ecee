"""Graph clean-up after export: constant folding, dead-node removal, shape inference, checks."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable, Sequence

import onnx

# Ops that betray a data-dependent or slice-assignment construct (the official export's shift
# mask gives ScatterND); TensorRT handles them badly or not at all.
FORBIDDEN_OPS = frozenset({"ScatterND", "NonZero", "Loop"})


class GraphCheckError(RuntimeError):
    """The exported graph fails the ONNX checker or contains an op it must not contain."""


@dataclass(frozen=True)
class GraphStats:
    nodes: int            # nodes of the main graph (a custom-op call counts as one)
    inlined_nodes: int    # nodes after inlining the local functions (what runs without plugins)
    custom_nodes: int
    op_counts: dict[str, int]


def clean_graph(model: onnx.ModelProto, rewrites: Sequence[Callable[[onnx.ModelProto], object]] = (),
                fold_passes: int | None = None) -> onnx.ModelProto:
    """Fold constants (any size; ``fold_passes`` Polygraphy passes, None: until nothing more folds),
    apply ``rewrites`` (in place, on the folded graph with its inferred shapes), remove dead nodes,
    sort topologically and infer shapes again.

    Local functions are kept; the ``ast`` custom nodes are never folded (their inputs depend on the
    graph input).
    """
    import onnx_graphsurgeon as gs
    from polygraphy.backend.onnx import fold_constants, infer_shapes
    from polygraphy.logger import G_LOGGER

    functions = list(model.functions)
    with G_LOGGER.verbosity(G_LOGGER.ERROR):  # scoped: the caller's Polygraphy logging is left as it was
        model = fold_constants(model, num_passes=fold_passes, size_threshold=None, error_ok=False,
                               allow_onnxruntime_shape_inference=False)
        for rewrite in rewrites:
            rewrite(model)
        graph = gs.import_onnx(model)
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        model = gs.export_onnx(graph, do_type_check=False)
        if {f.name for f in model.functions} != {f.name for f in functions}:
            del model.functions[:]
            model.functions.extend(functions)
        return infer_shapes(model, allow_onnxruntime=False)


def _all_nodes(model: onnx.ModelProto):
    yield from model.graph.node
    for function in model.functions:
        yield from function.node


def check_graph(model: onnx.ModelProto) -> GraphStats:
    """Run ``onnx.checker`` (full check, with shape inference) and the forbidden-op check."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise GraphCheckError(f"exported model fails onnx.checker: {e}") from e
    found = sorted({n.op_type for n in _all_nodes(model)} & FORBIDDEN_OPS)
    if found:
        raise GraphCheckError(f"exported graph contains {', '.join(found)}, which must not appear")
    return graph_stats(model)


def graph_stats(model: onnx.ModelProto) -> GraphStats:
    counts = collections.Counter(n.op_type for n in model.graph.node)
    bodies = {(f.domain, f.name): len(f.node) for f in model.functions}
    custom = [n for n in model.graph.node if (n.domain, n.op_type) in bodies]
    inlined = len(model.graph.node) - len(custom) + sum(bodies[(n.domain, n.op_type)] for n in custom)
    return GraphStats(len(model.graph.node), inlined, len(custom), dict(counts.most_common()))
