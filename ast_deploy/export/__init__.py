"""PyTorch AST -> validated ONNX (see ``ast-export``).

``export_onnx`` writes one clean ONNX file (custom ``ast`` nodes with local-function fallbacks, or
standard ops only); ``ast_deploy.checks.validate_onnx`` compares it with PyTorch;
``load_recipe`` (from ``ast_deploy.recipes``) reads a task's deployment recipe.
"""

from .cleanup import FORBIDDEN_OPS, GraphCheckError, GraphStats, check_graph, clean_graph, graph_stats
from .custom_nodes import ASSA_OP, ASSA_SHIFTED_OP, DOMAIN, PARTIAL_CONV_OP, attach_functions
from .onnx_export import (DEFAULT_OPSET, INPUT_NAME, MIN_OPSET, OUTPUT_NAME, ExportError, ExportResult,
                          export_onnx, ops_impl, save_atomically)
from ..recipes import Recipe, RecipeError, load_recipe

__all__ = [
    "ASSA_OP", "ASSA_SHIFTED_OP", "DEFAULT_OPSET", "DOMAIN", "FORBIDDEN_OPS", "INPUT_NAME", "MIN_OPSET",
    "OUTPUT_NAME", "PARTIAL_CONV_OP", "ExportError", "ExportResult", "GraphCheckError", "GraphStats",
    "Recipe", "RecipeError",
    "attach_functions", "check_graph", "clean_graph", "export_onnx", "graph_stats", "load_recipe", "ops_impl",
    "save_atomically",
]
