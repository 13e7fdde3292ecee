"""The core model of a ``--backend python`` repository, inside Triton's Python backend: runs the ONNX
model or TensorRT engine in its version folder with ast_deploy's own backend.

Triton's dynamic batcher hands ``execute`` several requests, each a ``[b, 3, H, W]`` batch; those of
one size are concatenated and run together (in chunks of the backend's largest batch), then split
back into one response per request.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class CoreModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        from ..backends import open_backend
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

    def execute(self, requests):
        pb = self.pb
        arrays = [pb.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        results: list = [None] * len(requests)
        groups: dict = {}
        for i, a in enumerate(arrays):
            groups.setdefault(a.shape[1:], []).append(i)
        step = self.backend.max_batch
        for members in groups.values():
            batch = np.concatenate([arrays[i] for i in members]).astype(np.float32, copy=False)
            try:
                size = step or len(batch)
                out = np.concatenate([self.backend.infer(batch[j : j + size]) for j in range(0, len(batch), size)])
            except Exception as e:  # a bad size must fail its requests, not the model
                for i in members:
                    results[i] = pb.InferenceResponse(output_tensors=[], error=pb.TritonError(f"{type(e).__name__}: {e}"))
                continue
            offset = 0
            for i in members:
                n = len(arrays[i])
                tensor = pb.Tensor(self.output_name, np.ascontiguousarray(out[offset : offset + n], dtype=self.dtype))
                results[i] = pb.InferenceResponse(output_tensors=[tensor])
                offset += n
        return results

    def finalize(self):
        self.backend.close()
