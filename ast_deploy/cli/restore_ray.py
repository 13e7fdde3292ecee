"""``ast-restore --ray``: the single-machine command's inputs, outputs, messages and exit codes on a
Ray cluster (:mod:`ast_deploy.scale` does the work)."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

from ..budget import BudgetWarning
from ..outputs import OutputError, plan_outputs
from ..planning import summary_line
from ..scale import (
    ClusterError,
    RayNotInstalled,
    _cause,
    _exists,
    _first_line,
    _pyarrow_fs,
    cluster,
    import_ray,
    is_uri,
    restore_files,
)
from ..backends import BackendError, backend_kind
from .common import UsageError, load_config, runtime_for, summarize


class _Terminated(Exception):
    pass


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises _Terminated in the driver, so that the cluster is stopped on the way out (Ray's own
    handler, installed by ray.init, would print a stack dump and exit at once)."""
    import signal

    def handler(signum, frame):
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ray_setup(args):
    """(runner keyword arguments, model source) for the workers; RayNotInstalled / UsageError."""
    import_ray()
    source = args.engine or args.onnx or args.weights
    if not source:
        raise UsageError("--ray needs a model file (--onnx, --engine or --weights), not --server")
    if not Path(source).exists():
        raise UsageError(f"{source}: no such file")
    return dict(task=args.task, protocol=args.protocol, device=args.device, config=load_config(args.config),
                max_memory=getattr(args, "max_memory", None), runtime=_worker_runtime(source, args)), source


def run_clips_cli(args, clips, failures) -> int:
    """``ast-restore --ray ADDRESS clips``: every clip split across the workers, joined by the driver."""
    from ..video import VideoOptions
    from ..video.ray_parts import restore_clips
    from .restore_video import describe, model_key, plan_clips

    prog = "ast-restore"
    try:
        runner_kwargs, source = _ray_setup(args)
        jobs, skipped, clashes = plan_clips(clips, args.out, clips, args.force)
    except (RayNotInstalled, UsageError, OutputError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    failures += clashes
    options = VideoOptions(args.codec, args.crf, args.preset, args.gop, False, args.quiet, model_key(args))
    done = 0
    try:
        with cluster(args.ray) as ray, _sigterm_raises():
            for src, dst, error, result in restore_clips(ray, jobs, source, runner_kwargs, options,
                                                         workers=args.workers, gpus_per_worker=args.gpus_per_worker):
                if error:
                    failures.append(error)
                    print(f"{prog}: failed: {error}", file=sys.stderr)
                    continue
                done += 1
                print(describe(src, dst, result))
                if result.lost:
                    failures.append(f"{src}: {len(result.lost)} frame(s) did not decode and repeat the previous one")
    except ClusterError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated) as e:  # outputs are joined by the driver: whole or absent
        print(f"{prog}: {'terminated' if isinstance(e, _Terminated) else 'interrupted'} after restoring "
              f"{done} clip(s)", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    return summarize(done, skipped, failures, args.out, "clip")


def _worker_runtime(source, args) -> str:
    """The runtime the workers open an ONNX with: ``auto`` is decided here, once, so that the workers
    do not each measure (and on one machine at the same time)."""
    runtime = runtime_for(source, args)
    if runtime != "auto" or backend_kind(source) != "onnx":  # auto means nothing to a checkpoint or an engine
        return runtime
    from ..runtime_choice import choose_runtime

    try:
        return choose_runtime(source, args.device, size_multiple=getattr(args, "size_multiple", None)).runtime
    except (OSError, ValueError, BackendError) as e:
        raise UsageError(f"cannot open {source}: {e}") from e


def run_cli(args, inputs, failures) -> int:
    """``ast-restore --ray``: the single-machine command's inputs, outputs, messages and exit codes."""
    prog = "ast-restore"
    try:
        runner_kwargs, source = _ray_setup(args)
    except (RayNotInstalled, UsageError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    out = args.out if is_uri(args.out) else Path(args.out)
    if is_uri(out):
        fs, root = _pyarrow_fs(out)
        fs.create_dir(root, recursive=True)
    jobs, skipped, clashes = plan_outputs(inputs, out, args.force, exists=_exists if is_uri(out) else None)
    failures += clashes
    done, tiled, budget, warned = 0, {}, None, False
    if jobs:
        try:
            with cluster(args.ray) as ray, _sigterm_raises():
                for row in restore_files(ray, jobs, source, runner_kwargs, workers=args.workers,
                                         gpus_per_worker=args.gpus_per_worker, side_by_side=args.side_by_side):
                    if row["usage"]:  # a named protocol over --max-memory: a usage error, as on one machine
                        print(f"{prog}: error: {row['error']}", file=sys.stderr)
                        return 2
                    if row["warning"] and not warned:  # the workers' budget warning, said once
                        warnings.warn(row["warning"], BudgetWarning, stacklevel=1)
                        warned = True
                    if row["tiles"]:
                        key = (row["tiles"], row["reason"])
                        tiled[key], budget = tiled.get(key, 0) + 1, row["budget"]
                    if row["error"]:
                        failures.append(row["error"])
                        print(f"{prog}: failed: {row['error']}", file=sys.stderr)
                    else:
                        done += 1
        except ClusterError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, _Terminated) as e:  # the cluster is stopped; outputs are whole or absent
            print(f"{prog}: {'terminated' if isinstance(e, _Terminated) else 'interrupted'} after restoring "
                  f"{done} image(s)", file=sys.stderr)
            return 143 if isinstance(e, _Terminated) else 130
        except Exception as e:  # a worker could not open the model, or the cluster failed
            model_error = _cause(e)
            if model_error is not None:
                print(f"{prog}: error: {model_error}", file=sys.stderr)
                return 2
            print(f"{prog}: error: the Ray job failed ({type(e).__name__}: {_first_line(e)})", file=sys.stderr)
            return 1
    note = summary_line(tiled, budget)
    if note:
        print(f"{prog}: {note}", file=sys.stderr)
    return summarize(done, skipped, failures, out)
