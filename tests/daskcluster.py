"""A real Dask scheduler and two workers on 127.0.0.1 for the cluster tests, and worker plugins that misbehave.

The cluster runs as separate processes (``python -m dask scheduler`` / ``python -m dask worker``, each worker under
its nanny, which restarts a worker process that dies), started and always torn down by the test fixture. Workers
import this module (``PYTHONPATH`` includes ``tests/``) to run the plugins below.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from distributed import WorkerPlugin

PROJECT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 120  # seconds for the scheduler file and both workers to appear on a busy 2-core machine


@dataclass
class Cluster:
    scheduler_file: Path
    address: str
    processes: list[subprocess.Popen]

    def client(self):
        from distributed import Client

        return Client(scheduler_file=str(self.scheduler_file), timeout=START_TIMEOUT, set_as_default=False)


def start_cluster(root: Path, *, workers: int = 2) -> Cluster:
    """Start a scheduler (writing ``root/scheduler.json``) and ``workers`` one-thread workers, the first declaring
    the resource ``GPU=1`` (a label only: tasks asking for it run there, on the CPU); bounded waits."""
    import json

    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(PROJECT), str(PROJECT / "tests")]),
        # A task whose worker died twice is lost (KilledWorker) instead of after four deaths: keeps the test short.
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
        # One task at a time per one-thread worker (the default 1.1 sends two): a worker that dies then takes only its
        # own task down, never an innocent one queued beside it, so which tasks are lost does not depend on timing.
        "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0",
        "OMP_NUM_THREADS": "1",
    }
    scheduler_file = root / "scheduler.json"
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    processes = []

    def launch(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "w") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", "dask", *args], env=env, stdout=log,
                                              stderr=subprocess.STDOUT, cwd=root, start_new_session=True))

    try:
        launch("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
               str(scheduler_file))
        deadline = time.monotonic() + START_TIMEOUT
        while not scheduler_file.is_file():
            if time.monotonic() > deadline or processes[0].poll() is not None:
                raise RuntimeError(f"the Dask scheduler did not start; see {logs / 'scheduler.log'}")
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for i in range(workers):
            launch(f"worker{i}", "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                   "--host", "127.0.0.1", "--no-dashboard", "--name", f"worker{i}", "--memory-limit", "0",
                   *(["--resources", "GPU=1"] if i == 0 else []))  # a pretend GPU, for score --gpus-per-task
        cluster = Cluster(scheduler_file, address, processes)
        with cluster.client() as client:
            client.wait_for_workers(workers, timeout=START_TIMEOUT)
        return cluster
    except BaseException:
        stop_processes(processes)
        raise


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """Terminate every process group we started (workers first), killing what does not exit within 20 s."""
    for process in reversed(processes):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in reversed(processes):
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


class Misbehave(WorkerPlugin):
    """A Dask worker plugin that patches realsr inside the worker process:

    - ``die_in_write``: the first output write on the whole cluster (marker file ``marker``) ends the worker
      process with ``os._exit`` after the temporary file is written and before it is renamed (a worker dying
      mid-task, mid-write); every later write is normal.
    - ``die_on``: a worker that starts aligning the pair with this id dies at once, every time.
    - ``hold``: aligning the pair with this id waits (up to 120 s) until the file ``release`` exists; it touches
      ``release + ".started"`` when it begins waiting and ``release + ".done"`` when it has finished.
    """

    name = "realsr-misbehave"

    def __init__(self, *, marker: str | None = None, die_on: str | None = None, hold: str | None = None,
                 release: str | None = None):
        self.marker, self.die_on, self.hold, self.release = marker, die_on, hold, release

    def setup(self, worker) -> None:
        import contextlib

        import realsr_tools.imaging
        import realsr_tools.imaging.files as files
        from realsr_tools.stages import align_pair

        self._originals = [(files, "atomic_output", files.atomic_output),
                           (realsr_tools.imaging, "atomic_output", realsr_tools.imaging.atomic_output),
                           (align_pair, "_align_pair", align_pair._align_pair)]
        if self.marker is not None:
            real_output = files.atomic_output
            marker = Path(self.marker)

            @contextlib.contextmanager
            def dying_output(path):
                with real_output(path) as tmp:
                    yield tmp
                    if not marker.exists() and tmp.is_file() and tmp.stat().st_size > 0:
                        marker.write_text("died once\n")
                        os._exit(17)  # before the rename: the temporary file stays behind, as after a real crash

            files.atomic_output = dying_output
            realsr_tools.imaging.atomic_output = dying_output
        if self.die_on is not None or self.hold is not None:
            real_align = align_pair._align_pair

            def misbehaving_align(pair, settings, *rest):
                if pair.id == self.die_on:
                    os._exit(18)
                if pair.id == self.hold:
                    Path(self.release + ".started").touch()
                    deadline = time.monotonic() + 120
                    while not Path(self.release).exists() and time.monotonic() < deadline:
                        time.sleep(0.1)
                    try:
                        return real_align(pair, settings, *rest)
                    finally:
                        Path(self.release + ".done").touch()
                return real_align(pair, settings, *rest)

            align_pair._align_pair = misbehaving_align

    def teardown(self, worker) -> None:
        for module, name, value in self._originals:
            setattr(module, name, value)
