"""Write a Triton model repository for an ONNX model or a TensorRT engine (``ast-serve repo``).

    REPO/
      NAME/config.pbtxt          front model: Python backend, one photo per request, the protocol
      NAME/1/model.py            -> ast_deploy.serving.front
      NAME_core/config.pbtxt     core model: tensorrt_plan | onnxruntime | python, dynamic batching
      NAME_core/1/model.plan | model.onnx [| model.py -> ast_deploy.serving.core]

Both config files are validated against Triton's model-config protobuf before anything is written;
the two model folders are written under temporary names and renamed into place, so a failure leaves
no half-written repository and an existing one is replaced only with ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..engines.cache import read_sidecar
from ..protocols import parse_protocol
from ..tasks import get_task
from .config import BACKENDS, CoreSpec, core_config, front_config, validate_config

TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_MAX_BATCH = 8  # an ONNX with a dynamic batch has no profile to take it from
DEFAULT_FRONT_INSTANCES = 4
_ORT_TYPES = {1: "float32", 10: "float16"}  # onnx.TensorProto.FLOAT / FLOAT16


class RepositoryError(ValueError):
    """The model cannot be served as asked (bad file, missing metadata, a backend that cannot run it)."""


def parse_memory(text: str) -> int | None:
    """``512M``, ``4G`` (binary suffixes), a byte count, or ``unlimited`` (None)."""
    spec = str(text).strip().upper()
    if spec == "UNLIMITED":
        return None
    units = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
    scale = units.get(spec[-1:], 1)
    try:
        value = float(spec[:-1] if spec[-1:] in units else spec) * scale
    except ValueError:
        value = -1
    if value <= 0:
        raise RepositoryError(f"--max-memory {text!r}: give a size such as 512M or 4G, or 'unlimited'")
    return int(value)


def _onnx_spec(path: Path, size_multiple: int | None):
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise RepositoryError(f"{path}: expected one input and one output, found {len(inputs)} and "
                              f"{len(model.graph.output)}")
    inp, out = inputs[0], model.graph.output[0]
    elem = inp.type.tensor_type.elem_type
    if elem not in _ORT_TYPES or out.type.tensor_type.elem_type != elem:
        raise RepositoryError(f"{path}: input and output must both be float32 or float16 tensors")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (3, -1):
        raise RepositoryError(f"{path}: expected an image input [B, 3, H, W], found dims {dims}")
    meta = {p.key: p.value for p in model.metadata_props}
    if size_multiple is None:
        if "ast.size_multiple" not in meta:
            raise RepositoryError(f"{path}: no ast.size_multiple in its metadata (exported by ast-export?); "
                                  "give --size-multiple N")
        size_multiple = int(meta["ast.size_multiple"])
    return dict(input_name=inp.name, output_name=out.name, dtype=_ORT_TYPES[elem], dims=dims,
                size_multiple=size_multiple, task=meta.get("ast.task"))


def _plan_spec(path: Path, size_multiple: int | None):

    sidecar = read_sidecar(path)
    if not sidecar:
        raise RepositoryError(f"{path}: no sidecar {path.name}.json (written by ast-build): it gives the input "
                              "name, the profile and the size multiple of the engine")
    profile = sidecar["profile"]
    (b0, _, h0, w0), (b1, _, h1, w1) = profile["min"], profile["max"]
    onnx_path = Path((sidecar.get("onnx") or {}).get("path", ""))
    output_name = _onnx_spec(onnx_path, size_multiple or 1)["output_name"] if onnx_path.is_file() else "output"
    return dict(input_name=sidecar.get("input", "input"), output_name=output_name, dtype="float32",
                dims=[b1 if b0 == b1 else -1, 3, h0 if h0 == h1 else -1, w0 if w0 == w1 else -1],
                size_multiple=size_multiple or int(sidecar.get("size_multiple", 128)),
                task=((sidecar.get("onnx") or {}).get("metadata") or {}).get("ast.task"),
                profile=((b0, h0, w0), (b1, h1, w1)), sidecar=sidecar)


def core_spec(model: Path, backend: str, max_batch: int | None, instances: int, kind: str | None,
              size_multiple: int | None) -> tuple[CoreSpec, dict]:
    suffix = model.suffix.lower()
    if suffix == ".onnx":
        info = _onnx_spec(model, size_multiple)
        if backend == "tensorrt":
            raise RepositoryError(f"{model}: --backend tensorrt serves a TensorRT engine; build one with "
                                  f"ast-build, or serve the ONNX with --backend onnxruntime or python")
    elif suffix in (".plan", ".engine", ".trt"):
        info = _plan_spec(model, size_multiple)
        if backend == "onnxruntime":
            raise RepositoryError(f"{model}: --backend onnxruntime serves an ONNX model, not a TensorRT engine")
    else:
        raise RepositoryError(f"{model}: serve an ONNX model (.onnx) or a TensorRT engine (.plan); export a "
                              "checkpoint first with ast-export")
    batch, _, h, w = info["dims"]
    profile = info.get("profile")
    if batch == -1:  # batched by Triton
        top = profile[1][0] if profile else None
        size = max_batch or top or DEFAULT_MAX_BATCH
        if top and size > top:
            raise RepositoryError(f"--max-batch {size} exceeds the engine's profile (batch up to {top})")
        low = (profile[0][0] if profile else 1, *(profile[0][1:] if profile else (h if h > 0 else info["size_multiple"],
                                                                                    w if w > 0 else info["size_multiple"])))
        high = (size, *(profile[1][1:] if profile else (h if h > 0 else None, w if w > 0 else None)))
    else:  # a static batch: Triton sends it whole
        size = 0
        low = (batch, h if h > 0 else info["size_multiple"], w if w > 0 else info["size_multiple"])
        high = (batch, h if h > 0 else None, w if w > 0 else None)
    bounded = profile or h > 0 or w > 0 or size
    kind = kind or ("gpu" if backend == "tensorrt" else "cpu")
    spec = CoreSpec(backend=backend, input_name=info["input_name"], output_name=info["output_name"],
                    dtype=info["dtype"], dims=[3, h, w], max_batch_size=size, size_multiple=info["size_multiple"],
                    shape_range=[list(low), list(high)] if bounded else None,
                    kind=f"KIND_{kind.upper()}", count=instances,
                    model_file="model.plan" if suffix != ".onnx" else "model.onnx")
    if backend == "python":
        spec.parameters = {"model_file": spec.model_file, "size_multiple": spec.size_multiple}
    return spec, info


def write_repository(model, out, *, name: str | None = None, backend: str | None = None,
                     max_batch: int | None = None, instances: int = 1, front_instances: int = DEFAULT_FRONT_INSTANCES,
                     max_memory: str | None = None, task: str | None = None, protocol: str | None = None,
                     size_multiple: int | None = None, kind: str | None = None, force: bool = False) -> Path:
    """Write (or with ``force`` replace) ``NAME`` and ``NAME_core`` in the repository ``out``; returns
    the front model's folder."""

    model, out = Path(model), Path(out)
    if not model.is_file():
        raise RepositoryError(f"{model}: no such file")
    backend = backend or ("onnxruntime" if model.suffix.lower() == ".onnx" else "tensorrt")
    if backend not in BACKENDS:
        raise RepositoryError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if instances < 1 or front_instances < 1 or (max_batch is not None and max_batch < 1):
        raise RepositoryError("--instances, --front-instances and --max-batch must be at least 1")
    name = name or model.stem.replace(".", "_")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise RepositoryError(f"--name {name!r}: use letters, digits, '-' and '_'")
    core_name = f"{name}_core"
    spec, info = core_spec(model, backend, max_batch, instances, kind, size_multiple)
    if backend == "python":  # the core applies the budget to the network's working set (serving.core)
        spec.parameters["max_memory"] = max_memory or "auto"
    task = task or info.get("task")
    protocol = protocol or (get_task(task).protocol if task else f"pad:{spec.size_multiple}")
    parsed = parse_protocol(protocol)
    parsed.check(spec.size_multiple)
    if max_memory is not None:
        parse_memory(max_memory)  # a bad spelling fails here, not in the server
    front_params = {"core_model": core_name, "core_input": spec.input_name, "core_output": spec.output_name,
                    "core_dtype": spec.dtype, "core_max_batch": spec.max_batch_size,
                    "size_multiple": spec.size_multiple, "shape_range": json.dumps(spec.shape_range),
                    "protocol": str(parsed), "max_memory": max_memory or "auto", "task": task or ""}
    texts = {core_name: core_config(core_name, spec), name: front_config(name, front_params, front_instances)}
    for text in texts.values():
        validate_config(text)

    for folder in (out / name, out / core_name):
        if folder.exists() and not force:
            raise RepositoryError(f"{folder} exists (--force replaces it)")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ast-serve-", dir=out))
    try:
        for model_name, text in texts.items():
            (staging / model_name / "1").mkdir(parents=True)
            (staging / model_name / "config.pbtxt").write_text(text)
        shutil.copy2(TEMPLATES / "front_model.py", staging / name / "1" / "model.py")
        version = staging / core_name / "1"
        shutil.copy2(model, version / spec.model_file)
        if backend == "python":
            shutil.copy2(TEMPLATES / "core_model.py", version / "model.py")
            if "sidecar" in info:  # our TensorRT backend reads it (plugins, size multiple)
                (version / f"{spec.model_file}.json").write_text(json.dumps(info["sidecar"], indent=2))
        for model_name in texts:
            target = out / model_name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / model_name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / name
