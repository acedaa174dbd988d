"""The output location (issue 12 case 7): --out naming a file, a read-only folder or a full disk is one line and exit
code 2 naming the path and the cause, for every command; a full disk stops the run instead of failing each pair."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple

import pytest
from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.pipeline import output

from conftest import _zoom_series, one_error_line, real_pair_folder

runner = CliRunner()
NAMES = ("Canon_004_LR4.png", "Nikon_017_LR4.png")


@pytest.fixture
def pairs(tmp_path, data_dir):
    return real_pair_folder(tmp_path / "pairs", data_dir, NAMES, copy=False)


@pytest.fixture
def captures(tmp_path, data_dir):
    root = tmp_path / "captures"
    names = _zoom_series(data_dir / "photos" / "skimage_UNIS_EV0.jpg", root / "scene", (50, 105))
    (root / "captures.csv").write_text("path,focal_mm\n" + "".join(
        f"scene/{n},{f}\n" for n, f in zip(names, (50, 105))))
    return root


def commands(pairs, captures, out):
    return {
        "align": ["align", captures, "--out", out],
        "crop": ["crop", pairs, "--out", out, "--scale", "4", "--size", "64"],
        "wash": ["wash", pairs, "--out", out],
        "train": ["train", pairs, "--out", out, "--scale", "4", "--model", "edsr_small", "--steps", "1",
                  "--batch", "2", "--patch", "16", "--device", "cpu"],
        "score": ["score", "--bicubic", "--data", pairs, "--scale", "4", "--out", out],
        "demo": ["demo", "--out", out, "--steps", "1"],
    }


def one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    one_error_line(result.output)
    for word in words:
        assert word in result.output, result.output


@pytest.mark.parametrize("command", ["align", "crop", "wash", "train", "score", "demo"])
def test_out_naming_a_file_is_one_line_for_every_command(command, pairs, captures, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("mine")
    result = runner.invoke(app, ["-q", *map(str, commands(pairs, captures, target)[command])])
    one_line_error(result, str(target), "is a file")
    assert target.read_text() == "mine"


@pytest.mark.parametrize("command", ["align", "crop", "wash", "train", "score", "demo"])
def test_read_only_out_is_one_line_for_every_command(command, pairs, captures, tmp_path, monkeypatch):
    # The tests run as root, for whom chmod does not make a folder read-only: the probe write fails as on a
    # read-only mount instead.
    def read_only(folder):
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(output, "_probe", read_only)
    result = runner.invoke(app, ["-q", *map(str, commands(pairs, captures, tmp_path / "ro")[command])])
    one_line_error(result, str(tmp_path / "ro"), "read-only")


def test_a_full_disk_stops_crop_with_one_line(pairs, tmp_path, monkeypatch):
    from pathlib import Path

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    result = runner.invoke(app, ["-q", "crop", str(pairs), "--out", str(tmp_path / "o"), "--scale", "4",
                                 "--size", "64", "-j", "1"])
    one_line_error(result, "no space left")


Usage = namedtuple("Usage", "total used free")


def fills_up(out):
    """``shutil.disk_usage`` as seen when ``out`` had room at the start of the run and is full from then on."""
    real_usage, calls = shutil.disk_usage, []

    def usage(path):
        if str(out) in str(path):
            calls.append(path)
            if len(calls) > 1:
                return Usage(1 << 30, 1 << 30, 0)
        return real_usage(path)

    return usage


def test_a_full_disk_stops_align_instead_of_failing_each_pair(captures, tmp_path, monkeypatch):
    import cv2

    out = tmp_path / "o"
    monkeypatch.setattr(cv2, "imwrite", lambda *a, **k: False)  # what OpenCV does when the disk is full
    monkeypatch.setattr(shutil, "disk_usage", fills_up(out))
    result = runner.invoke(app, ["-q", "align", str(captures), "--out", str(out)])
    one_line_error(result, "no space left")


def test_a_full_disk_stops_training_with_one_line(pairs, tmp_path, monkeypatch, one_torch_thread):
    import torch

    out = tmp_path / "run"

    def save(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", fills_up(out))
    result = runner.invoke(app, ["-q", *map(str, commands(pairs, None, out)["train"])])
    one_line_error(result, "no space left")
