"""realsr report: a self-contained page, checked in headless Chromium (table sorts, flicker switches, no errors)."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.pipeline.manifest import make_header, write_manifest
from realsr_tools.stages.report import best_window

from browser import browser_selftest
from conftest import real_pair_folder

runner = CliRunner()
NAMES = ("Canon_004_LR4.png", "Nikon_017_LR4.png", "Canon_033_LR4.png")


@pytest.fixture
def crop_like(tmp_path, data_dir):
    """A stage output with two good pairs and one failed record (as crop writes them)."""
    root = real_pair_folder(tmp_path / "out", data_dir, NAMES[:2], copy=False)
    records = [{"id": n[:-4], "status": "ok", "lr": f"LR/{n}", "hr": f"HR/{n}", "scale": 4, "psnr": 20.0 + i}
               for i, n in enumerate(NAMES[:2])]
    records.append({"id": "broken_pair", "status": "failed", "error": "cannot decode HR", "lr": None, "hr": None})
    write_manifest(root, make_header("crop", params={"scale": 4}, path_keys=("lr", "hr")), records)
    return root


def test_report_page_is_self_contained_failed_first_and_crops_match(crop_like):
    result = runner.invoke(app, ["-q", "report", str(crop_like)])
    assert result.exit_code == 0, result.output
    page = crop_like / "report" / "index.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # no network
    sources = re.findall(r'src="([^"]+)"', text)
    assert len(sources) == 4 and all((page.parent / s).is_file() for s in sources)
    first_row = re.search(r'<tbody><tr class="s-(\w+)" data-id="([^"]+)"', text)
    assert first_row.groups() == ("failed", "broken_pair")
    assert "cannot decode HR" in text
    # The LR crop is exactly the LR's most textured window; the HR crop is 4x the same place.
    lr = cv2.imread(str(crop_like / "LR" / NAMES[0]))
    hr = cv2.imread(str(crop_like / "HR" / NAMES[0]))
    x, y, side = best_window(lr[..., ::-1])
    shown_lr = cv2.imread(str(page.parent / "pairs" / f"{NAMES[0][:-4]}.lr.png"))
    shown_hr = cv2.imread(str(page.parent / "pairs" / f"{NAMES[0][:-4]}.hr.jpg"))
    np.testing.assert_array_equal(shown_lr, lr[y:y + side, x:x + side])
    diff = np.abs(shown_hr.astype(float) - hr[4 * y:4 * (y + side), 4 * x:4 * (x + side)])
    assert diff.mean() < 3  # JPEG quality 92


def test_best_window_finds_the_textured_place():
    image = np.full((200, 300, 3), 128, np.uint8)
    image[120:180, 40:100] = np.random.default_rng(0).integers(0, 255, (60, 60, 3))
    x, y, side = best_window(image, 48)
    assert side == 48 and 40 <= x <= 52 and 120 <= y <= 132


def test_report_in_headless_chromium_sorts_flickers_and_logs_nothing(crop_like, tmp_path):
    assert runner.invoke(app, ["-q", "report", str(crop_like)]).exit_code == 0
    page = crop_like / "report" / "index.html"
    verdict, console = browser_selftest(page)
    assert verdict.startswith("PASS"), verdict
    assert "sorted column psnr" in verdict and "flicker LR->HR" in verdict
    assert console == []
    # The self-test can fail: a page whose descending sort is broken is caught.
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text().replace('sign = dir === "asc" ? 1 : -1', "sign = 1"))
    verdict, _ = browser_selftest(broken)
    assert verdict.startswith("FAIL") and "descending sort" in verdict


def test_report_of_a_run_folder_skips_a_killed_runs_torn_log_line(tmp_path):
    # The log's own contract (realsr_tools.train.runlog.parse_event): a half-written last line is skipped, even one
    # that happens to end in '}' (the report used to refuse the whole run folder for it).
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "edsr_small", "scale": 4, "config": {"batch": 8}}')
    (run / "log.jsonl").write_text('{"kind": "train", "step": 1, "loss": 0.1}\n'
                                   '{"kind": "train", "step": 2, "loss": {"torn": }\n')
    result = runner.invoke(app, ["-q", "report", str(run)])
    assert result.exit_code == 0, result.output
    page = (run / "report" / "index.html").read_text()
    assert 'data-id="train-1"' in page and 'data-id="train-2"' not in page


def test_report_of_an_align_output_shows_each_preview_and_a_refused_pairs_alone(tmp_path, data_dir):
    """align --preview writes preview/<id>.png for written pairs and for pairs the verifier refused after the warp;
    the page shows both, and its self-test (flicker, images decoded, no script errors) still passes."""
    root = real_pair_folder(tmp_path / "out", data_dir, NAMES[:1], copy=False)
    (root / "preview").mkdir()
    picture = np.full((60, 90, 3), 200, np.uint8)
    for name in ("kept", "refused"):
        cv2.imwrite(str(root / "preview" / f"{name}.png"), picture)
    records = [{"id": "kept", "status": "ok", "lr": f"LR/{NAMES[0]}", "hr": f"HR/{NAMES[0]}", "scale": 4,
                "preview": "preview/kept.png"},
               {"id": "refused", "status": "failed", "error": "verified misalignment: affine field reaches 0.9",
                "lr": None, "hr": None, "preview": "preview/refused.png"},
               {"id": "no_picture", "status": "failed", "error": "no reliable match", "lr": None, "hr": None,
                "preview": None}]
    write_manifest(root, make_header("align", params={}, path_keys=("lr", "hr")), records)
    assert runner.invoke(app, ["-q", "report", str(root)]).exit_code == 0
    page = root / "report" / "index.html"
    text = page.read_text()
    sources = re.findall(r'src="([^"]+)"', text)
    assert "../preview/kept.png" in sources and "../preview/refused.png" in sources
    assert all((page.parent / s).is_file() for s in sources)
    refused = re.search(r'<section class="refused s-failed" id="pair-refused">.*?</section>', text, re.S).group(0)
    assert "verified misalignment" in refused and "../preview/refused.png" in refused
    assert 'id="pair-no_picture"' not in text
    verdict, console = browser_selftest(page)
    assert verdict.startswith("PASS"), verdict
    assert console == []
