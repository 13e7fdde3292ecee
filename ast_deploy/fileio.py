"""Writing files so that a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write to a temporary file beside ``path``, then rename it over ``path`` (a killed process
    leaves the previous file, or none, never a truncated one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
