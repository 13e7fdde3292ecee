"""Names of the ``ast`` custom ops, the same in ONNX (node domain and op type) and in TensorRT
(plugin namespace, name and version): the only copy."""

DOMAIN = "ast"  # ONNX domain of the custom nodes
PLUGIN_NAMESPACE = "ast"  # TensorRT plugin namespace (the nodes' plugin_namespace attribute)
PLUGIN_VERSION = "1"

ASSA_OP = "AdaptiveSparseAttention"
ASSA_SHIFTED_OP = "AdaptiveSparseAttentionShifted"  # with region_ids as a 5th input
PARTIAL_CONV_OP = "PartialConv"
OP_TYPES = (ASSA_OP, ASSA_SHIFTED_OP, PARTIAL_CONV_OP)
