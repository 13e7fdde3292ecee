"""The ONNX opsets ast-export writes (a module of its own, so the CLI's --help needs no torch)."""

DEFAULT_OPSET = 20  # torch 2.13's default; >= 17 keeps LayerNorm one LayerNormalization node, 20 has Gelu
MIN_OPSET = 17
# The newest opset the whole chain takes (torch 2.13's exporter with onnxscript 0.7, onnx 1.23's checker,
# onnxruntime 1.32), found by exporting the tiny test model and running it: 17, 21, 22, 23 and 25 were
# tried (20 is the default) and match PyTorch (max abs error 1.5e-6); at 26 and 28 the converter leaves Gelu
# at a domain version the checker rejects ("No Op registered for Gelu with domain_version of 18").
MAX_OPSET = 25
SUPPORTED_OPSETS = range(MIN_OPSET, MAX_OPSET + 1)
