"""issue 12 case 5: a stage output whose upstream manifest was edited after it was written is refused by every stage
that reads it (the sha256 recorded in its header is checked in the one place pairs are opened)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.stages.crop import run_crop

from conftest import one_error_line, real_pair_folder

runner = CliRunner()


@pytest.fixture(scope="module")
def chain(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("upstream")
    pairs = real_pair_folder(root / "pairs", data_dir, ("Canon_004_LR4.png", "Nikon_017_LR4.png"), copy=False)
    run_crop(pairs, root / "first", scale=4, size=64, show_progress=False)
    run_crop(root / "first", root / "second", size=32, show_progress=False)  # its upstream: first's manifest
    manifest = root / "first" / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace('"status": "ok"', '"status": "ok" ', 1))  # edited after
    return root


@pytest.mark.parametrize("command", [
    ["crop", "{second}", "--out", "{out}", "--size", "16"],
    ["wash", "{second}", "--out", "{out}"],
    ["train", "{second}", "--out", "{out}", "--steps", "1", "--device", "cpu"],
    ["score", "--bicubic", "--data", "{second}"],
])
def test_every_stage_refuses_an_output_whose_upstream_changed(chain, tmp_path, command):
    args = [a.format(second=chain / "second", out=tmp_path / "out") for a in command]
    result = runner.invoke(app, ["-q", *args])
    assert result.exit_code == 2, result.output
    assert "changed after" in result.output and str(chain / "first" / "manifest.jsonl") in result.output
    assert "sha256" in one_error_line(result.output)
