from __future__ import annotations

import json

from typer.testing import CliRunner

from realsr_tools import __version__
from realsr_tools.cli import app

runner = CliRunner()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "inspect" in result.output


def test_inspect_reports_focal_lengths_of_all_metadata_only_raws(data_dir):
    result = runner.invoke(app, ["inspect", str(data_dir / "raw" / "metadata_only"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    focal = {c["path"]: c["focal_mm"] for s in report["scenes"] for c in s["captures"]}
    assert focal == {"exiftool_CanonRaw.cr2": 55.0, "exiftool_CanonRaw.cr3": 15.0, "exiftool_CanonRaw.crw": 24.0,
                     "exiftool_Nikon.nef": 18.0, "exiftool_Panasonic.rw2": 5.1, "exiftool_DNG.dng": 55.0}


def test_inspect_table_lists_pairs_and_problems(capture_dir):
    result = runner.invoke(app, ["inspect", str(capture_dir)])
    assert result.exit_code == 0, result.output
    assert all(f"x{s}" in result.output for s in (2, 3, 4))
    assert "3 pair(s)" in result.output and "problem(s)" in result.output
    # The Canon JPEG of the mixed scene is Adobe RGB by its EXIF: its curve beside it, the scene's mix a problem.
    assert "power:2.19922 adobe-rgb" in result.output and "state different encodings" in result.output


def test_inspect_bad_input_is_one_red_line_and_exit_2(tmp_path):
    for target in (tmp_path / "missing", tmp_path):
        result = runner.invoke(app, ["inspect", str(target)])
        assert result.exit_code == 2
        assert "error:" in result.output and "Traceback" not in result.output
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "captures.csv").write_text("nope\n")
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 2 and "captures.csv" in result.output


def test_align_refuses_an_unknown_raw_rendering(capture_dir, tmp_path):
    result = runner.invoke(app, ["align", str(capture_dir), "--out", str(tmp_path / "a"), "--raw-gamma", "srgb"])
    assert result.exit_code == 2 and "--raw-gamma must be bt709 or linear" in result.output


def test_help_lists_every_stage():
    result = runner.invoke(app, ["--help"])
    for stage in ("inspect", "align", "crop", "wash", "train", "score", "demo"):
        assert stage in result.output
