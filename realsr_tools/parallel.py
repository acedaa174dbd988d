"""Process pools that are safe to start from a process that already runs threads.

Forking a process that runs threads (OpenCV's and torch's thread pools, a writer thread) can leave a lock held
forever in the child: a stage that forks after any earlier work in the same process (``realsr demo``, a test
suite, a notebook) may hang. Workers therefore come from a fork server, started once from a clean,
single-threaded process with realsr's modules preloaded, so each worker still starts in milliseconds.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Callable

PRELOAD = ("numpy", "cv2", "realsr_tools.io", "realsr_tools.align", "realsr_tools.wash")


def process_pool(workers: int, *, initializer: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes from the fork server (``spawn`` where there is none)."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, e.g. under taskset or a CI quota)."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
