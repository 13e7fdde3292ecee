"""The front model inside Triton's Python backend: takes a whole photo per request, runs it through
``ast_deploy.Runner`` (the task's protocol, padding, tiling, batching of tiles) whose backend is a BLS
call to the core model, and returns the restored photo of the same kind.

The Runner does all the protocol work; ``BlsBackend`` only turns its ``infer`` calls into requests
to ``NAME_core``, so concurrent requests of all front instances meet in the core's dynamic batcher.

The plan (whole, or tiles of which size) is made here with the numbers of the process that runs the
network: on its first request the front model asks the core for its measured cost per pixel and
its memory budget (a cost query, ``serving.core``) and plans with them; this process's own memory
says nothing about the network's. A core that cannot answer (the server's own ``onnxruntime`` or
``tensorrt_plan`` backends) leaves the plan unbudgeted (the protocol, fitted to the core's size
range), with one line in the server's log. Every tile then asks the core for ``COST`` with its
output: the core's current cost (which the core corrects when a call peaks over it) and the tile's
share of the measured peak, the meter of the Runner's own check (``memcheck``): a tile over the
budget re-plans the rest of the photo here, and the next photo plans with the corrected cost. A
photo whose own buffers on the server (its pixels in and out) exceed the budget is refused with a
message. Inputs and outputs: see
``ast_deploy.serving.config``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..backends.base import Backend, BackendError
from ..budget import Cost, format_size, resolve_budget
from .config import COST_OUTPUT, OUTPUT_FOR

IMAGE_TYPES = {"IMAGE": np.uint8, "IMAGE16": np.uint16}


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
        self.cost: Cost | None = None
        self.reports_cost = False  # the python core answers COST; the server's own backends do not
        self.last_used: float | None = None

    def memory_cost(self) -> Cost | None:
        """The core's measured cost (budget.measure_cost takes it instead of probing this process)."""
        return self.cost

    def meter(self):
        """The Runner's meter (memcheck): the core's measured peak of each call, where it reports one."""
        return CoreMeter(self) if self.reports_cost else None

    def query_cost(self):
        """(Cost, budget) as the core measured and resolved them, or None when it cannot answer."""
        pb = self.pb
        b, h, w = self.shape_range[0] if self.shape_range else (1, self.size_multiple, self.size_multiple)
        probe = np.zeros((b, 3, h, w), dtype=self.dtype)
        request = pb.InferenceRequest(model_name=self.model, requested_output_names=[COST_OUTPUT],
                                      inputs=[pb.Tensor(self.input_name, probe)])
        response = request.exec()
        tensor = None if response.has_error() else pb.get_output_tensor_by_name(response, COST_OUTPUT)
        if tensor is None:
            return None
        from .core import read_cost_answer

        return read_cost_answer(tensor.as_numpy())

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        pb = self.pb
        wanted = [self.output_name] + ([COST_OUTPUT] if self.reports_cost else [])
        request = pb.InferenceRequest(model_name=self.model, requested_output_names=wanted,
                                      inputs=[pb.Tensor(self.input_name, batch.astype(self.dtype, copy=False))])
        self.last_used = None
        response = request.exec()
        if response.has_error():
            message = response.error().message()
            if "Server not ready" in message:  # Triton refuses new work once it stops (SIGTERM)
                raise BackendError("the server is stopping: this photo was not restored; send it again when the "
                                   f"server is back ({self.model}: {message})")
            raise BackendError(f"{self.model}: {message}")
        cost = pb.get_output_tensor_by_name(response, COST_OUTPUT) if self.reports_cost else None
        if cost is not None:
            from .core import read_cost_answer, read_used

            self.cost = read_cost_answer(cost.as_numpy())[0]
            self.last_used = read_used(cost.as_numpy())
        return pb.get_output_tensor_by_name(response, self.output_name).as_numpy().astype(np.float32, copy=False)


class CoreMeter:
    """memcheck's meter interface for a BLS call: the peak the core measured for it."""

    def __init__(self, backend: BlsBackend):
        self.backend = backend

    def measure(self, call):
        out = call()
        return out, self.backend.last_used


def photo_bytes(kind: str, x: np.ndarray) -> int:
    """The photo's own buffers on the server: its pixels as received and as answered."""
    return 2 * x.size * x.dtype.itemsize if kind in IMAGE_TYPES else 2 * x.size * 4


def check_request(inputs: dict, budget: float) -> tuple[str, np.ndarray]:
    """(input name, array) of a request ({name: numpy array}); ValueError naming what is wrong."""
    images = [n for n in ("IMAGE", "IMAGE16", "INPUT") if inputs.get(n) is not None]
    if len(images) != 1:
        raise ValueError("send exactly one of IMAGE (UINT8 [H, W, 3]), IMAGE16 (UINT16 [H, W, 3]) and INPUT "
                         "(FP32 [3, H, W]); got " + (" and ".join(images) or "none of them"))
    kind = images[0]
    x = inputs[kind]
    if kind in IMAGE_TYPES:
        want = np.dtype(IMAGE_TYPES[kind])
        if x.ndim != 3 or x.shape[2] != 3 or x.dtype != want:
            raise ValueError(f"{kind} must be {want.name.upper()} [H, W, 3], got {x.dtype} {list(x.shape)}")
    elif x.ndim != 3 or x.shape[0] != 3 or x.dtype != np.float32:
        raise ValueError(f"INPUT must be FP32 [3, H, W], got {x.dtype} {list(x.shape)}")
    if 0 in x.shape:
        raise ValueError(f"{kind} is empty (shape {list(x.shape)})")
    if photo_bytes(kind, x) > budget:
        h, w = x.shape[:2] if kind in IMAGE_TYPES else x.shape[1:]
        raise ValueError(f"{kind} of {h}x{w} pixels needs {format_size(photo_bytes(kind, x))} of buffers on the "
                         f"server, over its memory budget of {format_size(budget)}: send a smaller photo, or "
                         "serve with a larger ast-serve repo --max-memory")
    return kind, x


def restore_request(runner, inputs: dict, protocol: str | None = None, budget: float = math.inf) -> tuple[str, np.ndarray]:
    """(output name, array) for one request's inputs ({name: numpy array}); ValueError for a bad one."""
    kind, x = check_request(inputs, budget)
    if kind in IMAGE_TYPES:  # padded or tiled here: tiles read and write the photo's own pixels
        return OUTPUT_FOR[kind], runner.restore_pixels(x, protocol)
    return "OUTPUT", np.ascontiguousarray(runner.run_nchw(x[None], protocol)[0], dtype=np.float32)


class FrontModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        from ..metadata import config_parameters

        self.pb = pb_utils
        self.params = config_parameters(json.loads(args["model_config"]))
        self.backend = BlsBackend(pb_utils, self.params)
        self.runner, self.budget = None, math.inf

    def _runner(self):
        """The Runner, made on the first request: the core is loaded by then and answers its cost."""
        if self.runner is None:
            from ..runner import Runner

            answer = self.backend.query_cost()
            if answer is None:
                memory = self.params.get("max_memory") or "auto"
                cost, budget = Cost(0.0, 0.0, "unknown"), resolve_budget(None if memory == "auto" else memory)
                self.pb.Logger.log_warn(f"{self.backend.model} does not report its cost (only the python core "
                                        "does): plans here ignore the memory budget")
            else:
                cost, budget = answer
            self.backend.cost, self.budget = cost, budget
            self.backend.reports_cost = answer is not None
            self.runner = Runner(self.backend, task=self.params.get("task") or None, protocol=self._named_protocol(),
                                 max_memory="unlimited" if budget == math.inf else int(budget))
        current = self.backend.cost  # the core's, as its last answer said: it may have corrected it
        if current is not None and self.runner._cost is not None and current.of(1, 512, 512) > self.runner._cost.of(1, 512, 512):
            self.runner._cost = current
        return self.runner

    def _named_protocol(self) -> str | None:
        """The served protocol as the Runner must see it: None where it is the task's default (or pad:N
        without a task), so the budget may re-plan it as for ast-restore; named only where ``ast-serve
        repo --protocol`` chose another (a named protocol is never re-planned)."""
        from ..protocols import parse_protocol
        from ..tasks import get_task

        served, task = parse_protocol(self.params["protocol"]), self.params.get("task") or None
        default = get_task(task).protocol if task else f"pad:{self.backend.size_multiple}"
        return None if served == parse_protocol(default) else str(served)

    def _inputs(self, request) -> tuple[dict, str | None]:
        inputs = {}
        for name in ("IMAGE", "IMAGE16", "INPUT", "PROTOCOL"):
            tensor = self.pb.get_input_tensor_by_name(request, name)
            inputs[name] = None if tensor is None else tensor.as_numpy()
        protocol = None
        if inputs["PROTOCOL"] is not None and inputs["PROTOCOL"].size:
            value = inputs["PROTOCOL"].reshape(-1)[0]
            protocol = (value.decode() if isinstance(value, bytes) else str(value)) or None
        return inputs, protocol

    def execute(self, requests):
        pb = self.pb
        responses = []
        for request in requests:
            try:
                runner = self._runner()
                inputs, protocol = self._inputs(request)
                name, out = restore_request(runner, inputs, protocol, self.budget)
                responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(name, out)]))
            except Exception as e:  # the error goes to this request's client; the model keeps serving
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(f"{type(e).__name__}: {e}")))
        return responses
