"""The README's first command, in its short variant: every stage runs on the bundled sample."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.pipeline.manifest import read_manifest


def test_demo_runs_every_stage_on_the_bundled_sample(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["--quiet", "demo", "--out", str(out), "--minutes", "0.25"])
    assert result.exit_code == 0, result.output
    for folder, stage in (("aligned", "align"), ("patches", "crop"), ("washed", "wash")):
        manifest = read_manifest(out / folder, stage=stage)
        assert any(r.get("status", "ok") == "ok" for r in manifest.records), folder
    assert (out / "run" / "best.pt").is_file() and (out / "run" / "last.pt").is_file()
    for folder in ("scores", "bicubic_scores"):
        summary = json.loads((out / folder / "summary.json").read_text())
        assert summary["count"] == 1 and 20 < summary["psnr"] < 50
    assert "trained edsr_small" in result.output and "bicubic" in result.output
    refused = [r for r in read_manifest(out / "aligned", stage="align").records if r.get("status") == "failed"]
    text = " ".join(result.output.split())
    assert ("refused" in text and "on purpose" in text and "not an error" in text) == bool(refused)
    # A second run must not clobber the first without --overwrite.
    again = CliRunner().invoke(app, ["--quiet", "demo", "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
