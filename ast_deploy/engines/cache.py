"""Engine cache: a key naming everything an engine depends on, atomic writes, and the sidecar JSON
that records what an engine was built from (read back to explain a failed deserialization)."""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

from ..fileio import atomic_write  # noqa: F401  (re-exported: engines write through it)
from .target import Target

CACHE_FORMAT = 1  # bump when the meaning of a key changes


def cache_key(onnx_sha256: str, target: Target, options: dict) -> str:
    """Hash of the ONNX content, TensorRT version, GPU, compute capability and build options.
    Engines are not portable across any of these, so each gets its own file."""
    blob = json.dumps({"format": CACHE_FORMAT, "onnx": onnx_sha256, "target": target.to_dict(),
                       "options": options}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_engine_path(onnx_path: str | os.PathLike, key: str, tag: str = "") -> Path:
    """``<onnx stem><tag>.<key>.plan``; ``tag`` is the runtime's (".rtx" for TensorRT-RTX, none for
    TensorRT), so engines of the two runtimes never share a name."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}{tag}.{key}.plan")


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def sidecar_content(*, key: str, engine_path, onnx, target: Target, profile, options: dict, plugins: dict,
                    build_seconds: float | None = None, now: float | None = None) -> dict:
    return {
        "cache_key": key,
        "engine": Path(engine_path).name,
        "onnx": {"path": str(Path(onnx.path).resolve()), "sha256": onnx.sha256,
                 "task": onnx.task, "metadata": onnx.metadata},
        "runtime": target.runtime,
        "tensorrt": target.tensorrt,  # the runtime's version (TensorRT's or TensorRT-RTX's)
        "gpu": target.gpu,
        "compute_capability": target.compute_capability,
        "compute_capabilities": target.compute_capability.split(","),
        "input": onnx.input_name,
        "profile": profile.to_dict(),
        "size_multiple": onnx.size_multiple,
        "options": options,
        "plugins": plugins,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
        "build_seconds": None if build_seconds is None else round(build_seconds, 3),
    }


def write_engine(engine_path, engine_bytes, sidecar: dict) -> Path:
    """Write an engine and then its sidecar, which records the engine's size and SHA-256. The old
    sidecar goes first: a crash part-way leaves an engine without a sidecar (rebuilt next time),
    never a new engine under an old sidecar's key."""
    sidecar_path(engine_path).unlink(missing_ok=True)
    engine_bytes = bytes(engine_bytes)
    sidecar = {**sidecar, "engine_bytes": len(engine_bytes), "engine_sha256": hashlib.sha256(engine_bytes).hexdigest()}
    atomic_write(engine_path, engine_bytes)
    atomic_write(sidecar_path(engine_path), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return Path(engine_path)


def read_sidecar(engine_path) -> dict | None:
    path = sidecar_path(engine_path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_cached(engine_path, key: str) -> bool:
    """True when ``engine_path`` exists, its sidecar says it was built under ``key``, and its content is
    the one the sidecar records (a damaged or cut engine is rebuilt, with a warning)."""
    sidecar = read_sidecar(engine_path)
    if not Path(engine_path).is_file() or sidecar is None or sidecar.get("cache_key") != key:
        return False
    if "engine_sha256" not in sidecar:  # written before sidecars recorded the content
        return True
    if Path(engine_path).stat().st_size == sidecar.get("engine_bytes") and \
            file_sha256(engine_path) == sidecar["engine_sha256"]:
        return True
    warnings.warn(f"the cached engine {engine_path} is corrupt (its content is not the one its sidecar records); "
                  "rebuilding it", stacklevel=2)
    return False


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
