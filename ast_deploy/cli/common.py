"""What the runtime CLIs share: opening a Runner from command-line options, finding input images."""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

from ..backends import BackendError, backend_kind
from ..backends.triton_client import is_server_url
from ..engines.target import TensorRTNotInstalled
from ..runner import Runner
from ..shapes import parse_size

GLOB_CHARS = set("*?[")


class UsageError(Exception):
    """Bad command-line input found after parsing (missing file, bad JSON): exit code 2."""


def size_arg(text: str) -> tuple[int, int]:
    """argparse type of an ``HxW`` option (``--shape``)."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_options(p: argparse.ArgumentParser, protocol_help: str = "") -> None:
    p.add_argument("--task", help="task (derain, deraindrop, dehaze): architecture and inference protocol")
    p.add_argument("--config", metavar="JSON", help="architecture of a checkpoint: a JSON file or a JSON object")
    p.add_argument("--protocol", help="inference protocol, e.g. square-pad:128, pad:128, tiles:384:80 "
                                      "(default: the task's, else pad to the model's size multiple)" + protocol_help)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (TensorRT engines always run on a GPU)")
    # memory budget (ast_deploy.budget / ast_deploy.planning)
    p.add_argument("--max-memory", metavar="SIZE", type=_memory_size,
                   help="working-memory budget of the model, e.g. 512M, 4G, or 'unlimited' (default: automatic: "
                        "CPU min(2G, available RAM / 4), CUDA 80%% of free memory); images that do not fit run "
                        "as blended tiles")
    p.add_argument("--tile", metavar="SIZE[:OVERLAP]", type=_tile_spec,
                   help="force square tiles of SIZE pixels (a multiple of the model's size multiple), "
                        "feathered over OVERLAP pixels (default: SIZE/16, at least 32)")


def _memory_size(text: str):
    from ..budget import parse_size

    try:
        parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _tile_spec(text: str):
    from ..planning import parse_tile

    try:
        return parse_tile(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def load_config(text: str | None) -> dict | None:
    if text is None:
        return None
    path = Path(text)
    try:
        return json.loads(path.read_text() if path.is_file() else text)
    except ValueError as e:
        raise UsageError(f"--config {text!r} is neither a JSON file nor a JSON object: {e}") from None


def open_runner(source, args: argparse.Namespace):
    """A Runner for ``source`` (checkpoint, .onnx or engine) with the task / config / protocol / device
    options; a missing or unreadable model is a UsageError."""
    if not is_server_url(source) and not Path(source).exists():
        raise UsageError(f"{source}: no such file")
    # --config is the architecture of a checkpoint; ONNX models and engines record their own
    config = load_config(args.config) if backend_kind(source) == "pytorch" else None
    try:
        return Runner(source, task=args.task, protocol=args.protocol, device=args.device, config=config,
                      max_memory=getattr(args, "max_memory", None), tile=getattr(args, "tile", None),
                      progress=getattr(args, "tile_progress", None))
    # CheckpointError is a ValueError, so are bad tasks and protocols; engines need TensorRT and a GPU
    except (OSError, ValueError, BackendError, TensorRTNotInstalled) as e:
        raise UsageError(f"cannot open {source}: {e}") from e


def expand_inputs(items: list[str], suffixes) -> tuple[list[Path], list[str]]:
    """Files, folders (their images, sorted) and glob patterns -> (image paths, problems). A file given
    by name is kept whatever its suffix (reading it will say what is wrong); a name that matches
    nothing is a problem."""
    found, problems = [], []
    for item in items:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not images:
                problems.append(f"{item}: no images in this folder ({', '.join(sorted(suffixes))})")
            found += images
        elif path.is_file():
            found.append(path)
        elif GLOB_CHARS & set(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                problems.append(f"{item}: matches no file")
            found += matches
        else:
            problems.append(f"{item}: no such file or folder")
    unique = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values()), problems
