"""The one place that decides whether a restored image may be written, for every path that writes
images (``ast-restore`` locally, with Ray, through a server).

An output may be written when it is not one of the inputs (compared as resolved paths and with
``os.path.samefile``, so links and hard links count; refused whatever the flags), does not exist or
``force`` is given, and its folder can be created and written. The folder is checked before any
model is loaded or any image restored.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputError(ValueError):
    """An output that must not or cannot be written (a usage error: exit code 2)."""


class ReplacesInput(OutputError):
    """An output that would replace one of the inputs."""


def _is_uri(out) -> bool:
    return isinstance(out, str) and "://" in out


def check_output_dir(outdir) -> None:
    """Raise OutputError when ``outdir`` cannot hold outputs: an existing file, a path under a file,
    a folder that cannot be written. A URI (Ray's pyarrow file systems) is left to its file system."""
    if _is_uri(outdir):
        return
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"-o {outdir}: is an existing file, not a folder")
    parent = outdir
    while not parent.exists():  # the nearest existing ancestor is what mkdir needs to write into
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"-o {outdir}: cannot be made, {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"-o {outdir}: {parent} is not writable")
    if outdir.is_dir():  # a real write: read-only mounts refuse even root
        try:
            with tempfile.TemporaryFile(dir=outdir):
                pass
        except OSError as e:
            raise OutputError(f"-o {outdir}: cannot write there ({e.strerror or e})") from None


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_output(dst, inputs=(), force: bool = False, exists=None) -> bool:
    """Whether ``dst`` is to be written: True, or False when it exists and ``force`` is off (kept).
    Raises OutputError when ``dst`` is one of ``inputs`` (whatever ``force`` says) or is a folder."""
    if _is_uri(dst):
        return force or not (exists or (lambda p: False))(dst)
    dst = Path(dst)
    resolved = dst.resolve()
    ident = _identity(dst)
    for src in inputs:
        if Path(src).resolve() == resolved or (ident is not None and _identity(src) == ident):
            raise ReplacesInput(f"{dst} is one of the inputs ({src}): restoring would replace the original; "
                              "choose another -o folder")
    if dst.is_dir():
        raise OutputError(f"{dst}: a folder is in the way of this output")
    present = (exists or (lambda p: Path(p).exists()))(dst)
    return force or not present


def plan_outputs(inputs, outdir, force: bool, exists=None):
    """(jobs, skipped, failures): the (source, output) pairs to restore (an output is ``outdir/<stem>.png``;
    ``outdir`` a Path, or a URI string joined with "/"), the outputs that exist and are kept without
    ``force`` (``exists`` tests a path, default Path.exists), and the sources whose output is taken.
    Raises OutputError, before anything is written, when an output would replace an input or the
    folder cannot be written (``check_output_dir``, ``check_output``)."""
    check_output_dir(outdir)
    inputs = list(inputs)
    jobs, skipped, failures, claimed, replacing = [], [], [], {}, []
    for src in inputs:
        name = f"{Path(src).stem}.png"
        dst = Path(outdir) / name if not _is_uri(outdir) else f"{outdir.rstrip('/')}/{name}"
        if dst in claimed:
            failures.append(f"{src}: its output {dst} is already taken by {claimed[dst]}; rename one of them")
            continue
        claimed[dst] = src
        try:
            write = check_output(dst, inputs, force, exists)
        except ReplacesInput as e:
            replacing.append(str(e))
            continue
        except OutputError as e:  # a folder in the way: this input fails, the others run
            failures.append(f"{src}: {e}")
            continue
        if write:
            jobs.append((src, dst))
        else:
            skipped.append(dst)
    if replacing:
        more = f" (and {len(replacing) - 5} more)" if len(replacing) > 5 else ""
        raise OutputError("refusing to write over the inputs, whatever the flags:\n  "
                          + "\n  ".join(replacing[:5]) + more)
    return jobs, skipped, failures
