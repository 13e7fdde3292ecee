"""The three stages of a clip's restoration, run as threads joined by bounded queues:
decode (+ conversion to RGB float), inference (the Runner, in the caller's thread, in batches the
memory budget allows), encode (+ conversion back, one segment per GOP). Each stage's busy time is
added up, to show where a clip's time goes."""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

END = object()


@dataclass
class Item:
    index: int  # frame number in decoding order
    pts: int | None
    duration: int | None
    rgb: np.ndarray | None  # [3, H, W] float32; None: the frame could not be decoded


class Pipe:
    """Stop flag, first error and busy time shared by the stages."""

    def __init__(self):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.busy = defaultdict(float)

    def stage(self, fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as e:  # the caller's thread re-raises it
                self.errors.append(e)
                self.stop.set()

        thread = threading.Thread(target=run, name=getattr(fn, "__name__", "stage"), daemon=True)
        thread.start()
        return thread

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue, stopping_ok: bool = False):
        while True:
            self.check()
            if self.stop.is_set() and not stopping_ok:
                return END
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue

    def timed(self, name: str):
        pipe = self

        class _Timer:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                pipe.busy[name] += time.perf_counter() - self.t

        return _Timer()


def infer_stage(runner, plan, batch: int, pipe: Pipe, inbox: queue.Queue, outbox: queue.Queue, progress) -> None:
    """Restore frames in batches of ``batch`` (the plan's, bounded) in this thread; lost frames
    (``rgb`` None) pass through in their place."""
    pending: list[Item] = []

    def flush():
        good = [item for item in pending if item.rgb is not None]
        if good:
            with pipe.timed("inference"):
                restored = runner.run_nchw(np.stack([item.rgb for item in good]), plan=plan)
            for item, frame in zip(good, restored):
                item.rgb = frame
        for item in pending:
            if not pipe.put(outbox, item):
                return
        progress.update(len(pending))
        pending.clear()

    while True:
        item = pipe.get(inbox)
        if item is END:
            flush()
            pipe.put(outbox, END)
            return
        pending.append(item)
        if sum(i.rgb is not None for i in pending) >= batch:
            flush()
