"""The front model inside Triton's Python backend: takes a whole photo per request, runs it through
``ast_deploy.Runner`` (the task's protocol, padding, tiling, batching of tiles) whose backend is a BLS
call to the core model, and returns the restored photo of the same kind.

The Runner does all the protocol work; ``BlsBackend`` only turns its ``infer`` calls into requests
to ``NAME_core``, so concurrent requests of all front instances meet in the core's dynamic batcher.
Inputs and outputs: see ``ast_deploy.serving.config``.
"""

from __future__ import annotations

import inspect
import json

import numpy as np

from ..backends.base import Backend, BackendError


class BlsBackend(Backend):
    """A Backend whose ``infer`` is a BLS request to the core model (inside a Python-backend model)."""

    def __init__(self, pb_utils, params: dict):
        self.pb = pb_utils
        self.model = params["core_model"]
        self.input_name, self.output_name = params["core_input"], params["core_output"]
        self.dtype = np.float16 if params["core_dtype"] == "float16" else np.float32
        self.size_multiple = int(params["size_multiple"])
        rng = json.loads(params.get("shape_range") or "null")
        self.shape_range = None if rng is None else (tuple(rng[0]), tuple(rng[1]))
        self.batched = int(params.get("core_max_batch") or 0) > 0
        self.name = f"bls:{self.model}"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        pb = self.pb
        request = pb.InferenceRequest(model_name=self.model, requested_output_names=[self.output_name],
                                      inputs=[pb.Tensor(self.input_name, batch.astype(self.dtype, copy=False))])
        response = request.exec()
        if response.has_error():
            raise BackendError(f"{self.model}: {response.error().message()}")
        return pb.get_output_tensor_by_name(response, self.output_name).as_numpy().astype(np.float32, copy=False)


def _runner(backend: Backend, params: dict):
    from ..runner import Runner

    options = {}
    memory = params.get("max_memory") or "auto"
    if "max_memory" in inspect.signature(Runner).parameters:  # the memory-budgeted Runner
        options["max_memory"] = None if memory == "auto" else memory
    return Runner(backend, protocol=params["protocol"], **options)


def restore_request(runner, inputs: dict, protocol: str | None = None) -> tuple[str, np.ndarray]:
    """(output name, array) for one request's inputs ({name: numpy array}); ValueError for a bad one."""
    images = [n for n in ("IMAGE", "INPUT") if inputs.get(n) is not None]
    if len(images) != 1:
        raise ValueError("send exactly one of IMAGE (UINT8 [H, W, 3]) and INPUT (FP32 [3, H, W]); got "
                         + (" and ".join(images) or "neither"))
    kind = images[0]
    x = inputs[kind]
    if kind == "IMAGE":
        if x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8:
            raise ValueError(f"IMAGE must be UINT8 [H, W, 3], got {x.dtype} {list(x.shape)}")
        pixels = x.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    else:
        if x.ndim != 3 or x.shape[0] != 3 or x.dtype != np.float32:
            raise ValueError(f"INPUT must be FP32 [3, H, W], got {x.dtype} {list(x.shape)}")
        pixels = x[None]
    if 0 in x.shape:
        raise ValueError(f"{kind} is empty (shape {list(x.shape)})")
    if not np.isfinite(pixels).all():
        raise ValueError(f"{kind} has NaN or infinite values")
    restored = runner.run_nchw(pixels, protocol)[0]
    if kind == "IMAGE":
        from ..images import quantize

        return "OUTPUT_IMAGE", quantize(restored.transpose(1, 2, 0), 8)
    return "OUTPUT", np.ascontiguousarray(restored, dtype=np.float32)


class FrontModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        from ..metadata import config_parameters

        self.pb = pb_utils
        params = config_parameters(json.loads(args["model_config"]))
        self.runner = _runner(BlsBackend(pb_utils, params), params)

    def execute(self, requests):
        pb = self.pb
        responses = []
        for request in requests:
            try:
                inputs = {}
                for name in ("IMAGE", "INPUT", "PROTOCOL"):
                    tensor = pb.get_input_tensor_by_name(request, name)
                    inputs[name] = None if tensor is None else tensor.as_numpy()
                protocol = None
                if inputs["PROTOCOL"] is not None and inputs["PROTOCOL"].size:
                    value = inputs["PROTOCOL"].reshape(-1)[0]
                    protocol = (value.decode() if isinstance(value, bytes) else str(value)) or None
                name, out = restore_request(self.runner, inputs, protocol)
                responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(name, out)]))
            except Exception as e:  # the error goes to this request's client; the model keeps serving
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(f"{type(e).__name__}: {e}")))
        return responses
