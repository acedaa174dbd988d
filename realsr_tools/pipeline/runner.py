"""The one way realsr runs per-item work: :class:`Runner` and its three backends.

``runner.map(fn, items)`` calls ``fn(item)`` for every item and yields ``(index, result)`` as each finishes
(completion order, not input order). Stages never build pools themselves: they get a runner from
:func:`open_runner` and keep only their per-item function and what they do with its result.

- :class:`SerialRunner`: in this process, in order (one worker, or one item).
- :class:`ProcessRunner`: local worker processes from a fork server (see below).
- :class:`DaskRunner`: the workers of a Dask distributed cluster (``--scheduler`` / ``--scheduler-file`` /
  ``REALSR_SCHEDULER``); :mod:`distributed` is imported only here and only when a scheduler is given, and no
  local cluster is ever started implicitly.

Contract of a per-item function: it is pure apart from writing its own item's files, each atomically
(:func:`realsr_tools.imaging.atomic_output`) at a path derived from the item. A task run twice (a retried task, a
resumed run) therefore overwrites an identical file. The driver (the stage) is the only writer of the journal and
the manifest. A task that could not finish because its worker died comes back as :class:`TaskLost`; the stage turns
it into a failed record and the run goes on.

Why local workers come from a fork server: forking a process that runs threads (OpenCV's and torch's thread pools,
a writer thread) can leave a lock held forever in the child, so a stage that forks after any earlier work in the
same process (``realsr demo``, a test suite, a notebook) may hang. Workers therefore come from a fork server,
started once from a clean, single-threaded process with realsr's modules preloaded, so each worker still starts in
milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .. import __version__
from ..errors import ConfigError

PRELOAD = ("numpy", "cv2", "realsr_tools.imaging", "realsr_tools.stages.align", "realsr_tools.stages.wash",
           "realsr_tools.stages.crop")
SCHEDULER_ENV = "REALSR_SCHEDULER"
CONNECT_TIMEOUT = 30  # seconds to reach a Dask scheduler before giving up with one clear line
# A fn pickled larger than this (a model in a closure) is sent to every Dask worker once instead of with each task.
BROADCAST_BYTES = 100_000


@dataclass(frozen=True)
class TaskLost:
    """A task that never returned a result (its worker died every time it ran it); ``reason`` says so."""

    reason: str


class Runner:
    """Runs ``fn`` over items somewhere; see the module docstring. Use as a context manager."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, name: str = "task",
            labels: Sequence[str] | None = None) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, fn(items[index]))`` as results complete.

        ``name`` (the stage and phase, e.g. ``"align"``) and ``labels`` (one short string per item, e.g. the pair
        id) only name tasks: a cluster shows them on its dashboard and derives task keys from them.
        """
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class SerialRunner(Runner):
    """Every item in this process, in input order."""

    def map(self, fn, items, *, name="task", labels=None):
        for index, item in enumerate(items):
            yield index, fn(item)


class ProcessRunner(Runner):
    """``workers`` local processes from the fork server, each with BLAS and OpenCV on one thread (parallelism
    comes from the processes). A single item runs in this process (no pool start-up for it)."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn, items, *, name="task", labels=None):
        from concurrent.futures import as_completed

        if len(items) < 2:
            yield from SerialRunner().map(fn, items)
            return
        if self._pool is None:
            self._pool = process_pool(self.workers, initializer=_one_opencv_thread)
        futures = {self._pool.submit(fn, item): index for index, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                yield futures.pop(future), future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskRunner(Runner):
    """The workers of a Dask distributed cluster, through ``client``.

    Results are read with ``as_completed`` and released at once (a finished result held on a worker that dies
    would otherwise be recomputed). Task keys are ``<name>-<label>-<digest of fn and item>``: the same item with
    the same stage parameters is the same task. A task whose workers died ``distributed.scheduler.allowed-failures``
    times (``KilledWorker``) comes back as :class:`TaskLost`. ``resources`` (e.g. ``{"GPU": 1}``) are asked of the
    worker for every task (workers declare theirs with ``dask worker --resources GPU=1``).
    """

    def __init__(self, client, *, resources: Mapping[str, float] | None = None, own_client: bool = True):
        self.client = client
        self.resources = dict(resources) if resources else None
        self._own_client = own_client
        workers = client.scheduler_info().get("workers", {})
        if self.resources and workers and not any(
                all(info.get("resources", {}).get(name, 0) >= amount for name, amount in self.resources.items())
                for info in workers.values()):
            wanted = " ".join(f"{name}={amount:g}" for name, amount in self.resources.items())
            raise ConfigError(f"no worker of the Dask cluster offers {wanted} (its {len(workers)} worker(s) would "
                              f"never run a task); start workers with 'dask worker ... --resources {wanted}'")

    def map(self, fn, items, *, name="task", labels=None):
        from distributed import KilledWorker, as_completed

        if not items:
            return
        fn_blob = _dumps(fn)
        digest = hashlib.sha256(fn_blob).hexdigest()
        remote_fn: Any = fn
        if len(fn_blob) > BROADCAST_BYTES:
            remote_fn = self.client.scatter(fn, broadcast=True, hash=False)
        labels = labels or [str(i) for i in range(len(items))]
        futures, keys = {}, set()
        for index, (item, label) in enumerate(zip(items, labels)):
            key = f"realsr-{name}-{_safe(label)}-{hashlib.sha256(digest.encode() + _dumps(item)).hexdigest()[:16]}"
            if key in keys:  # the same item twice in one map: two tasks, two results
                key = f"{key}-{index}"
            keys.add(key)
            future = self.client.submit(_run_task, remote_fn, item, __version__, key=key, resources=self.resources,
                                        pure=False)
            futures[future] = index
        pending = as_completed(list(futures), loop=self.client.loop)
        try:
            for future in pending:
                index = futures.pop(future)
                try:
                    result = future.result()
                except KilledWorker as exc:
                    result = TaskLost(f"lost: the Dask worker running this item died repeatedly ({exc})")
                future.release()
                yield index, result
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        if self._own_client:
            self.client.close()


def _run_task(fn: Callable[[Any], Any], item: Any, version: str) -> Any:
    """What a Dask worker runs: refuse a realsr version other than the driver's (a worker that joined late), then
    BLAS and OpenCV on one thread, once per worker process (the cluster's parallelism is its workers' threads and
    processes)."""
    import realsr_tools

    if realsr_tools.__version__ != version:
        raise ConfigError(f"this Dask worker runs realsr {realsr_tools.__version__} but the driver realsr {version};"
                          " install the same realsr on every worker")
    global _WORKER_READY
    if not _WORKER_READY:
        _set_up_worker(_one_opencv_thread)
        _WORKER_READY = True
    return fn(item)


_WORKER_READY = False


def _dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except (pickle.PicklingError, AttributeError, TypeError):
        import cloudpickle

        return cloudpickle.dumps(value, protocol=5)


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "._" else "_" for c in str(label))[:80]


# ----------------------------------------------------------------------------------------------------------------
# Choosing a backend


@contextmanager
def open_runner(workers: int | None = None, *, scheduler: str | None = None, scheduler_file: Path | str | None = None,
                resources: Mapping[str, float] | None = None) -> Iterator[Runner]:
    """The runner a stage uses: a Dask cluster when ``scheduler`` (an address such as ``tcp://host:8786``, or the
    path of a scheduler file) or ``scheduler_file`` is given, else ``workers`` local processes (default: every CPU
    this process may use, :func:`available_cpus`), serial for one.

    The ``REALSR_SCHEDULER`` environment variable is read by the command line (``--scheduler``), not here.
    """
    if scheduler and scheduler_file:
        raise ConfigError("pass either --scheduler or --scheduler-file, not both")
    if scheduler or scheduler_file:
        if workers is not None:
            raise ConfigError("--workers sets local processes; on a Dask cluster the workers are the cluster's "
                              "(drop --workers, or drop --scheduler and REALSR_SCHEDULER)")
        client = connect(scheduler, scheduler_file)
        try:
            runner: Runner = DaskRunner(client, resources=resources)
        except BaseException:
            client.close()
            raise
    else:
        if resources:
            raise ConfigError("--gpus-per-task needs a Dask cluster (--scheduler or --scheduler-file)")
        workers = available_cpus() if workers is None else workers
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        runner = SerialRunner() if workers == 1 else ProcessRunner(workers)
    with runner:
        yield runner


def connect(scheduler: str | None = None, scheduler_file: Path | str | None = None):
    """A ``distributed.Client`` on an existing scheduler whose workers run this realsr version; never starts one."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("a Dask scheduler was given but Dask distributed is not installed; "
                          "pip install 'realsr-tools[dask]'") from None
    if scheduler and "://" not in scheduler and Path(scheduler).is_file():
        scheduler, scheduler_file = None, scheduler
    if scheduler_file is not None and not Path(scheduler_file).is_file():
        raise ConfigError(f"{scheduler_file}: no such scheduler file; start the scheduler with "
                          "'dask scheduler --scheduler-file PATH' first")
    where = scheduler or f"the scheduler of {scheduler_file}"
    try:
        client = Client(scheduler, scheduler_file=None if scheduler_file is None else str(scheduler_file),
                        timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {where} ({exc}); start it, or check the "
                          "address / scheduler file") from None
    try:
        check_versions(client)
    except BaseException:
        client.close()
        raise
    return client


def check_versions(client) -> None:
    """Refuse a cluster whose workers run another realsr version than this driver (or none at all)."""
    try:
        versions = client.run(_worker_version)
    except (ImportError, ModuleNotFoundError) as exc:
        raise ConfigError(f"the Dask workers cannot import realsr ({exc}); install realsr on every worker") from None
    other = {worker: version for worker, version in versions.items() if version != __version__}
    if other:
        shown = ", ".join(f"{worker} has {version}" for worker, version in sorted(other.items())[:3])
        raise ConfigError(f"{len(other)} Dask worker(s) run another realsr than this driver's {__version__} "
                          f"({shown}); install the same realsr on every worker")


def _worker_version() -> str:
    import realsr_tools

    return realsr_tools.__version__


# ----------------------------------------------------------------------------------------------------------------
# Local processes and threads


def process_pool(workers: int, *, initializer: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes from the fork server (``spawn`` where there is none).

    Each worker runs BLAS on one thread (see :func:`one_blas_thread`) before ``initializer``.
    """
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=functools.partial(_set_up_worker, initializer))


def _set_up_worker(initializer: Callable[[], None] | None) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    keep_freed_memory()
    if initializer is not None:
        initializer()


def _one_opencv_thread() -> None:
    """Worker set-up: OpenCV on one thread, since the workers already keep every core busy."""
    import cv2

    cv2.setNumThreads(1)


# glibc's mallopt parameters (malloc.h). The mmap threshold is the ceiling of glibc's own adaptive one (and the most
# older glibc accepts on 64-bit): blocks above it stay mapped, so the peak stays where it was (keeping every
# block instead raised a 4608-px scene's from 1.72 to 2.1-2.2 GB).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks under 32 MB for the next allocation instead of returning their pages.

    By default glibc hands a freed block of more than 128 KB (at most 32 MB once it adapts) back to the kernel, and
    the kernel zeroes every page of the next one on first touch. realsr frees and allocates frame-sized temporaries
    at every Gauss-Newton step, tile pass and scene comparison: on a 4608-px scene, 20 of align's 86 CPU seconds were
    system time, most of it clearing fresh pages (``perf``, session 44). Kept for reuse, those pages are written
    once. Arrays over 32 MB are still mapped and unmapped, so the peak memory is the same; a process keeps what it
    freed below that until it exits (its own peak, not more). ``benchmarks/bench_commits.py`` measures it. Returns
    whether the C library took the settings (``False`` off glibc: macOS, Windows, musl).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run BLAS on one thread inside this block (also usable as a decorator).

    realsr's numerics multiply skinny matrices (pixels x a few parameters) thousands of times; OpenBLAS's worker
    threads spin between such calls and cost far more than they give: on 2 cores a 20-MP align pair ran 1.8x and a
    93-pair wash 2.5x slower with them. Parallelism comes from realsr's own workers instead.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, e.g. under taskset or a CI quota)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ----------------------------------------------------------------------------------------------------------------
# What every stage does around ``runner.map``


def run_items(runner: Runner, fn: Callable[[Any], Any], items: Sequence[Any], *, name: str,
              labels: Sequence[str] | None = None, show_progress: bool = True) -> Iterator[tuple[int, Any]]:
    """``runner.map`` with the stage's progress bar (``name`` is its description; none for no items: a resume with
    nothing left, a scene step with nothing to do)."""
    from .progress import track

    yield from track(runner.map(fn, items, name=name, labels=labels), description=name, total=len(items),
                     enabled=show_progress and len(items) > 0)


def input_order(ids: Sequence[str], *, key: str = "id") -> Callable[[Mapping[str, Any]], int]:
    """A :class:`~realsr_tools.pipeline.manifest.StageWriter` ``order``: records by the position of their
    ``key`` in ``ids`` (the stage's input order), unknown ones last; records of one item keep their order."""
    rank = {str(i): position for position, i in enumerate(ids)}
    return lambda record: rank.get(str(record.get(key)), len(rank))
