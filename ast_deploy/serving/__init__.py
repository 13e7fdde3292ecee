"""Serving on NVIDIA Triton Inference Server: a model repository from an ONNX model or a TensorRT
engine (``repository``, ``config``, the Python-backend models ``front`` and ``core`` with their
``templates``), the server environment ``ast-serve`` makes (``env``) and the server launcher
(``server``). The client side is ``ast_deploy.backends.triton_client`` (``Runner("http://...")``).
"""
