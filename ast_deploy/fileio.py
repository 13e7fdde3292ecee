"""Writing files so that a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

# Errors of the folder being written to, not of one file: every later write there fails the same way.
FOLDER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class WriteError(OSError):
    """A file that could not be written (nothing is left under its name or a temporary one); the
    errno and strerror are the system's."""

    def __init__(self, path, error: OSError):
        super().__init__(error.errno, error.strerror or str(error), str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror}"

    @property
    def folder_failed(self) -> bool:
        """The folder cannot take files any more (full, read-only, not writable)."""
        return self.errno in FOLDER_ERRNOS


def temporary_name(name: str, token: str) -> str:
    """The temporary name a file ``name`` is written under first: hidden, with the writing process's
    id so that a later run can tell a dead writer's leftover (``remove_stale_temporaries``)."""
    return f".{name}.{os.getpid()}.{token}.tmp"


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def remove_stale_temporaries(folder, suffix: str = "") -> list[Path]:
    """Remove the temporary files that writers killed in the middle (``kill -9``, a lost node) left in
    ``folder`` for names ending with ``suffix``; those of processes still running on this machine are
    kept. Returns the removed paths."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match and match["name"].endswith(suffix) and not _alive(int(match["pid"])) and entry.is_file():
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
    return removed


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write to a temporary file beside ``path``, then rename it over ``path`` (a killed process
    leaves the previous file, or none, never a truncated one; a failed write raises WriteError and
    leaves no temporary file)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(path, e) from e
        raise
    return path


_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"), (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"), (b"\xfd7zXZ", "an xz archive"), (b"BZh", "a bzip2 archive"),
    (b"\x7fELF", "an executable (ELF)"), (b"PK\x03\x04", "a zip archive"),
]


def describe_file(head: bytes) -> str | None:
    """What the first bytes of a file look like ("an HTML page", "a JPEG image", "a zip archive",
    "a Python pickle", ...), or None when they say nothing recognisable."""
    if not head:
        return "an empty file"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "a Python pickle"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head.lower():
        return "an HTML page (a download that saved a web page instead of the file?)"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "an XML or HTML document"
    if text.startswith((b"{", b"[")):
        return "a JSON or text file"
    if text.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer (the file itself was never downloaded: git lfs pull)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return None
