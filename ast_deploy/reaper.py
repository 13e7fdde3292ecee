"""Clean up after a driver that dies without its ``finally`` (``kill -9``, the OOM killer).

``ray.init()`` on a local cluster starts the GCS and raylet, which die with the driver, but also
agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) that outlive it, plus a temporary folder.
``watch(pids, folder)`` starts a small process that waits on a pipe from the driver: when the driver
ends the watch normally (``Watch.close``) it does nothing; when the pipe breaks because the driver
died, it kills those processes still running (same pid and start time) and removes the folder.
Linux only (it reads /proc); elsewhere ``watch`` returns a no-op.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

DONE = b"done\n"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks since boot


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, their children, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Watch:
    def __init__(self, process: subprocess.Popen | None):
        self.process = process

    def close(self) -> None:
        """The driver cleaned up itself: end the watch without touching anything."""
        if self.process is None:
            return
        try:
            self.process.stdin.write(DONE)
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def watch(pids: list[int], folder: str | None) -> Watch:
    if not Path("/proc/self/stat").exists():
        return Watch(None)
    targets = [f"{pid}:{start}" for pid in pids if (start := _start_time(pid)) is not None]
    process = subprocess.Popen([sys.executable, "-m", "ast_deploy.reaper", folder or "", *targets],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # out of the terminal's Ctrl-C and of a group kill
    return Watch(process)


def _reap(folder: str, targets: list[str]) -> None:
    for target in targets:
        pid, start = target.split(":")
        if _start_time(int(pid)) == start:  # the same process, not a new one with its pid
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.stdin.buffer.read() != DONE:  # EOF without the word: the driver died
        _reap(sys.argv[1], sys.argv[2:])
