"""The stage runner's local backends and what the driver does around them (order, partial files, refusals)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from realsr_tools.errors import ConfigError
from realsr_tools.imaging import atomic_output
from realsr_tools.pipeline.manifest import StageWriter, make_header, read_manifest
from realsr_tools.pipeline.runner import ProcessRunner, SerialRunner, input_order, open_runner


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _pages_faulted_reallocating(rounds: int = 10) -> int:
    """Minor page faults of ``rounds`` more rounds of three 12-MB arrays allocated and freed, after a first one."""
    import resource

    import numpy as np

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    blocks = [np.ones(1_500_000) for _ in range(3)]
    del blocks
    before = faults()
    for _ in range(rounds):
        blocks = [np.ones(1_500_000) for _ in range(3)]
        del blocks
    return faults() - before


def test_every_backend_yields_each_item_once_with_its_index():
    items = list(range(7))
    for runner in (SerialRunner(), ProcessRunner(2)):
        with runner:
            results = dict(runner.map(_square_and_pid, items))
        assert sorted(results) == items
        assert all(results[i][0] == i * i for i in items)
    # The process backend really ran elsewhere; one item runs in this process (no pool for it).
    assert {pid for _, pid in results.values()} - {os.getpid()}
    with ProcessRunner(2) as runner:
        assert [(i, r[1]) for i, r in runner.map(_square_and_pid, [3])] == [(0, os.getpid())]


def test_manifest_keeps_input_order_whatever_order_records_arrive_in(tmp_path):
    ids = ["b", "c", "a", "d"]
    header = make_header("align", params={}, path_keys=[])
    with StageWriter(tmp_path, header, keep=[{"id": "d", "status": "ok"}], order=input_order(ids)) as writer:
        for pair_id in ("a", "c", "b"):  # completion order
            writer.add({"id": pair_id, "status": "ok"})
        journal = [json.loads(line)["id"] for line in writer.journal_path.read_text().splitlines()]
    assert journal == ["a", "c", "b"]  # what a killed driver leaves: arrival order, each line as it came
    assert [r["id"] for r in read_manifest(tmp_path).records] == ids


def test_writer_removes_partial_files_of_killed_writers_and_nothing_else(tmp_path):
    (tmp_path / "hr").mkdir()
    stray = tmp_path / "hr" / ".x.abc123.partial.png"  # what atomic_output leaves when its process is killed
    stray.write_bytes(b"half a file")
    keep = [tmp_path / "hr" / "x.png", tmp_path / ".wash-cache.jsonl", tmp_path / ".realsr.lock"]
    for path in keep:
        path.write_bytes(b"data")
    with atomic_output(tmp_path / "hr" / "y.png") as tmp:
        assert ".partial" in tmp.name and tmp.name.startswith(".")  # the pattern the writer removes
        tmp.write_bytes(b"y")
    with StageWriter(tmp_path, make_header("align", params={}, path_keys=[])):
        assert not stray.exists()
    assert all(path.exists() for path in keep) and (tmp_path / "hr" / "y.png").exists()


def test_open_runner_picks_a_backend_and_refuses_what_makes_no_sense(monkeypatch):
    with open_runner(1) as runner:
        assert isinstance(runner, SerialRunner)
    monkeypatch.setattr("realsr_tools.pipeline.runner.available_cpus", lambda: 3)
    with open_runner() as runner:
        assert isinstance(runner, ProcessRunner) and runner.workers == 3
    with pytest.raises(ConfigError, match="either --scheduler or --scheduler-file"):
        with open_runner(scheduler="tcp://127.0.0.1:1", scheduler_file="x.json"):
            pass
    with pytest.raises(ConfigError, match="--gpus-per-task needs a Dask cluster"):
        with open_runner(2, resources={"GPU": 1}):
            pass
    with pytest.raises(ConfigError, match="at least 1"):
        with open_runner(0):
            pass


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_realsrs_processes_reuse_freed_frame_sized_blocks_instead_of_faulting_in_fresh_pages():
    """keep_freed_memory: once a 12-MB block is freed, the next comes from the same pages (glibc's default returns
    them to the kernel and faults fresh, zeroed ones in: about 12,600 faults for these ten rounds on the development
    machine, where a block is 2,930 pages). In a process that called it, and in every worker realsr starts."""
    code = ("from realsr_tools.pipeline.runner import keep_freed_memory; import test_runner as t; "
            "assert keep_freed_memory(); print(t._pages_faulted_reallocating())")
    here = os.path.dirname(__file__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    in_a_fresh_process = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                        check=True)
    assert int(in_a_fresh_process.stdout) < 2930
    with ProcessRunner(2) as runner:
        in_workers = [faults for _, faults in runner.map(_pages_faulted_reallocating, [10, 10])]
    assert all(faults < 2930 for faults in in_workers)
