"""Progress of the tiles inside one image: a tqdm bar on a terminal, nothing in a log or with quiet."""

from __future__ import annotations

import sys


class TileProgress:
    """A ``progress(done, total)`` callable for ``Runner(progress=...)``: one bar per image that runs
    as more than one batch of tiles, shown only where stderr is a terminal (tqdm's ``disable=None``)."""

    def __init__(self, desc: str = "tiles", file=None, quiet: bool = False):
        self.desc, self.file, self.quiet = desc, file or sys.stderr, quiet
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            if done >= total:  # one batch: nothing to show
                return
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="tile", leave=False, file=self.file, disable=None)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()
            self.bar = None
