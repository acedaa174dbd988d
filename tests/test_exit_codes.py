"""One exit-code policy for every command (README, "Exit codes"): 0 when at least one item succeeded (failures are
counted and listed), 1 when none did, 2 for a usage or input error found before the work starts."""

from __future__ import annotations


import pytest
from typer.testing import CliRunner

from realsr_tools.cli import app

from conftest import _zoom_series, one_error_line, real_pair_folder, unwrapped

runner = CliRunner()
NAMES = ("Canon_004_LR4.png", "Nikon_017_LR4.png", "Canon_033_LR4.png")
GARBAGE = b"this is not an image\n"


def invoke(*args):
    result = runner.invoke(app, ["-q", *map(str, args)])
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def pairs(tmp_path, data_dir):
    return real_pair_folder(tmp_path / "pairs", data_dir, NAMES, copy=True)


def spoil(folder, side, names):
    for name in names:
        (folder / side / name).unlink()
        (folder / side / name).write_bytes(GARBAGE)


def test_inspect_exit_codes(capture_dir, tmp_path):
    assert invoke("inspect", capture_dir).exit_code == 0
    assert invoke("inspect", tmp_path / "missing").exit_code == 2


@pytest.fixture
def one_scene(tmp_path, data_dir):
    """One scene: 105 mm HR, 28 mm (x4) and 50 mm (x2) LR captures of a real photograph; focal lengths in a CSV."""
    root = tmp_path / "captures"
    names = _zoom_series(data_dir / "photos" / "skimage_UNIS_EV0.jpg", root / "scene", (28, 50, 105))
    rows = ["path,focal_mm"] + [f"scene/{n},{f}" for n, f in zip(names, (28, 50, 105))]
    (root / "captures.csv").write_text("\n".join(rows) + "\n")
    return root


def test_align_exit_codes(one_scene, tmp_path):
    (one_scene / "scene" / "f50.png").write_bytes(GARBAGE)  # the x2 LR is unreadable: one failed pair
    result = invoke("align", one_scene, "--out", tmp_path / "a", "--scales", "2,4")
    text = unwrapped(result.output)
    assert result.exit_code == 0 and "aligned 1, failed 1" in text and "f50.png" in text
    (one_scene / "scene" / "f105.png").write_bytes(GARBAGE)  # the HR too: no pair can succeed
    result = invoke("align", one_scene, "--out", tmp_path / "b", "--scales", "2,4")
    text = unwrapped(result.output)
    assert result.exit_code == 1 and "aligned 0, failed 2" in text and "f105.png" in text
    assert invoke("align", one_scene, "--out", tmp_path / "c", "--scales", "3").exit_code == 2


def test_crop_exit_codes(pairs, tmp_path):
    spoil(pairs, "LR", NAMES[:1])
    result = invoke("crop", pairs, "--out", tmp_path / "a", "--scale", "4", "--size", "64")
    text = unwrapped(result.output)
    assert result.exit_code == 0 and "failed" in text and NAMES[0][:-4] in text
    spoil(pairs, "LR", NAMES[1:])
    result = invoke("crop", pairs, "--out", tmp_path / "b", "--scale", "4", "--size", "64")
    assert result.exit_code == 1 and result.output.count("failed:") == 3


def test_crop_and_wash_refuse_a_scale_or_size_no_pair_fits_before_any_work(pairs, tmp_path):
    # issue 12 case 6: these ran to the end, failing (or skipping) every pair, and exited 0.
    result = invoke("crop", pairs, "--out", tmp_path / "a", "--scale", "2")
    text = unwrapped(result.output)
    assert result.exit_code == 2 and "HR is 4x LR in every pair; pass --scale 4" in text
    result = invoke("crop", pairs, "--out", tmp_path / "b", "--scale", "4", "--size", "500")
    text = unwrapped(result.output)
    assert result.exit_code == 2 and "--size" in text and "128x128" in text
    result = invoke("wash", pairs, "--out", tmp_path / "c", "--scale", "3")
    text = unwrapped(result.output)
    assert result.exit_code == 2 and "pass --scale 4" in text
    assert not any((tmp_path / d).exists() for d in "abc")


def test_wash_exit_codes(pairs, tmp_path):
    spoil(pairs, "LR", NAMES)
    result = invoke("wash", pairs, "--out", tmp_path / "a", "--min-psnr", "0")
    text = unwrapped(result.output)
    assert result.exit_code == 1 and "kept 0 of 3" in text and "3 failed" in text
    assert invoke("wash", tmp_path / "missing", "--out", tmp_path / "b").exit_code == 2


def test_score_exit_codes(pairs, tmp_path):
    spoil(pairs, "LR", NAMES[:1])
    result = invoke("score", "--bicubic", "--data", pairs, "--scale", "4")
    text = unwrapped(result.output)
    assert result.exit_code == 0 and "1 pair(s) not scored" in text
    spoil(pairs, "LR", NAMES[1:])
    assert invoke("score", "--bicubic", "--data", pairs, "--scale", "4").exit_code == 1
    assert invoke("score", "--bicubic", "--sr", pairs).exit_code == 2


def test_train_exit_codes(pairs, tmp_path, one_torch_thread):
    result = invoke("train", pairs, "--out", tmp_path / "run", "--scale", "4", "--model", "edsr_small", "--steps",
                    "2", "--batch", "2", "--patch", "16", "--device", "cpu", "--val-every", "2")
    assert result.exit_code == 0, result.output
    assert invoke("train", pairs, "--out", tmp_path / "run2", "--steps", "0").exit_code == 2


@pytest.mark.parametrize("args, says", [
    (["crop", "{pairs}", "--out", "{out}", "--scale", "0", "--size", "32"], "--scale"),
    (["crop", "{pairs}", "--out", "{out}", "--scale", "-4", "--size", "32"], "--scale"),
    (["wash", "{pairs}", "--out", "{out}", "--scale", "0"], "--scale"),
    (["wash", "{pairs}", "--out", "{out}", "--min-psnr", "-5"], "--min-psnr"),
    (["wash", "{pairs}", "--out", "{out}", "--min-psnr", "nan"], "--min-psnr"),
    (["wash", "{pairs}", "--out", "{out}", "--min-ssim", "2"], "--min-ssim"),
    (["wash", "{pairs}", "--out", "{out}", "--max-shift", "-1"], "--max-shift"),
    (["wash", "{pairs}", "--out", "{out}", "--max-shift", "nan"], "--max-shift"),
    (["train", "{pairs}", "--out", "{out}", "--blocks", "-1"], "--blocks"),
    (["train", "{pairs}", "--out", "{out}", "--channels", "0"], "--channels"),
    (["demo", "--out", "{out}", "--steps", "0"], "--steps"),
])
def test_options_that_make_no_sense_are_refused_before_any_work(pairs, tmp_path, args, says):
    # issue 12 case 8: these were accepted (nan dropped every pair; --channels 0 was an 80-line traceback).
    result = invoke(*[a.format(pairs=pairs, out=tmp_path / "out") for a in args])
    assert result.exit_code == 2 and says in one_error_line(result.output)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["crop", "--scale", "4", "--size", "64"], ["wash"]])
def test_pair_names_with_spaces_are_refused_for_meta_info(tmp_path, data_dir, command):
    # issue 12 case 11: BasicSR splits each meta_info.txt line at the first space, so "my pair_s001.png (..)"
    # breaks its loader.
    pairs = real_pair_folder(tmp_path / "pairs", data_dir, NAMES[:2], copy=True)
    for side in ("HR", "LR"):
        (pairs / side / NAMES[0]).rename(pairs / side / "my pair.png")
    result = invoke(command[0], pairs, "--out", tmp_path / "out", *command[1:])
    text = unwrapped(result.output)
    assert result.exit_code == 2 and "'my pair'" in text and "space" in text
    assert not (tmp_path / "out").exists()


def test_lmdb_exit_codes(pairs, tmp_path):
    pytest.importorskip("lmdb")
    spoil(pairs, "LR", NAMES[:1])
    result = invoke("lmdb", pairs, "--out", tmp_path / "a", "--scale", "4")
    text = unwrapped(result.output)
    assert result.exit_code == 0 and "1 failed" in text
    spoil(pairs, "LR", NAMES[1:])
    result = invoke("lmdb", pairs, "--out", tmp_path / "b", "--scale", "4")
    text = unwrapped(result.output)
    assert result.exit_code == 1 and "3 failed" in text
    assert invoke("lmdb", tmp_path / "missing", "--out", tmp_path / "c").exit_code == 2
