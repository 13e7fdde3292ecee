"""Core model written by ast-serve repo --backend python (Triton Python backend): runs the model file
beside this one with ast_deploy's ONNX Runtime or TensorRT backend, for servers without those backends.

The code is the ast_deploy package's (installed in the server's Python without its dependencies)."""

from ast_deploy.serving.core import CoreModel as TritonPythonModel  # noqa: F401
