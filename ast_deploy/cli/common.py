"""What the CLIs share: the entry-point wrapper (signals, warnings, exit codes), ``--version``,
opening a Runner from command-line options, finding input images."""

from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import signal
import sys
import warnings
from pathlib import Path

from ..backends import RUNTIMES, BackendError, backend_kind
from ..backends.triton_client import is_server_url
from ..budget import BudgetWarning
from ..budget import parse_size as parse_memory_size
from ..console import Note
from ..engines.target import TensorRTNotInstalled
from ..planning import parse_tile
from ..runner import Runner, check_device
from ..shapes import parse_size
from ..tasks import get_task

EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143

GLOB_CHARS = set("*?[")


class UsageError(Exception):
    """Bad command-line input found after parsing (missing file, bad JSON): exit code 2."""


class Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler ``tool_main`` installs; like KeyboardInterrupt
    it is no Exception, so ``except Exception`` blocks let it through and ``finally`` blocks (the
    atomic writer's clean-up of its temporary file) run."""


def tool_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("ast-deploy")
    except (ImportError, PackageNotFoundError):  # a source tree that was never installed
        pass
    try:  # the version in the source tree's pyproject.toml
        import re

        text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
        return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1) + " (not installed)"
    except (OSError, AttributeError):
        return "unknown (not installed)"


def add_version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"{p.prog} (ast-deploy) {tool_version()}")


def _show_warning(prog):
    def show(message, category, filename, lineno, file=None, line=None):

        kind = "note" if issubclass(category, Note) else "warning"
        print(f"{prog}: {kind}: {message}", file=sys.stderr, flush=True)

    return show


def quiet_libraries() -> None:
    """Keep the libraries' own warnings (torch's UserWarnings, the exporter's deprecations, ONNX
    Runtime's C++ log below errors) from users, who cannot act on them; the package's own notes and
    warnings stay, one line each (see ``tool_main``)."""
    warnings.simplefilter("ignore")
    warnings.filterwarnings("default", module=r"ast_deploy(\.|$)")

    warnings.filterwarnings("default", category=Note)
    warnings.filterwarnings("default", category=BudgetWarning)  # once per message: the runner says it once


def tool_main(prog: str):
    """Decorator of every console script's ``main(argv)``: SIGTERM raises ``Terminated``; Ctrl-C
    and SIGTERM end the tool with one line and exit 130 / 143 (temporary files are removed by the
    ``finally`` of ``fileio.atomic_write``, so no partial output remains); library warnings are
    silenced and the package's own printed as ``<prog>: note: ...``; an unexpected error is one
    line with exit 1 (``AST_DEBUG=1`` shows its traceback)."""
    def wrap(main):
        @functools.wraps(main)
        def run(argv=None) -> int:
            def on_sigterm(signum, frame):
                raise Terminated()

            previous = None
            try:
                previous = signal.signal(signal.SIGTERM, on_sigterm)
            except ValueError:  # not the main thread: leave signals alone
                pass
            old_show = warnings.showwarning
            try:
                with warnings.catch_warnings():
                    quiet_libraries()
                    warnings.showwarning = _show_warning(prog)
                    return main(argv)
            except KeyboardInterrupt:
                print(f"\n{prog}: interrupted; finished outputs are kept, none is half-written", file=sys.stderr)
                return EXIT_INTERRUPTED
            except Terminated:
                print(f"{prog}: terminated; finished outputs are kept, none is half-written", file=sys.stderr)
                return EXIT_TERMINATED
            except Exception as e:
                if os.environ.get("AST_DEBUG"):
                    raise
                print(f"{prog}: internal error: {type(e).__name__}: {e} (AST_DEBUG=1 shows the traceback)",
                      file=sys.stderr)
                return 1
            finally:
                warnings.showwarning = old_show
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)

        return run

    return wrap


def device_arg(text: str) -> str:
    """argparse type of ``--device``: cpu, cuda or cuda:N."""
    try:
        return check_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def task_arg(text: str) -> str:
    """argparse type of ``--task``: a known task, named in the error when it is not."""
    try:
        return get_task(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def size_arg(text: str) -> tuple[int, int]:
    """argparse type of an ``HxW`` option (``--shape``)."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_model_options(p: argparse.ArgumentParser, protocol_help: str = "") -> None:
    p.add_argument("--task", type=task_arg, help="task (derain, deraindrop, dehaze): architecture and inference protocol")
    p.add_argument("--config", metavar="JSON", help="architecture of a checkpoint: a JSON file or a JSON object")
    p.add_argument("--protocol", help="inference protocol, e.g. square-pad:128, pad:128, tiles:384:80 "
                                      "(default: the task's, else pad to the model's size multiple)" + protocol_help)
    p.add_argument("--device", default="cpu", type=device_arg,
                   help="cpu, cuda or cuda:N (TensorRT engines always run on a GPU)")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="what runs an ONNX model on the CPU: onnxruntime, openvino, or auto (default: the fastest "
                        "installed one that holds the export's tolerance, measured once per model and cached; "
                        "AST_RUNTIME=NAME skips the measurement)")
    p.add_argument("--size-multiple", type=positive_int, metavar="N",
                   help="H and W multiple of an ONNX model without ast.size_multiple metadata (one not made "
                        "by ast-export); such a model also needs --task or --protocol")
    # memory budget (ast_deploy.budget / ast_deploy.planning)
    p.add_argument("--max-memory", metavar="SIZE", type=_memory_size,
                   help="working-memory budget of the model, e.g. 512M, 4G, or 'unlimited' (default: automatic: "
                        "CPU min(2G, available RAM / 4), CUDA 80%% of free memory); images that do not fit run "
                        "as blended tiles")
    p.add_argument("--tile", metavar="SIZE[:OVERLAP]", type=_tile_spec,
                   help="force square tiles of SIZE pixels (a multiple of the model's size multiple), "
                        "feathered over OVERLAP pixels (default: SIZE/16, at least 32)")


def _memory_size(text: str):
    try:
        parse_memory_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _tile_spec(text: str):

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
                      size_multiple=getattr(args, "size_multiple", None), force=getattr(args, "force", False),
                      max_memory=getattr(args, "max_memory", None), tile=getattr(args, "tile", None),
                      progress=getattr(args, "tile_progress", None), runtime=runtime_for(source, args))
    # CheckpointError is a ValueError, so are bad tasks and protocols; engines need TensorRT and a GPU
    except (OSError, ValueError, BackendError, TensorRTNotInstalled) as e:
        raise UsageError(f"cannot open {source}: {e}") from e


def runtime_for(source, args: argparse.Namespace) -> str:
    """``--runtime`` for an ONNX source; "auto" for the others (ast-check's checkpoint reference runs on
    PyTorch whatever runtime its ONNX candidate is given)."""
    runtime = getattr(args, "runtime", None) or "auto"
    return runtime if not is_server_url(source) and backend_kind(source) == "onnx" else "auto"


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


def summarize(done: int, skipped: list, failures: list[str], outdir, kind: str = "image") -> int:
    """Print the closing summary; the exit code (1 when an input failed)."""
    print(f"restored {done} {kind}(s) into {outdir}"
          + (f", skipped {len(skipped)} that exist (--force overwrites)" if skipped else "")
          + (f", {len(failures)} failed:" if failures else ""), file=sys.stderr if failures else sys.stdout)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    return 1 if failures else 0
