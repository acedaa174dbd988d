"""Every per-item stage on a real Dask cluster (a scheduler and two workers on 127.0.0.1, started here): the same
manifest records and output files (sha256) as a local ``-j 2`` run, through worker deaths and a killed driver."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("distributed")

from conftest import PROJECT, real_pair_folder  # noqa: E402
from daskcluster import Misbehave, start_cluster, stop_processes  # noqa: E402
from realsr_tools.cli import app  # noqa: E402
from realsr_tools.errors import ConfigError  # noqa: E402
from realsr_tools.pipeline import runner as runner_module  # noqa: E402
from realsr_tools.pipeline.manifest import read_manifest  # noqa: E402
from realsr_tools.pipeline.output import LOCK_NAME  # noqa: E402
from realsr_tools.simulate import make_capture_folder  # noqa: E402
from realsr_tools.stages.align import run_align  # noqa: E402

cli = CliRunner()
WAIT = 120  # seconds: the bound of every wait on the cluster or a subprocess
PAIRS = ("Canon_004_LR4.png", "Nikon_017_LR4.png", "Canon_033_LR4.png", "Nikon_050_LR4.png")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = start_cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield started
    finally:
        stop_processes(started.processes)


@pytest.fixture(scope="module")
def captures(tmp_path_factory, data_dir):
    """Three simulated x2 capture pairs of real photographs, 320x240 LR (about a second each to align)."""
    root = tmp_path_factory.mktemp("captures")
    photos = [data_dir / "photos" / name for name in ("skimage_UNIS_EV0.jpg", "exif_samples_35-empty.jpg",
                                                      "kodak_kodim03.png")]
    make_capture_folder(photos, root, scales=(2,), seed=3, lr_size=(320, 240))
    return root


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, data_dir):
    """Four real RealSR x4 pairs (HR 512, LR 128) as an HR/+LR/ folder (links)."""
    return real_pair_folder(tmp_path_factory.mktemp("pairs") / "pairs", data_dir, PAIRS, copy=False)


@pytest.fixture(scope="module")
def local_align(tmp_path_factory, captures):
    out = tmp_path_factory.mktemp("local") / "align"
    summary = run_align(captures, out, workers=2, show_progress=False)
    assert summary.ok == 3
    return out


def _files(out: Path) -> dict[str, str]:
    """sha256 of every file under ``out`` but the manifest (its header holds the command line and time) and the
    run's lock file."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name not in ("manifest.jsonl", LOCK_NAME)}


def _records(out: Path) -> list[dict]:
    return read_manifest(out).records


def _assert_same_outputs(out: Path, reference: Path) -> None:
    assert _records(out) == _records(reference)
    assert _files(out) == _files(reference)
    assert not [p for p in out.rglob("*") if ".partial" in p.name]


def _invoke(*args: str, env: dict[str, str] | None = None) -> None:
    result = cli.invoke(app, ["--quiet", *args], env=env)
    assert result.exit_code == 0, result.output


@contextmanager
def misbehaving(cluster, plugin: Misbehave):
    with cluster.client() as client:
        client.wait_for_workers(2, timeout=WAIT)
        client.register_plugin(plugin)
        try:
            yield
        finally:
            client.unregister_worker_plugin(plugin.name)
            client.wait_for_workers(2, timeout=WAIT)


def test_align_on_dask_equals_a_local_run(cluster, captures, local_align, tmp_path):
    summary = run_align(captures, tmp_path / "out", scheduler=cluster.address, show_progress=False)
    assert (summary.ok, summary.failed) == (3, 0)
    _assert_same_outputs(tmp_path / "out", local_align)


def test_crop_through_the_environment_variable_equals_a_local_run(cluster, pairs, tmp_path):
    common = ["crop", str(pairs), "--scale", "4", "--size", "48", "--step", "40"]
    _invoke(*common, "--out", str(tmp_path / "local"), "-j", "2")
    _invoke(*common, "--out", str(tmp_path / "dask"), env={"REALSR_SCHEDULER": cluster.address})
    assert len(_records(tmp_path / "dask")) == 4 * 9
    _assert_same_outputs(tmp_path / "dask", tmp_path / "local")


def test_wash_through_a_scheduler_file_equals_a_local_run(cluster, pairs, tmp_path):
    _invoke("wash", str(pairs), "--out", str(tmp_path / "local"), "-j", "2")
    _invoke("wash", str(pairs), "--out", str(tmp_path / "dask"), "--scheduler-file", str(cluster.scheduler_file))
    assert len(_records(tmp_path / "dask")) == 4
    _assert_same_outputs(tmp_path / "dask", tmp_path / "local")


def test_score_on_dask_equals_a_local_run(cluster, pairs, tmp_path):
    outputs = {}
    for name, where in (("local", ["-j", "2"]), ("dask", ["--scheduler-file", str(cluster.scheduler_file)])):
        out = tmp_path / name
        _invoke("score", "--bicubic", "--data", str(pairs), "--scale", "4", "--save", str(out / "sr"), "--out",
                str(out / "scores"), *where)
        outputs[name] = _files(out)
    assert len(outputs["dask"]) == len(PAIRS) + 2  # the SR images, scores.csv and summary.json
    assert outputs["dask"] == outputs["local"]


def test_a_worker_dying_mid_write_leaves_identical_outputs_and_no_partial_file(cluster, captures, local_align,
                                                                               tmp_path):
    marker = tmp_path / "died"
    with misbehaving(cluster, Misbehave(marker=str(marker))):
        summary = run_align(captures, tmp_path / "out", scheduler=cluster.address, show_progress=False)
    assert marker.is_file()  # a worker did die, with a temporary file written and not renamed
    assert (summary.ok, summary.failed) == (3, 0)
    _assert_same_outputs(tmp_path / "out", local_align)


def test_a_task_whose_worker_keeps_dying_becomes_a_failed_record_and_the_run_goes_on(cluster, captures, local_align,
                                                                                     tmp_path):
    doomed = _records(local_align)[1]["id"]
    with misbehaving(cluster, Misbehave(die_on=doomed)):
        summary = run_align(captures, tmp_path / "out", scheduler=cluster.address, show_progress=False)
    assert (summary.ok, summary.failed) == (2, 1)
    records = {r["id"]: r for r in _records(tmp_path / "out")}
    assert records[doomed]["status"] == "failed" and "worker" in records[doomed]["error"]
    assert records[doomed]["error"].startswith("lost: the Dask worker running this item died repeatedly")
    reference = {r["id"]: r for r in _records(local_align)}
    assert all(records[i] == reference[i] for i in records if i != doomed)


def test_a_killed_driver_resumes_on_a_re_run(cluster, captures, local_align, tmp_path):
    held = _records(local_align)[2]["id"]
    release, out = tmp_path / "release", tmp_path / "out"
    journal = out / "manifest.jsonl.journal"
    env = os.environ | {"PYTHONPATH": str(PROJECT)}
    with misbehaving(cluster, Misbehave(hold=held, release=str(release))):
        driver = subprocess.Popen([sys.executable, "-m", "realsr_tools", "--quiet", "align", str(captures), "--out",
                                   str(out), "--scheduler-file", str(cluster.scheduler_file)], env=env,
                                  start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + WAIT
            while not (journal.is_file() and len(journal.read_text().splitlines()) >= 2):
                assert driver.poll() is None and time.monotonic() < deadline, "the driver never journaled 2 pairs"
                time.sleep(0.1)
            os.killpg(driver.pid, signal.SIGKILL)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=WAIT)
        assert not (out / "manifest.jsonl").exists()  # killed before it could write the manifest
        # The killed driver's held task, if a worker had started it, goes on running there (Dask cannot stop a
        # running task) and writes its pair into the folder. Let it finish first, so that what is checked below is
        # the resume and not a race with an orphan: once the scheduler has let go of the dead client's tasks, a
        # held task that has not started never will.
        with cluster.client() as client:
            deadline = time.monotonic() + WAIT
            while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
                assert time.monotonic() < deadline, "the scheduler kept the killed driver's tasks"
                time.sleep(0.1)
        release.touch()
        if Path(f"{release}.started").exists():
            deadline = time.monotonic() + WAIT
            while not Path(f"{release}.done").exists():
                assert time.monotonic() < deadline, "the orphaned task never finished"
                time.sleep(0.1)
        summary = run_align(captures, out, scheduler=cluster.address, show_progress=False)
    assert (summary.ok, summary.skipped) == (1, 2)
    _assert_same_outputs(out, local_align)


def test_workers_of_another_realsr_version_and_local_workers_on_a_cluster_are_refused(cluster, captures, tmp_path,
                                                                                      monkeypatch):
    with pytest.raises(ConfigError, match="--workers"):
        run_align(captures, tmp_path / "out", workers=2, scheduler=cluster.address, show_progress=False)
    monkeypatch.setattr(runner_module, "__version__", "0.0.0+other")
    with pytest.raises(ConfigError, match="another realsr than this driver's 0.0.0.other"):
        run_align(captures, tmp_path / "out", scheduler=cluster.address, show_progress=False)
    assert not list((tmp_path / "out").glob("*/*/*.png"))


def test_score_a_model_with_gpus_per_task_equals_a_local_run(cluster, data_dir, tmp_path):
    import cv2
    import torch

    from realsr_tools.models import checkpoint_dict, create_model

    pairs = tmp_path / "pairs"  # two real pairs cut to 64x64 LR windows: short CPU inference
    for side, factor in (("LR", 1), ("HR", 4)):
        (pairs / side).mkdir(parents=True)
        for name in PAIRS[:2]:
            image = cv2.imread(str(data_dir / "pairs" / "realsr_x4" / side / name))
            cv2.imwrite(str(pairs / side / name), image[16 * factor:80 * factor, 8 * factor:72 * factor])
    torch.manual_seed(0)
    model = create_model("edsr_small", 4, blocks=2).eval()
    checkpoint = tmp_path / "small.pt"
    torch.save(checkpoint_dict(model, name="edsr_small", scale=4, options={"blocks": 2}), checkpoint)
    common = ["score", "--model", str(checkpoint), "--data", str(pairs), "--tile", "0", "--device", "cpu"]
    outputs = {}
    for name, where in (("local", ["-j", "2"]), ("dask", ["--scheduler-file", str(cluster.scheduler_file),
                                                           "--gpus-per-task", "1"])):
        _invoke(*common, *where, "--save", str(tmp_path / name / "sr"), "--out", str(tmp_path / name / "scores"))
        outputs[name] = _files(tmp_path / name)
    assert len(outputs["dask"]) == 2 + 2 and outputs["dask"] == outputs["local"]
    # No worker offers two GPUs: refused at once instead of waiting forever.
    result = cli.invoke(app, [*common, "--scheduler", cluster.address, "--gpus-per-task", "2"])
    assert result.exit_code == 2 and "no worker of the Dask cluster offers GPU=2" in result.output
