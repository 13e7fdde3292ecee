"""Scale out on a Ray cluster with Ray Data: ``ast-restore --ray ADDRESS`` and ``restore_dataset``.

``ast-restore --ray`` makes a dataset of the input paths; Ray tasks decode them with the project's own
reader (16-bit images and broken files behave as on one machine), an actor pool restores them (each
actor holds one backend through the project's ``Runner``) and the actors write the results atomically
with the single-machine writer. On a multi-node cluster the inputs, the model file and OUT must be
visible at the same path on every node (shared storage), or OUT a filesystem URI that pyarrow opens
(``s3://bucket/restored``, ``gs://...``): the actors write there, not the driver.

Everything from Ray is imported inside functions: the project runs without it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .fileio import temporary_name
from .images import (
    Image,
    encode_png,
    quantize,
    read_image,
    restore_image,
    to_unit_float,
    write_png,
)
from .outputs import is_truncated_png
from .reaper import descendants, watch

RAY_MISSING = 'Ray Data is not installed; install it with: pip install -e ".[ray]"'
# CPUs a decoding task asks for. Ray Data fuses a task map into the next actor map when both ask the
# same resources; an actor then decodes its own inputs and a GPU waits for the decoder, so actors never
# ask exactly this share (pool_size).
READ_CPUS = 0.5
MIN_ACTOR_CPUS = 0.25


class RayNotInstalled(ImportError):
    pass


class ClusterError(RuntimeError):
    """The cluster cannot be started or joined, or cannot hold the pool asked for."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayNotInstalled(RAY_MISSING) from e
    return ray


@contextlib.contextmanager
def _loopback_node():
    """Ray resolves ``_node_ip_address="127.0.0.1"`` to the machine's outward address (and its servers
    then listen on every interface) unless cluster mode is off, which its environment variable
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 does; the processes started meanwhile inherit it."""
    try:  # read when Ray was imported: set it too (check_loopback verifies the outcome on any version)
        from ray._private import ray_constants
    except ImportError:
        ray_constants = None
    saved_env = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")}
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    # Ray 2.60 turns token authentication on for a new local cluster (token in ~/.ray/auth_token) and
    # warns that it did, with how to opt out: keep it on, without the warning (README: Scale out).
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    auth_level = auth_log.level
    auth_log.setLevel(logging.ERROR)
    if saved is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        auth_log.setLevel(auth_level)
        if saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved
        for key, value in saved_env.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def check_loopback(ray) -> None:
    """Raise ClusterError unless every node and the GCS of the connected cluster are on 127.0.0.1."""
    gcs = ray.get_runtime_context().gcs_address
    nodes = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive", True)}
    if nodes != {"127.0.0.1"} or not gcs.startswith("127.0.0.1:"):
        raise ClusterError(f"the local Ray cluster is not bound to loopback only (GCS {gcs}, nodes {sorted(nodes)})")


@contextlib.contextmanager
def cluster(address: str, *, num_cpus: int | None = None, num_gpus: int | None = None):
    """Connect to a Ray cluster for the duration of the block and yield the ``ray`` module.

    ``"local"`` starts a cluster on this machine bound to 127.0.0.1 only (no dashboard, a private
    temporary folder) and stops it at the end, leaving no Ray process; ``"auto"`` joins the cluster
    this machine belongs to; ``"ray://host:port"`` (Ray Client) or ``"host:port"`` joins that one.
    When this process is already connected, that connection is used and left open.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    temp, reaper = None, None
    try:
        if address == "local":
            temp = tempfile.mkdtemp(prefix="ast-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
            with _loopback_node():
                ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, _temp_dir=temp,
                         num_cpus=num_cpus, num_gpus=num_gpus)
            reaper = watch(descendants(os.getpid()), temp)  # a driver killed -9 leaves no agent or folder
            check_loopback(ray)
        else:
            ray.init(address=address)
    except ClusterError:
        ray.shutdown()
        raise
    except Exception as e:  # Ray raises ConnectionError, ValueError, RuntimeError... for a cluster it cannot reach
        ray.shutdown()
        raise ClusterError(f"cannot {'start a local' if address == 'local' else 'join the'} Ray cluster "
                           f"{'' if address == 'local' else address + ' '}({type(e).__name__}: {_first_line(e)})") from e
    finally:
        if temp is not None and not ray.is_initialized():
            shutil.rmtree(temp, ignore_errors=True)
            if reaper is not None:
                reaper.close()
    try:
        yield ray
    finally:
        ray.shutdown()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        if reaper is not None:
            reaper.close()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def pool_size(ray, workers: int | None, gpus_per_worker: float = 0) -> tuple[int, float]:
    """(actors, CPUs per actor) for the connected cluster. Actors take fractional CPUs and leave at
    least READ_CPUS for the decoding tasks (an actor pool that takes every CPU starves the reads and
    the job never ends). Default size: one actor per ``gpus_per_worker`` GPUs, else one per CPU but one."""
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if gpus_per_worker and gpus < gpus_per_worker:
        raise ClusterError(f"--gpus-per-worker {gpus_per_worker:g}: the cluster has {gpus:g} GPU(s)")
    if workers is None:
        workers = int(gpus // gpus_per_worker) if gpus_per_worker else max(1, int(cpus) - 1)
    if workers < 1:
        raise ClusterError(f"--workers must be at least 1, not {workers}")
    if gpus_per_worker and workers * gpus_per_worker > gpus:
        raise ClusterError(f"{workers} worker(s) x {gpus_per_worker:g} GPU(s) is more than the cluster's {gpus:g} GPU(s)")
    actor_cpus = min(1.0, max(MIN_ACTOR_CPUS, (cpus - 1.0) / workers))
    if abs(actor_cpus - READ_CPUS) < 1e-6:  # keep decoding in tasks of its own (see READ_CPUS)
        actor_cpus = READ_CPUS - 0.05
    if workers * actor_cpus + READ_CPUS > cpus:
        raise ClusterError(f"--workers {workers}: the cluster's {cpus:g} CPU(s) cannot hold {workers} worker(s) of "
                           f"{MIN_ACTOR_CPUS:g} CPU and leave {READ_CPUS:g} CPU to read the images")
    return workers, actor_cpus


def open_runner(source, runner_kwargs: dict):
    """The project's Runner for ``source``; ``max_memory`` is passed only to a Runner that takes it."""
    from .runner import Runner

    kwargs = dict(runner_kwargs)
    if kwargs.get("max_memory") is None or "max_memory" not in inspect.signature(Runner).parameters:
        kwargs.pop("max_memory", None)
    try:
        return Runner(source, **kwargs)
    except Exception as e:
        raise ModelError(f"cannot open {source}: {e}") from e


class ModelError(RuntimeError):
    """A worker cannot open the model (a usage error: exit 2)."""


def _failure(row: dict, e: BaseException) -> str:
    """The single-machine path's wording, with the path as the user gave it (workers see absolute ones)."""
    message = str(e).replace(row["path"], row["src"])
    return message if row["src"] in message else f"{row['src']}: {type(e).__name__}: {message}"


# ------------------------------------------------------------------- output files

def is_uri(out: str) -> bool:
    return "://" in str(out)


def _pyarrow_fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def write_output(dst: str, pixels: np.ndarray, bit_depth: int) -> None:
    """Write a restored image as the single-machine path does: a PNG of the source's bit depth, written
    to a temporary name and renamed (on a pyarrow filesystem: moved) over ``dst``."""

    if not is_uri(dst):
        write_png(dst, pixels, bit_depth)
        return
    fs, path = _pyarrow_fs(dst)
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    tmp = temporary_name(name, os.urandom(4).hex())
    tmp = f"{parent}/{tmp}" if parent else tmp
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(encode_png(pixels, bit_depth))
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete_file(tmp)
        raise


def _exists(dst: str) -> bool:
    import pyarrow.fs

    fs, path = _pyarrow_fs(dst)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


# ------------------------------------------------------------------- Ray Data stages

def _read_row(row: dict) -> dict:
    """A Ray task: decode one path with the project's reader; a file that cannot be read becomes a row
    with its error and no pixels (reported and skipped, as on one machine)."""

    try:
        image = read_image(row["path"])
        pixels = quantize(image.pixels, image.bit_depth)  # the file's integers: 4x (2x) less to ship than float32
        if not np.array_equal(to_unit_float(pixels)[0], image.pixels):  # a float TIFF: ship it as it is
            pixels = image.pixels
        return {**row, "pixels": pixels, "bit_depth": image.bit_depth, "error": ""}
    except Exception as e:
        return {**row, "pixels": np.zeros((0, 0, 3), np.float32), "bit_depth": 8, "error": _failure(row, e)}


class _FileRestorer:
    """An actor of the pool: one backend, restores decoded rows and writes their outputs."""

    def __init__(self, source, runner_kwargs: dict, side_by_side: bool = False):
        self.runner = open_runner(source, runner_kwargs)
        self.side_by_side = side_by_side

    def __call__(self, row: dict) -> dict:
        """The row's outcome: its error ("" when written); ``usage`` when the error is the user's
        (a named protocol over an explicit --max-memory: the driver stops, as on one machine); the
        photo's plan when it ran as tiles and the library's budget warning, which the driver says
        once for the run (a worker's own log is not where a user looks)."""
        from .budget import BudgetError, BudgetWarning

        result = {"src": row["src"], "dst": row["dst"], "error": row["error"], "usage": False,
                  "tiles": "", "reason": "", "warning": "", "budget": float(self.runner.budget)}
        if row["error"] or _written_since(row["out"], row["since"]):
            return result
        before = dict(self.runner.tiled_photos)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BudgetWarning)
            try:
                pixels = np.asarray(row["pixels"])  # the exact float32 pixels read_image gave
                pixels = pixels if np.issubdtype(pixels.dtype, np.floating) else to_unit_float(pixels)[0]
                image = Image(pixels, int(row["bit_depth"]))
                write_output(row["out"], restore_image(image, self.runner, self.side_by_side), image.bit_depth)
            except BudgetError as e:
                result["error"], result["usage"] = _failure(row, e), True
            except Exception as e:  # one bad file must not stop the batch
                result["error"] = _failure(row, e)
        said = [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]
        result["warning"] = said[0] if said else ""
        tiled = [key for key, n in self.runner.tiled_photos.items() if n > before.get(key, 0)]
        if tiled:
            result["tiles"], result["reason"] = tiled[0]
        return result


def _written_since(out: str, since: float) -> bool:
    """Whether this job already wrote ``out`` (a local path): a task that Ray retries after its worker
    died (killed, out of memory) between writing the output and reporting it does not write it twice.
    The driver planned only outputs that were absent (or, with --force, older than ``since``)."""
    if is_uri(out):
        return False
    try:
        return os.stat(out).st_mtime >= since and not is_truncated_png(out)
    except OSError:
        return False


class _ArrayRestorer:
    def __init__(self, source, runner_kwargs: dict, column: str, output_column: str):
        self.runner = open_runner(source, runner_kwargs)
        self.column, self.output_column = column, output_column

    def __call__(self, row: dict) -> dict:
        pixels = np.asarray(row[self.column])
        if pixels.dtype in (np.uint8, np.uint16):
            restored = self.runner(pixels)  # HWC in, HWC of the same type out
        elif np.issubdtype(pixels.dtype, np.floating) and pixels.ndim == 3:
            chw = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
            restored = np.clip(self.runner(chw), 0.0, 1.0).transpose(1, 2, 0)
        else:
            raise TypeError(f"column {self.column!r}: expected H x W x C uint8, uint16 or float pixels, "
                            f"got {pixels.dtype} of shape {pixels.shape}")
        return {**row, self.output_column: restored}


def restore_dataset(ds, source, *, column: str = "image", output_column: str | None = None,
                    task: str | None = None, protocol: str | None = None, device: str = "cpu",
                    config: dict | None = None, max_memory=None, workers: int | None = None,
                    gpus_per_worker: float = 0):
    """Restore the images of a Ray Dataset; returns a (lazy) Dataset of the restored images.

    ``ds`` has a ``column`` of H x W x C pixel arrays, for example ``ray.data.read_images(uri)``'s
    ``"image"`` column: uint8 / uint16 arrays come back restored with the same type (clipped and
    rounded), float arrays in [0, 1] as float32 in [0, 1]. The restored pixels replace ``column``
    (or go to ``output_column``); other columns are kept. Images of any size, mixed in one dataset.

    ``source`` is the model: a checkpoint, ``.onnx`` or TensorRT engine path readable on every node,
    opened by ``ast_deploy.Runner`` with ``task``, ``protocol``, ``device``, ``config`` and the
    per-worker memory budget ``max_memory``, once per actor. ``workers`` actors (default: one per
    ``gpus_per_worker`` GPUs, else one per CPU of the cluster but one) each take fractional CPUs so
    that the reading tasks keep CPU, and ``gpus_per_worker`` GPUs (use ``device="cuda"`` with them).
    A row that fails raises in the Ray job (Ray Data's ``DataContext.max_errored_blocks`` tolerates
    some); ``ast-restore --ray`` instead reports and skips broken files.

    Connects to Ray as Ray Data does if this process is not connected yet (``ray.init()``)::

        ds = ray.data.read_images("s3://bucket/rainy/", mode="RGB")
        restore_dataset(ds, "derain.onnx", task="derain", workers=4, gpus_per_worker=1, device="cuda")
    """
    ray = import_ray()
    if not ray.is_initialized():
        ray.init()
    size, actor_cpus = pool_size(ray, workers, gpus_per_worker)
    kwargs = dict(task=task, protocol=protocol, device=device, config=config, max_memory=max_memory)
    return ds.map(_ArrayRestorer, compute=ray.data.ActorPoolStrategy(size=size), num_cpus=actor_cpus,
                  num_gpus=gpus_per_worker or None,
                  fn_constructor_kwargs=dict(source=str(Path(source).absolute()), runner_kwargs=kwargs, column=column,
                                             output_column=output_column or column))


def restore_files(ray, jobs, source, runner_kwargs: dict, *, workers=None, gpus_per_worker: float = 0,
                  side_by_side: bool = False):
    """Yield each job's outcome as the cluster finishes it: a dict with src, dst, error ("" when
    written) and what _FileRestorer adds (usage, tiles, reason, warning, budget)."""
    size, actor_cpus = pool_size(ray, workers, gpus_per_worker)
    # Workers need not share the driver's working directory: they get absolute paths.
    since = time.time()
    items = [{"src": str(src), "path": str(Path(src).absolute()), "dst": str(dst), "since": since,
              "out": dst if is_uri(dst) else str(Path(dst).absolute())} for src, dst in jobs]
    ds = ray.data.from_items(items, override_num_blocks=len(items))  # one path per block: streamed reads
    ds = ds.map(_read_row, num_cpus=READ_CPUS)
    ds = ds.map(_FileRestorer, compute=ray.data.ActorPoolStrategy(size=size), num_cpus=actor_cpus,
                num_gpus=gpus_per_worker or None,
                fn_constructor_kwargs=dict(source=str(Path(source).absolute()), runner_kwargs=runner_kwargs,
                                           side_by_side=side_by_side))
    for row in ds.iter_rows():
        yield row


def _cause(e: BaseException):
    """The ModelError behind a Ray error, if any (Ray wraps an actor's exception, keeping it as cause)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ModelError):
            return e
        e = getattr(e, "cause", None) or e.__cause__
    return None
