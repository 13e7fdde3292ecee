"""NVIDIA's real TensorRT-RTX (``tensorrt-rtx-cu12-libs`` + ``-bindings``, PyPI) for the tests.

Used as installed when ``tensorrt_rtx_bindings`` imports (``pip install '.[tensorrt-rtx]'``); else
the two wheels are installed with ``pip install --no-deps --target`` into a cache
(``$AST_TRT_WHEELS``, default ``~/.cache/ast-deploy/trt-wheels``, like the bindings wheels of
``trt_qdp.py``: NVIDIA's wheels are never committed) and put on ``sys.path``. Where neither works
(offline), the tests skip with the reason. Its builder runs without a GPU; deserializing, running
and refitting an engine need one.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "1.7.1.116"
PACKAGES = ("tensorrt-rtx-cu12-libs", "tensorrt-rtx-cu12-bindings")


class Unavailable(RuntimeError):
    """TensorRT-RTX could not be had here: the tests skip with this reason."""


def cache_dir() -> Path:
    return Path(os.environ.get("AST_TRT_WHEELS") or Path.home() / ".cache" / "ast-deploy" / "trt-wheels")


def target_dir() -> Path:
    return cache_dir() / f"rtx-{VERSION}"


def _install(folder: Path) -> None:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q", "--target",
           str(partial), *(f"{p}=={VERSION}" for p in PACKAGES)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"cannot install TensorRT-RTX {VERSION}: {e}") from None
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Unavailable(f"cannot download TensorRT-RTX {VERSION} from PyPI (offline?): {tail[0]}")
    partial.rename(folder)  # whole or not at all: a half-installed cache is never used


def pythonpath() -> str:
    """What a subprocess needs on PYTHONPATH to import the cached TensorRT-RTX ('' if installed)."""
    folder = target_dir()
    return str(folder) if str(folder) in sys.path else ""


def load():
    """The ``tensorrt_rtx_bindings`` module, installed or from the cache; Unavailable otherwise."""
    try:
        return importlib.import_module("tensorrt_rtx_bindings")
    except (ImportError, OSError):
        pass
    folder = target_dir()
    if not (folder / "tensorrt_rtx_bindings").is_dir():
        _install(folder)
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    try:
        return importlib.import_module("tensorrt_rtx_bindings")
    except (ImportError, OSError) as e:
        raise Unavailable(f"TensorRT-RTX {VERSION} from {folder} does not import: {e}") from None
