"""The work folder of a clip being restored: finished segments and a manifest, beside the output.

``out/.clip.mp4.parts/`` holds ``seg00000.nut``, ``seg00001.nut``, ... (each one closed GOP of
``gop`` frames, the last one shorter) and ``manifest.json``, rewritten atomically after each
segment, which records what the segments were made from (input, model, encoder) so that
``--resume`` continues only the same job. The folder is removed once the clip is joined.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..fileio import atomic_write


def work_folder(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.parts"


class WorkFolder:
    def __init__(self, dst: Path, key: dict):
        self.path, self.key = work_folder(dst), key
        self.segments: list[dict] = []  # {"file", "first", "frames", "lost", "end"}

    def resume(self) -> tuple[int, str | None]:
        """(segments kept, why none were): the finished segments of the same job, else a fresh start."""
        manifest = self.path / "manifest.json"
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            return 0, "no finished segment to resume from"
        if data.get("key") != self.key:
            return 0, "the work folder was made from another input, model or encoder settings"
        kept, first = [], 0
        for seg in data.get("segments", []):
            if seg.get("first") != first or not (self.path / seg["file"]).is_file():
                break
            kept.append(seg)
            first += seg["frames"]
        self.segments = kept
        return len(kept), None if kept else "no finished segment to resume from"

    def start_fresh(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        self.segments = []

    def clear_partial(self) -> None:
        """Remove what an interrupted run left beyond the manifest's segments."""
        keep = {seg["file"] for seg in self.segments} | {"manifest.json"}
        for item in self.path.iterdir():
            if item.name not in keep:
                item.unlink(missing_ok=True)

    @property
    def next_frame(self) -> int:
        return sum(seg["frames"] for seg in self.segments)

    def segment_path(self, number: int, partial: bool = False) -> Path:
        return self.path / (f"seg{number:05d}.nut" + (".partial" if partial else ""))

    def add(self, number: int, first: int, frames: int, lost: list, end: int | None) -> None:
        """Record segment ``number`` (already renamed into place) in the manifest; ``end``: the
        timestamp where its last frame ends (NUT files keep no packet durations)."""
        self.segments.append({"file": self.segment_path(number).name, "first": first, "frames": frames,
                              "lost": lost, "end": end})
        atomic_write(self.path / "manifest.json", json.dumps({"key": self.key, "segments": self.segments}))

    def files(self) -> list[tuple[Path, int | None]]:
        """(segment file, timestamp where it ends) in order."""
        return [(self.path / seg["file"], seg.get("end")) for seg in self.segments]

    def lost(self) -> list:
        return [t for seg in self.segments for t in seg["lost"]]

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
