"""The README's first command, in its short variant: every stage runs on the bundled sample."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.pipeline.manifest import read_manifest

from conftest import unwrapped


def test_demo_runs_every_stage_on_the_bundled_sample(tmp_path, one_torch_thread):
    out = tmp_path / "demo"
    # A budget in steps, not minutes: the test does the same work however loaded the machine is.
    result = CliRunner().invoke(app, ["--quiet", "demo", "--out", str(out), "--steps", "20"])
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
    text = unwrapped(result.output)
    assert ("refused" in text and "on purpose" in text and "not an error" in text) == bool(refused)
    # A second run must not clobber the first without --overwrite.
    again = CliRunner().invoke(app, ["--quiet", "demo", "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert "    20 steps," in result.output  # exactly the step budget, whatever the machine's speed


class _Stop(Exception):
    """Raised by a patched stage so a test can look at the output folder right after the demo prepared it."""


def _demo_until_first_stage(out, monkeypatch, *args):
    import realsr_tools.simulate as simulate

    def stop(*_, **__):
        raise _Stop

    monkeypatch.setattr(simulate, "make_capture_folder", stop)
    return CliRunner().invoke(app, ["--quiet", "demo", "--out", str(out), *args])


def test_demo_overwrite_deletes_only_what_an_earlier_demo_recorded(tmp_path, monkeypatch):
    # issue 12 case 1: --overwrite used to rmtree the whole --out, taking unrelated work with it.
    from realsr_tools.stages.demo import DEMO_RECORD

    out = tmp_path / "P"
    (out / "thesis").mkdir(parents=True)
    (out / "thesis" / "ch1.tex").write_text("\\chapter{One}")
    result = _demo_until_first_stage(out, monkeypatch, "--overwrite")
    assert isinstance(result.exception, _Stop)  # it went on to the work: unrelated files are no obstacle
    assert (out / "thesis" / "ch1.tex").read_text() == "\\chapter{One}"
    record = json.loads((out / DEMO_RECORD).read_text())
    assert "aligned" in record["outputs"] and "thesis" not in record["outputs"]
    # An earlier demo's folders (listed in its record) are replaced; the thesis stays.
    (out / "aligned").mkdir()
    (out / "aligned" / "old.png").write_bytes(b"x")
    again = _demo_until_first_stage(out, monkeypatch)
    assert again.exit_code == 2 and "--overwrite" in again.output
    result = _demo_until_first_stage(out, monkeypatch, "--overwrite")
    assert isinstance(result.exception, _Stop)
    assert not (out / "aligned").exists() and (out / "thesis" / "ch1.tex").is_file()


def test_demo_refuses_to_delete_a_folder_no_demo_recorded(tmp_path, monkeypatch):
    out = tmp_path / "P"
    (out / "aligned").mkdir(parents=True)
    (out / "aligned" / "mine.png").write_bytes(b"x")
    result = _demo_until_first_stage(out, monkeypatch, "--overwrite")
    assert result.exit_code == 2 and "aligned" in result.output and "error:" in result.output
    assert (out / "aligned" / "mine.png").is_file()


def test_a_demo_into_a_folder_another_run_holds_is_refused(tmp_path, monkeypatch):
    # Without the lock a second demo with --overwrite deleted the folders of one still running.
    from realsr_tools.pipeline.output import output_lock

    out = tmp_path / "P"
    with output_lock(out):
        result = _demo_until_first_stage(out, monkeypatch, "--overwrite")
    assert result.exit_code == 2 and "another realsr run" in result.output
    assert isinstance(_demo_until_first_stage(out, monkeypatch).exception, _Stop)  # released when that run ends
