"""realsr crop: exact geometry on real RealSR pairs, BasicSR meta_info, masks, resume and bad input."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.patches import patch_starts, plan_patches
from realsr_tools.stages.crop import run_crop
from realsr_tools.errors import ConfigError, InputError, ManifestError, OutputExistsError
from realsr_tools.pipeline.manifest import make_header, read_manifest, write_manifest
from realsr_tools.pipeline.pairs import open_pairs

from conftest import real_pair_folder

runner = CliRunner()
NAMES = ("Canon_004_LR4.png", "Nikon_017_LR4.png", "Canon_033_LR4.png")


@pytest.fixture
def pair_folder(tmp_path, data_dir):
    """Three real RealSR x4 pairs (HR 512, LR 128) as an HR/+LR/ folder (copies: some tests damage them)."""
    return real_pair_folder(tmp_path / "pairs", data_dir, NAMES, copy=True)


def test_patch_starts_place_the_last_patch_flush_with_the_border():
    # Worked by hand: 128 px, 48 px patches every 36 px -> 0, 36, 72 fit; 72 + 48 = 120 < 128, so one more at 80.
    assert patch_starts(128, 48, 36).tolist() == [0, 36, 72, 80]
    assert patch_starts(128, 64, 64).tolist() == [0, 64]  # tiles exactly: no extra patch
    assert patch_starts(100, 48, 48).tolist() == [0, 48, 52]
    assert patch_starts(40, 48, 48).tolist() == []  # smaller than a patch
    for length, size, step in [(128, 48, 36), (1000, 192, 192), (777, 272, 100), (380, 380, 380)]:
        covered = np.zeros(length, bool)
        for start in patch_starts(length, size, step):
            assert 0 <= start and start + size <= length
            covered[start : start + size] = True
        assert covered.all()


def test_plan_patches_with_a_mask_skips_and_counts_patches_touching_invalid_pixels():
    valid = np.ones((128, 128), bool)
    valid[:10, :] = False  # an unfilled band at the top, as a warp leaves it
    valid[100, 5] = False  # one stray invalid pixel
    plan = plan_patches(128, 128, size=48, step=48, valid=valid)
    # Grid over the valid bounding box rows 10..127 (118 px) -> starts 10, 58, 80 (flush); columns 0, 48, 80.
    # (0, 58) and (0, 80) both hold pixel (5, 100).
    assert plan.boxes == ((0, 10), (48, 10), (80, 10), (48, 58), (80, 58), (48, 80), (80, 80))
    assert plan.skipped_invalid == 2
    for x, y in plan.boxes:
        assert valid[y : y + 48, x : x + 48].all()


def test_crop_cuts_hr_at_exactly_scale_times_the_lr_box_and_covers_every_pixel(pair_folder, tmp_path):
    out = tmp_path / "out"
    summary = run_crop(pair_folder, out, scale=4, size=48, step=36, workers=2, show_progress=False)
    assert summary.pairs == 3 and summary.pairs_done == 3 and summary.pairs_failed == 0
    assert summary.patches == 3 * 16  # 4 x 4 starts per 128 px LR (see test above)
    manifest = read_manifest(out, stage="crop")
    for name in NAMES:
        lr_full = cv2.imread(str(pair_folder / "LR" / name))
        hr_full = cv2.imread(str(pair_folder / "HR" / name))
        records = [r for r in manifest.records if r["pair"] == name[:-4]]
        covered = np.zeros(lr_full.shape[:2], bool)
        for record in records:
            x, y, n, _ = record["lr_box"]
            assert record["hr_box"] == [4 * x, 4 * y, 4 * n, 4 * n]
            assert record["lr"].split("/")[1] == record["hr"].split("/")[1]
            assert record["hr"].startswith(f"HR/{name[:-4]}_s")  # the pair id is kept whole, "LR4" included
            lr_patch = cv2.imread(str(out / record["lr"]))
            hr_patch = cv2.imread(str(out / record["hr"]))
            np.testing.assert_array_equal(lr_patch, lr_full[y : y + n, x : x + n])
            np.testing.assert_array_equal(hr_patch, hr_full[4 * y : 4 * y + 4 * n, 4 * x : 4 * x + 4 * n])
            covered[y : y + n, x : x + n] = True
        assert covered.all() and len(records) == 16
    # BasicSR's paired_paths_from_meta_info_file: first token of each line is the GT name, LQ has the same name.
    lines = (out / "meta_info.txt").read_text().splitlines()
    assert len(lines) == 48 and lines[0] == "Canon_004_LR4_s001.png (192,192,3)"
    for line in lines:
        name = line.split(" ")[0]
        assert (out / "HR" / name).is_file() and (out / "LR" / name).is_file()
    assert len(open_pairs(out).pairs) == 48  # the crop output is itself a source for the next stages


def test_crop_reads_align_manifest_masks_and_carries_quality(tmp_path, data_dir):
    align = tmp_path / "align"
    records = []
    for index, name in enumerate(NAMES[:2]):
        for sub in ("HR", "LR"):
            (align / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(data_dir / "pairs" / "realsr_x4" / sub / name, align / sub / name)
        mask = np.full((128, 128), 255, np.uint8)
        mask[:, :20] = 0  # left band unfilled
        (align / "masks").mkdir(exist_ok=True)
        cv2.imwrite(str(align / "masks" / name), mask)
        quality = {"psnr": 30.0 + index, "ssim": 0.9, "shift_median": 0.1, "shift_worst": 0.3}
        records.append({"id": name[:-4], "lr": f"LR/{name}", "hr": f"HR/{name}", "scale": 4, "status": "ok",
                        "mask": f"masks/{name}" if index == 0 else None, "quality": quality})
    records.append({"id": "broken", "lr": None, "hr": None, "scale": 4, "status": "failed"})
    write_manifest(align, make_header("align", params={}, path_keys=("lr", "hr", "mask")), records)
    summary = run_crop(align, tmp_path / "out", size=64, show_progress=False)
    crop = read_manifest(tmp_path / "out", stage="crop")
    masked = [r for r in crop.records if r["pair"] == NAMES[0][:-4]]
    # Valid columns 20..127 (108 px): x starts 20, 64 (flush); rows 0, 64 -> 4 patches, none touches the band.
    assert sorted(tuple(r["lr_box"][:2]) for r in masked) == [(20, 0), (20, 64), (64, 0), (64, 64)]
    assert summary.patches_skipped_invalid == 0 and summary.patches == 4 + 4
    assert all(r["quality"]["psnr"] == 31.0 for r in crop.records if r["pair"] == NAMES[1][:-4])
    assert crop.header["upstream"]["sha256"]


def test_crop_resumes_redoes_missing_patches_and_overwrites_on_request(pair_folder, tmp_path):
    out = tmp_path / "out"
    run_crop(pair_folder, out, scale=4, size=64, show_progress=False)
    first = (out / "HR" / "Nikon_017_LR4_s002.png").stat().st_mtime_ns
    (out / "LR" / "Canon_033_LR4_s003.png").unlink()
    again = run_crop(pair_folder, out, scale=4, size=64, show_progress=False)
    assert (again.pairs_resumed, again.pairs_done, again.patches) == (2, 1, 12)
    assert (out / "LR" / "Canon_033_LR4_s003.png").is_file()
    assert (out / "HR" / "Nikon_017_LR4_s002.png").stat().st_mtime_ns == first  # untouched
    # An interrupted run leaves only its journal: a re-run resumes from it, and refuses other settings.
    manifest = out / "manifest.jsonl"
    (out / "manifest.jsonl.journal").write_text("".join(manifest.read_text().splitlines(keepends=True)[1:]))
    manifest.unlink()
    with pytest.raises(OutputExistsError, match="size 64 -> 32"):
        run_crop(pair_folder, out, scale=4, size=32, show_progress=False)
    assert run_crop(pair_folder, out, scale=4, size=64, show_progress=False).pairs_resumed == 3
    with pytest.raises(OutputExistsError, match="size 64 -> 32"):
        run_crop(pair_folder, out, scale=4, size=32, show_progress=False)
    redone = run_crop(pair_folder, out, scale=4, size=32, overwrite=True, show_progress=False)
    assert redone.patches == 3 * 16 and len(list((out / "HR").iterdir())) == 48  # old 64 px patches removed
    assert len((out / "meta_info.txt").read_text().splitlines()) == 48


def test_crop_bad_input(pair_folder, tmp_path):
    with pytest.raises(ConfigError, match="--scale"):
        run_crop(pair_folder, tmp_path / "a", show_progress=False)
    # A pair whose HR is not 4x its LR, and an undecodable one: recorded failures, the rest is cut.
    cv2.imwrite(str(pair_folder / "HR" / NAMES[1]), np.zeros((500, 512, 3), np.uint8))
    (pair_folder / "HR" / NAMES[2]).write_bytes(b"\x89PNG\r\n\x1a\n not really a png IEND\xaeB`\x82")
    summary = run_crop(pair_folder, tmp_path / "b", scale=4, size=64, show_progress=False)
    assert summary.pairs_failed == 2 and summary.patches == 4
    failures = {r["id"]: r["error"] for r in read_manifest(tmp_path / "b").records if r["status"] == "failed"}
    assert "HR is 512x500 but LR 128x128 at scale 4 needs 512x512" in failures["Nikon_017_LR4"]
    assert "cannot decode" in failures["Canon_033_LR4"]
    # Re-running keeps what was written and retries only the failures.
    again = run_crop(pair_folder, tmp_path / "b", scale=4, size=64, show_progress=False)
    assert again.pairs_resumed == 1 and again.patches == 4
    (pair_folder / "LR" / NAMES[0]).unlink()
    with pytest.raises(InputError, match="without an LR partner"):
        run_crop(pair_folder, tmp_path / "c", scale=4, show_progress=False)
    train = tmp_path / "train"
    write_manifest(train, make_header("train", params={}), [])
    with pytest.raises(ManifestError, match="'train' manifest"):
        run_crop(train, tmp_path / "d", scale=4, show_progress=False)
    stray = tmp_path / "e" / "HR"
    stray.mkdir(parents=True)
    (stray / "mine.png").write_bytes(b"x")
    result = runner.invoke(app, ["crop", str(tmp_path / "b"), "--out", str(tmp_path / "e"), "--size", "32"])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output
    assert (stray / "mine.png").read_bytes() == b"x"


def test_crop_cli_prints_a_summary(pair_folder, tmp_path):
    result = runner.invoke(app, ["-q", "crop", str(pair_folder), "--scale", "4", "--out", str(tmp_path / "o"),
                                 "--size", "128", "--png-compression", "1", "-j", "2"])
    assert result.exit_code == 0, result.output
    assert "3 patch pair(s) from 3 pair(s)" in result.output  # one 128 px patch per 128 px LR
    result = runner.invoke(app, ["-q", "crop", str(pair_folder), "--scale", "4", "--out", str(tmp_path / "p")])
    # The default 192 px patch is larger than every 128 px LR: refused before any work (issue 12 case 6), not
    # "3 gave no patch" and exit 0.
    assert result.exit_code == 2 and "pass --size 128 or less" in result.output


def test_crop_refuses_an_id_that_names_a_path_before_writing_anything(pair_folder, tmp_path):
    # issue 12 case 2: an id of '../../X' made crop write files outside --out before any check failed.
    import json

    first = tmp_path / "first"
    run_crop(pair_folder, first, scale=4, size=64, show_progress=False)
    path = first / "manifest.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["id"] = "../../X"
    path.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    listing = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, ["-q", "crop", str(first), "--out", str(tmp_path / "a" / "b"), "--size", "32"])
    assert result.exit_code == 2 and "../../X" in result.output and "file name" in result.output
    assert sorted(tmp_path.rglob("*")) == listing


def test_a_second_run_into_a_folder_in_use_is_refused_with_one_line(pair_folder, tmp_path):
    # issue 12 case 3: two crops into one --out with different --size both exited 0 and mixed their patches.
    from realsr_tools.pipeline.output import output_lock

    out = tmp_path / "out"
    with output_lock(out):  # a first run holds the folder
        result = runner.invoke(app, ["-q", "crop", str(pair_folder), "--out", str(out), "--scale", "4",
                                     "--size", "32"])
    assert result.exit_code == 2 and "another realsr run" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (out / "HR").exists()
    assert runner.invoke(app, ["-q", "crop", str(pair_folder), "--out", str(out), "--scale", "4",
                               "--size", "32"]).exit_code == 0  # released when that run ends
