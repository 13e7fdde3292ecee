"""What the tools print while they work: one progress helper and the package's own notes.

``Progress`` draws a tqdm bar on a terminal, writes plain lines (``restoring: 2/5 rain.png``) when
stderr is a file or a pipe (a log gets no ``\\r`` redraws), and nothing with ``quiet``; messages
passed to ``write`` always appear. ``TileProgress`` is the same helper as a ``progress(done, total)``
callable for the tiles inside one image (``Runner(progress=...)``).

``Note`` is the warning category of the package's own remarks (an alpha channel dropped, CMYK
converted without a colour profile); the command-line tools print each as one
``<tool>: note: ...`` line, a library calling the API sees ordinary warnings.
"""

from __future__ import annotations

import sys
import time
import warnings


class Note(UserWarning):
    """A remark about the user's input that changes nothing they must act on."""


def note(message: str, stacklevel: int = 3) -> None:
    warnings.warn(message, Note, stacklevel=stacklevel)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """``with Progress(total=n, desc="restoring") as bar: ... bar.update(status=name)``."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "item", quiet: bool = False,
                 stream=None, lines: int | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.desc, self.n, self.unit = total, desc, 0, unit
        # lines: in a log, about that many lines in all (every total/lines items, or every 30 s
        # without a total), each with the rate and the time left; None: a line per update
        self.lines, self._logged, self._start, self._n0 = lines, 0, time.monotonic(), 0
        self.mode = "none" if quiet else "bar" if _is_terminal(self.stream) else "lines"
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, status: str | None = None) -> None:
        self.n += n
        if self._bar is not None:
            if status:
                self._bar.set_postfix_str(status, refresh=False)
            self._bar.update(n)
        elif self.mode == "lines" and self._due():
            count = f"{self.n}/{self.total}" if self.total else str(self.n)
            print(f"{self.desc}: {count}" + self._rate() + (f" {status}" if status else ""), file=self.stream,
                  flush=True)

    def _due(self) -> bool:
        if self.lines is None:
            return True
        if self.total:
            step = max(1, self.total // self.lines)
            due = self.n >= self.total or self.n // step > self._logged // step
        else:
            due = time.monotonic() - self._start >= 30 * (self._logged + 1)
        if due:
            self._logged = self.n if self.total else self._logged + 1
        return due

    def _rate(self) -> str:
        """', 3.1 frame/s, 1m56s left' (thinned logs only)."""
        elapsed = time.monotonic() - self._start
        if self.lines is None or elapsed <= 0 or not self.n:
            return ""
        rate = (self.n - self._n0) / elapsed
        if rate <= 0:
            return ""
        text = f" {self.unit}(s), {rate:.3g} {self.unit}/s"
        if self.total and self.n < self.total:
            left = int((self.total - self.n) / rate)
            text += f", {left // 60}m{left % 60:02d}s left"
        return text

    def restart_clock(self) -> None:
        """Rates count from now and from the current count (work skipped, e.g. frames --resume kept)."""
        self._start, self._n0, self._logged = time.monotonic(), self.n, self.n
        if self._bar is not None:
            self._bar.reset(total=self.total)
            self._bar.initial = self._bar.n = self.n
            self._bar.refresh()

    def describe(self, desc: str) -> None:
        """A new description (a stage's name); shown on the bar at once, on the next line in a log."""
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description_str(desc)

    def write(self, message: str) -> None:
        """A message that must be seen (a failure), printed without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TileProgress:
    """``Runner(progress=TileProgress(quiet=...))``: a :class:`Progress` of the tiles of each image
    that runs as more than one batch of tiles (a bar on a terminal, plain lines in a log, nothing
    with ``quiet``). In a log it writes at most ``lines`` lines per image (every tenth by default),
    the last one when the image is done. ``desc`` may be changed between images (the file's name)."""

    def __init__(self, desc: str = "tiles", quiet: bool = False, stream=None, lines: int = 10):
        self.desc, self.quiet, self.stream, self.lines = desc, quiet, stream, max(1, lines)
        self._progress, self._shown = None, 0

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self._progress is None:
            if done >= total:  # one batch: nothing to show
                return
            self._progress = Progress(total=total, desc=self.desc, unit="tile", stream=self.stream)
            self._shown = 0
        bar = self._progress
        step = max(1, total // self.lines)
        if bar.mode == "bar" or done >= total or done // step > self._shown // step:
            bar.update(done - self._shown)
            self._shown = done
        if done >= total:
            bar.close()
            self._progress = None
