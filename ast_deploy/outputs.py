"""The one place that decides whether a restored image may be written, for every path that writes
images (``ast-restore`` locally, with Ray, through a server).

An output may be written when it is not one of the inputs (compared as resolved paths and with
``os.path.samefile``, so links and hard links count; refused whatever the flags), does not exist or
``force`` is given, and its folder can be created and written. The folder is checked before any
model is loaded or any image restored.

Rerunning a command that was interrupted (Ctrl-C, ``kill -9``, a full disk, a lost Ray driver)
resumes it: the outputs that exist and are complete are kept, a PNG cut short (no end chunk: a copy
interrupted by another tool) is restored again, and the temporary files that killed writers left
in the folder are removed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .console import note
from .fileio import remove_stale_temporaries

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC


def is_truncated_png(path) -> bool:
    """A file that starts as a PNG but does not end with its IEND chunk (written in part)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - len(PNG_END)))
            tail = f.read()
    except OSError:
        return False
    return head == PNG_SIGNATURE and tail != PNG_END


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
    if present and not force and exists is None and is_truncated_png(dst):
        note(f"{dst} is a PNG cut short (an interrupted copy?): it is restored again")
        return True
    return force or not present


def plan_outputs(inputs, outdir, force: bool, exists=None):
    """(jobs, skipped, failures): the (source, output) pairs to restore (an output is ``outdir/<stem>.png``;
    ``outdir`` a Path, or a URI string joined with "/"), the outputs that exist and are kept without
    ``force`` (``exists`` tests a path, default Path.exists), and the sources whose output is taken.
    Raises OutputError, before anything is written, when an output would replace an input or the
    folder cannot be written (``check_output_dir``, ``check_output``)."""
    check_output_dir(outdir)
    if not _is_uri(outdir):
        left = remove_stale_temporaries(outdir, ".png")
        if left:
            note(f"removed {len(left)} temporary file(s) that an interrupted run left in {outdir}")
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
