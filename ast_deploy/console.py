"""What the tools print while they work: one progress helper and the package's own notes.

``Progress`` draws a tqdm bar on a terminal, writes plain lines (``restoring: 2/5 rain.png``) when
stderr is a file or a pipe (a log gets no ``\\r`` redraws), and nothing with ``quiet``; messages
passed to ``write`` always appear.

``Note`` is the warning category of the package's own remarks (an alpha channel dropped, CMYK
converted without a colour profile); the command-line tools print each as one
``<tool>: note: ...`` line, a library calling the API sees ordinary warnings.
"""

from __future__ import annotations

import sys
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
                 stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.desc, self.n = total, desc, 0
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
        elif self.mode == "lines":
            count = f"{self.n}/{self.total}" if self.total else str(self.n)
            print(f"{self.desc}: {count}" + (f" {status}" if status else ""), file=self.stream, flush=True)

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
