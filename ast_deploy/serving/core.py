"""The core model of a ``--backend python`` repository, inside Triton's Python backend: runs the ONNX
model or TensorRT engine in its version folder with ast_deploy's own backend.

Triton's dynamic batcher hands ``execute`` several requests, each a ``[b, 3, H, W]`` batch; those of
one size are concatenated and run together, in chunks of the backend's largest batch and of what
this instance's memory budget holds, then split back into one response per request.

The core measures its own cost per pixel when it loads (``budget.measure_cost``'s probe, in this
process, where the network runs) and resolves its budget (``max_memory`` of its config: bytes, or
``auto``, the automatic budget of this process). A request that asks for the output ``COST`` only
(a *cost query*: any valid input, nothing is run) is answered with ``[bytes per pixel, constant
bytes, budget bytes, -1]`` (FP64, budget -1 when unlimited): the front model and the client plan
with these numbers (:func:`cost_query_answer`).

The plan checks itself here as in ``Runner``: every backend call is measured (the stub's resident
set: ``memcheck.RssMeter``); a call that peaks more than 10 % over what the cost predicts corrects
the cost (later chunks, cost queries and answers use it) and says so in the server log. A request
for the image output that also asks for ``COST`` gets the current cost with it, the fourth value
its share of its call's measured peak (bytes, -1 when not measured): the front model's Runner
meters its tiles with it and re-plans the rest of a photo that does not fit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

COST_OUTPUT = "COST"


def cost_query_answer(cost, budget: float, used: float | None = None, rows: int = 1) -> np.ndarray:
    """The ``COST`` tensor ([rows, 4] FP64: one row per image of the request) for a cost, a budget
    and the request's measured peak (None: -1)."""
    row = [cost.bytes_per_pixel, cost.constant, -1.0 if budget == math.inf else float(budget),
           -1.0 if used is None else float(used)]
    return np.array([row] * rows)


def read_cost_answer(values) -> tuple:
    """(Cost, budget bytes or inf) from a ``COST`` tensor."""
    from ..budget import Cost

    bpp, constant, budget = (float(v) for v in np.asarray(values).reshape(-1)[:3])
    return Cost(bpp, constant, "measured in the core model"), (math.inf if budget < 0 else budget)


def read_used(values) -> float | None:
    """The measured peak a ``COST`` tensor carries with an image answer (None when not measured)."""
    flat = np.asarray(values).reshape(-1)
    return float(flat[3]) if flat.size > 3 and flat[3] >= 0 else None


class CoreModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        from ..backends import open_backend
        from ..budget import measure_cost, resolve_budget
        from ..memcheck import RssMeter
        from ..metadata import config_parameters

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = config_parameters(config)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.dtype = np.float16 if config["output"][0]["data_type"] == "TYPE_FP16" else np.float32
        path = Path(args["model_repository"]) / args["model_version"] / params["model_file"]
        device = "cpu" if args["model_instance_kind"] == "CPU" else f"cuda:{args['model_instance_device_id']}"
        options = {"providers": "cpu"} if path.suffix == ".onnx" and device == "cpu" else {}
        self.backend = open_backend(path, device=device, **options)
        if params.get("size_multiple"):  # the repository's value: an ONNX without metadata got --size-multiple
            self.backend.size_multiple = int(params["size_multiple"])
        memory = params.get("max_memory") or "auto"
        self.budget = resolve_budget(None if memory == "auto" else memory, device)
        self.cost = measure_cost(self.backend, use_cache=False)  # this process's own probe, never a cached figure
        self.meter = RssMeter() if device == "cpu" else None
        self.model_name = args["model_name"]
        pb_utils.Logger.log_info(f"{args['model_name']}: cost {self.cost.bytes_per_pixel:.0f} B/pixel + "
                                 f"{self.cost.constant / 2 ** 20:.1f} MiB, budget {self.budget / 2 ** 20:.0f} MiB")

    def _is_cost_query(self, request) -> bool:
        wanted = request.requested_output_names()
        return COST_OUTPUT in wanted and self.output_name not in wanted

    def _chunk(self, h: int, w: int) -> int:
        """Images of h x w one backend call takes: the backend's largest batch and the budget's."""
        fit = max(1, int(self.cost.max_pixels(self.budget) / (h * w))) if self.budget != math.inf else None
        sizes = [s for s in (self.backend.max_batch, fit) if s]
        return min(sizes) if sizes else 0

    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, float | None]:
        """One backend call and its measured peak (None: not measured), then the freed heap handed
        back (glibc keeps it otherwise, and what one tile left would sit under the next tile's
        peak: +200 MiB at 448x448 tiles on the demo model)."""
        from ..budget import release_memory

        try:
            if self.meter is None:
                return self.backend.infer(batch), None
            out, used = self.meter.measure(lambda: self.backend.infer(batch))
        finally:
            release_memory()
        self._check(len(batch), batch.shape[2], batch.shape[3], used)
        return out, used

    def _check(self, n: int, h: int, w: int, used: float | None) -> None:
        """A call over its predicted cost by more than memcheck.OVERRUN corrects the cost."""
        from ..budget import format_size, scaled_cost
        from ..memcheck import OVERRUN

        predicted = self.cost.of(n, h, w)
        if used is None or used <= OVERRUN * predicted:
            return
        self.cost = scaled_cost(self.cost, used, predicted)
        self.pb.Logger.log_warn(f"{self.model_name}: a batch of {n} x {h}x{w} used {format_size(used)} where the "
                                f"cost predicted {format_size(predicted)}: cost corrected to "
                                f"{self.cost.bytes_per_pixel:.0f} B/pixel + {format_size(self.cost.constant)}")

    def _run_group(self, batch: np.ndarray) -> tuple[np.ndarray, list[float | None]]:
        """The images of one size, in chunks the budget holds (re-sized after a correction); each
        image's share of its chunk's measured peak."""
        outputs, shares, j = [], [], 0
        while j < len(batch):
            size = self._chunk(*batch.shape[2:]) or len(batch)
            out, used = self._infer(batch[j : j + size])
            outputs.append(out)
            shares += [None if used is None else used / len(out)] * len(out)
            j += len(out)
        return np.concatenate(outputs), shares

    def execute(self, requests):
        pb = self.pb
        results: list = [None] * len(requests)
        arrays, groups = {}, {}
        for i, r in enumerate(requests):
            arrays[i] = pb.get_input_tensor_by_name(r, self.input_name).as_numpy()
            if self._is_cost_query(r):
                results[i] = pb.InferenceResponse(output_tensors=[
                    pb.Tensor(COST_OUTPUT, cost_query_answer(self.cost, self.budget, rows=len(arrays.pop(i))))])
                continue
            groups.setdefault(arrays[i].shape[1:], []).append(i)
        for shape, members in groups.items():
            batch = np.concatenate([arrays[i] for i in members]).astype(np.float32, copy=False)
            try:
                out, shares = self._run_group(batch)
            except Exception as e:  # a bad size must fail its requests, not the model
                for i in members:
                    results[i] = pb.InferenceResponse(output_tensors=[], error=pb.TritonError(f"{type(e).__name__}: {e}"))
                continue
            offset = 0
            for i in members:
                n = len(arrays[i])
                tensors = [pb.Tensor(self.output_name, np.ascontiguousarray(out[offset : offset + n], dtype=self.dtype))]
                if COST_OUTPUT in requests[i].requested_output_names():
                    part = shares[offset : offset + n]
                    used = None if None in part else sum(part)
                    tensors.append(pb.Tensor(COST_OUTPUT, cost_query_answer(self.cost, self.budget, used, n)))
                results[i] = pb.InferenceResponse(output_tensors=tensors)
                offset += n
        return results

    def finalize(self):
        self.backend.close()
