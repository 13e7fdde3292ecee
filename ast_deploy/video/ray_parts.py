"""Clips on a Ray cluster (``ast-restore --ray ADDRESS clips/``): a pool of actors, each holding one
Runner, restores every clip in parts (``split.py``: frame ranges on segment boundaries), and the
driver joins each clip's segments into its output. The output is the file a single process
writes. The inputs and OUT must be at the same path on every node (shared storage)."""

from __future__ import annotations

from pathlib import Path

from .encode import EncoderError
from .probe import VideoError
from .split import join_parts, restore_part, start_parts


class _ClipWorker:
    def __init__(self, source: str, runner_kwargs: dict):
        from ..scale import open_runner

        self.runner = open_runner(source, runner_kwargs)

    def restore_part(self, src: str, dst: str, options, start: int, stop):
        return restore_part(src, dst, self.runner, options, start, stop)


def restore_clips(ray, jobs, source, runner_kwargs: dict, options, *, workers=None, gpus_per_worker: float = 0):
    """Yield (src, dst, error, ClipResult or None) for each (src, dst) job, in order."""
    from ..scale import pool_size

    size, actor_cpus = pool_size(ray, workers, gpus_per_worker)
    worker = ray.remote(num_cpus=actor_cpus, num_gpus=gpus_per_worker or None)(_ClipWorker)
    actors = [worker.remote(str(Path(source).absolute()), runner_kwargs) for _ in range(size)]
    for src, dst in jobs:
        src, dst = Path(src).absolute(), Path(dst).absolute()
        try:
            ranges = start_parts(src, dst, options, size)
            refs = [actors[i % size].restore_part.remote(str(src), str(dst), options, a, b)
                    for i, (a, b) in enumerate(ranges)]
            records = [record for part in ray.get(refs) for record in part]
            yield src, dst, None, join_parts(src, dst, options, records)
        except (VideoError, EncoderError) as e:
            yield src, dst, str(e), None
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, (VideoError, EncoderError)):
                yield src, dst, str(cause), None
            else:
                raise
