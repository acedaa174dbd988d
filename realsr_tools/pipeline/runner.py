"""Process pools that are safe to start from a process that already runs threads.

Forking a process that runs threads (OpenCV's and torch's thread pools, a writer thread) can leave a lock held
forever in the child: a stage that forks after any earlier work in the same process (``realsr demo``, a test
suite, a notebook) may hang. Workers therefore come from a fork server, started once from a clean,
single-threaded process with realsr's modules preloaded, so each worker still starts in milliseconds.
"""

from __future__ import annotations

import functools
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

PRELOAD = ("numpy", "cv2", "realsr_tools.imaging", "realsr_tools.stages.align", "realsr_tools.stages.wash")


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
    if initializer is not None:
        initializer()


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
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
