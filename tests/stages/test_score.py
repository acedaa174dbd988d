"""Scoring: the MATLAB bicubic baseline, tiled inference, self-ensemble, tile fitting and ``realsr score``."""

from __future__ import annotations

import csv
import json
import math
import os

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from typer.testing import CliRunner

from conftest import real_pair_folder
from realsr_tools.cli import app
from realsr_tools.imaging import read_image, read_pixels
from realsr_tools.models import checkpoint_dict, create_model
from realsr_tools.inference import (_forward_peak, bicubic_upscale, cubic, exact_overlap, largest_tile,
                                    receptive_radius, self_ensemble, tiled_sr)

runner = CliRunner()
NAMES = ["Canon_003_LR4.png", "Nikon_050_LR4.png", "Canon_020_LR4.png"]


@pytest.fixture
def real_pairs(tmp_path, data_dir):
    """An HR/+LR/ folder of three real RealSR x4 pairs (symbolic links: the data is not copied)."""
    return real_pair_folder(tmp_path / "pairs", data_dir, NAMES, copy=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs torch with one intra-op thread (see conftest)."""


@pytest.fixture(scope="module")
def small_model():
    """A 2-block EDSR with seeded, perturbed weights (so the body, not only the bicubic skip, matters)."""
    torch.manual_seed(0)
    model = create_model("edsr_small", 4, blocks=2).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter += 0.05 * torch.randn_like(parameter)
    return model


def _naive_matlab_bicubic(image, scale):
    """Direct 2-D evaluation of MATLAB's imresize bicubic (a = -0.5, mirrored indices), pixel by pixel."""
    height, width = image.shape

    def mirror(i, n):
        return -i - 1 if i < 0 else 2 * n - 1 - i if i >= n else i

    out = np.zeros((height * scale, width * scale))
    for i in range(height * scale):
        u = (i + 0.5) / scale - 0.5
        for j in range(width * scale):
            v = (j + 0.5) / scale - 0.5
            for a in range(math.floor(u) - 1, math.floor(u) + 3):
                for b in range(math.floor(v) - 1, math.floor(v) + 3):
                    out[i, j] += cubic(np.array(u - a)) * cubic(np.array(v - b)) * image[mirror(a, height),
                                                                                         mirror(b, width)]
    return out


def test_bicubic_is_matlab_imresize(data_dir):
    lr = read_pixels(data_dir / "pairs" / "realsr_x4" / "LR" / NAMES[0])[40:47, 60:69, 1].astype(np.float64)
    for scale in (2, 3, 4):
        np.testing.assert_allclose(bicubic_upscale(lr[..., None], scale)[..., 0], _naive_matlab_bicubic(lr, scale),
                                   atol=2e-4)
    # Keys' a = -0.5 reproduces quadratics away from the edges (a = -0.75, OpenCV's and PyTorch's, does not).
    y, x = np.mgrid[0:16, 0:20].astype(np.float64)
    quadratic = (0.3 * y**2 + 0.2 * x * y - 0.1 * x**2 + 3 * x + 100).astype(np.float32)
    yy, xx = np.meshgrid((np.arange(64) + 0.5) / 4 - 0.5, (np.arange(80) + 0.5) / 4 - 0.5, indexing="ij")
    truth = 0.3 * yy**2 + 0.2 * xx * yy - 0.1 * xx**2 + 3 * xx + 100
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(bicubic_upscale(quadratic[..., None], 4)[..., 0] - truth)[inner].max() < 1e-3
    opencv = cv2.resize(quadratic, (80, 64), interpolation=cv2.INTER_CUBIC)
    assert np.abs(opencv - truth)[inner].max() > 1e-2


def test_tiled_equals_untiled(small_model, data_dir):
    lr = torch.from_numpy(read_image(data_dir / "pairs" / "realsr_x4" / "LR" / NAMES[1])[:80, :96]).permute(2, 0, 1)
    lr = lr[None].contiguous()
    overlap = exact_overlap(small_model)
    assert receptive_radius(small_model) == 11 and overlap == 32
    assert receptive_radius(create_model("edsr_ca", 4)) is None  # channel attention pools globally
    with torch.inference_mode():
        whole = small_model(lr)
        tiled = tiled_sr(small_model, lr, scale=4, tile=64, overlap=overlap)  # 2 x 2 tiles
        assert tiled.shape == whole.shape
        assert (tiled - whole).abs().max().item() < 1e-5
        # Too small an overlap shows the seams: the test can fail.
        assert (tiled_sr(small_model, lr, scale=4, tile=24, overlap=4) - whole).abs().max().item() > 1e-3


def test_self_ensemble(small_model, data_dir):
    lr = torch.from_numpy(read_image(data_dir / "pairs" / "realsr_x4" / "LR" / NAMES[2])[:24, :32]).permute(2, 0, 1)
    lr = lr[None].contiguous()

    def bicubic(x):
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)

    with torch.inference_mode():
        # Bicubic is symmetric under flips and quarter turns: its self-ensemble is itself.
        assert (self_ensemble(bicubic, lr) - bicubic(lr)).abs().max().item() < 1e-5
        got = self_ensemble(small_model, lr)[0].permute(1, 2, 0).numpy()
        image = lr[0].permute(1, 2, 0).numpy()
        expected = np.zeros_like(got)
        for flip in (False, True):
            for turns in range(4):
                x = np.rot90(image[:, ::-1] if flip else image, turns)
                y = small_model(torch.from_numpy(x.copy()).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
                y = np.rot90(y, -turns)
                expected += (y[:, ::-1] if flip else y) / 8
    np.testing.assert_allclose(got, expected, atol=1e-5)


# The real peak memory of one forward pass, measured by the operating system in a fresh process: the kernel's
# resident high-water mark (VmHWM), reset just before the pass (/proc/self/clear_refs, "5"), less the resident size
# then. Independent of realsr's estimator and of any peak reached earlier (imports, the warm-up).
PEAK_CHILD = r"""
import sys, torch
from realsr_tools.models import create_model

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # kB

torch.set_num_threads(1)
torch.manual_seed(0)
model = create_model("edsr_small", 4, blocks=2).eval()
x = torch.rand(1, 3, int(sys.argv[1]), int(sys.argv[1]))
with torch.inference_mode():
    model(torch.rand(1, 3, 16, 16))  # one-time allocations
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as stream:
        stream.write("5")  # reset VmHWM to the current resident size
    model(x)
    print(status("VmHWM") - before)
"""


def _real_peak(tile: int) -> int:
    import subprocess
    import sys

    from conftest import PROJECT

    env = dict(os.environ, PYTHONPATH=str(PROJECT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(tile)], capture_output=True, text=True, env=env,
                          check=True)
    return int(done.stdout.strip().splitlines()[-1])


def test_largest_tile_fits_the_budget(small_model):
    budget = 96 * 2**20
    fit = largest_tile(small_model, budget=budget, device="cpu")
    assert 64 <= fit.tile <= 4096 and fit.tile % 16 == 0
    assert _forward_peak(small_model, fit.tile, 3, torch.device("cpu")) <= 1.1 * budget
    # What the pass really takes at that tile fits the budget, while twice the tile side would not: the measure
    # sees the activations, and the chosen tile is not needlessly small.
    assert _real_peak(fit.tile) <= budget < _real_peak(2 * fit.tile)


def _skimage_scores(hr_dir, sr_dir, border):
    psnrs, ssims = [], []
    for name in NAMES:
        hr = read_pixels(hr_dir / name)[border:-border, border:-border].astype(np.float64)
        sr = read_pixels(sr_dir / f"{name[:-4]}.png")[border:-border, border:-border].astype(np.float64)
        psnrs.append(10 * np.log10(255.0**2 / np.mean((hr - sr) ** 2)))
        ssims.append(structural_similarity(hr, sr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           data_range=255, channel_axis=2))
    return np.mean(psnrs), np.mean(ssims)


def test_cli_bicubic_then_sr_hr_folders(real_pairs, tmp_path):
    out, saved = tmp_path / "out", tmp_path / "sr"
    result = runner.invoke(app, ["score", "--bicubic", "--data", str(real_pairs), "--out", str(out), "--save",
                                 str(saved), "--per-image", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Canon_020_LR4" in result.output and "imresize" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == 3 and summary["protocol"]["crop_border"] == 4  # the scale, inferred
    assert summary["protocol"]["channels"] == "rgb" and summary["protocol"]["data_range"] == 255
    psnr_ref, ssim_ref = _skimage_scores(real_pairs / "HR", saved, 4)
    assert summary["psnr"] == pytest.approx(psnr_ref, abs=1e-9)
    assert summary["ssim"] == pytest.approx(ssim_ref, abs=1e-9)
    assert summary["score"] == pytest.approx(psnr_ref / 50 + (ssim_ref - 0.4) / 0.6, abs=1e-9)
    with open(out / "scores.csv") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == sorted(n[:-4] for n in NAMES)

    # The saved SR images scored as folders give the same numbers; Y with an explicit border differs.
    result = runner.invoke(app, ["score", "--sr", str(saved), "--hr", str(real_pairs / "HR"), "--scale", "4",
                                 "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["psnr"] == summary["psnr"] and again["ssim"] == summary["ssim"]
    result = runner.invoke(app, ["score", "--sr", str(saved), "--hr", str(real_pairs / "HR"), "--channels", "y",
                                 "--crop-border", "8", "--out", str(tmp_path / "y")])
    y_summary = json.loads((tmp_path / "y" / "summary.json").read_text())
    assert y_summary["protocol"]["y_formula"].startswith("BT.601") and y_summary["psnr"] > summary["psnr"]

    # Re-running into the same --out needs --overwrite.
    result = runner.invoke(app, ["score", "--bicubic", "--data", str(real_pairs), "--out", str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.output


def test_cli_model_tiled_matches_whole_image(data_dir, tmp_path, small_model):
    # One real pair cut to an 80x96 LR window (and the matching HR window) keeps CPU inference short.
    pairs = tmp_path / "crop"
    for side, factor in (("LR", 1), ("HR", 4)):
        (pairs / side).mkdir(parents=True)
        image = cv2.imread(str(data_dir / "pairs" / "realsr_x4" / side / NAMES[1]))
        cv2.imwrite(str(pairs / side / NAMES[1]), image[16 * factor:96 * factor, 8 * factor:104 * factor])
    checkpoint = tmp_path / "small.pt"
    torch.save(checkpoint_dict(small_model, name="edsr_small", scale=4,
                               options={"channels": 32, "blocks": 2, "res_scale": 1.0, "attention": False,
                                        "skip": "bicubic"}), checkpoint)
    summaries = []
    for tile in ("0", "64"):
        out = tmp_path / f"tile{tile}"
        result = runner.invoke(app, ["score", "--model", str(checkpoint), "--data", str(pairs), "--tile", tile,
                                     "--overlap", "32", "--device", "cpu", "--out", str(out)])
        assert result.exit_code == 0, result.output
        summaries.append(json.loads((out / "summary.json").read_text()))
    whole, tiled = summaries
    assert tiled["method"]["tile"] == 64 and whole["method"]["tile"] is None and tiled["count"] == 1
    # Tiles change the float output by < 1e-5, which can flip the 8-bit rounding of a handful of pixels.
    assert tiled["psnr"] == pytest.approx(whole["psnr"], abs=1e-3)
    assert tiled["ssim"] == pytest.approx(whole["ssim"], abs=1e-5)


def test_cli_refuses_bad_folders_and_options(real_pairs, tmp_path):
    sr = tmp_path / "sr"
    sr.mkdir()
    for name in NAMES[:2]:
        os.symlink(real_pairs / "HR" / name, sr / name)
    result = runner.invoke(app, ["score", "--sr", str(sr), "--hr", str(real_pairs / "HR"), "--scale", "4"])
    assert result.exit_code == 2 and NAMES[2] in result.output and "Traceback" not in result.output
    os.symlink(real_pairs / "LR" / NAMES[2], sr / NAMES[2])  # an LR-sized image where the SR should be
    result = runner.invoke(app, ["score", "--sr", str(sr), "--hr", str(real_pairs / "HR"), "--scale", "4"])
    assert result.exit_code == 2 and "128x128" in result.output and "512x512" in result.output
    for args in (["--sr", str(sr), "--hr", str(real_pairs / "HR")],  # no scale, no crop border
                 ["--bicubic", "--data", str(real_pairs), "--model", "x.pt"],  # two forms
                 ["--bicubic"],  # no data
                 ["--bicubic", "--data", str(real_pairs), "--tile", "64"]):  # tiling without a model
        result = runner.invoke(app, ["score", *args])
        assert result.exit_code == 2 and "error:" in result.output, args


def test_model_messages_for_a_foreign_file_and_a_run_folder(real_pairs, tmp_path, small_model):
    # issue 12 case 10: a random .pt printed torch's 6-line advice to retry with weights_only=False; a run folder
    # given as --model said "no such checkpoint".
    import pickle

    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(pickle.dumps(object()))
    result = runner.invoke(app, ["-q", "score", "--model", str(foreign), "--data", str(real_pairs)])
    assert result.exit_code == 2 and "not a realsr checkpoint" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "weights_only" not in result.output
    run = tmp_path / "run"
    run.mkdir()
    result = runner.invoke(app, ["-q", "score", "--model", str(run), "--data", str(real_pairs)])
    assert result.exit_code == 2 and "best.pt" in result.output and "no such checkpoint" not in result.output
    torch.save(checkpoint_dict(small_model, name="edsr_small", scale=4,
                               options={"channels": 32, "blocks": 2, "res_scale": 1.0, "attention": False,
                                        "skip": "bicubic"}), run / "best.pt")
    from realsr_tools.models import load_checkpoint

    assert load_checkpoint(run).name == "edsr_small"  # a run folder means its best.pt


@pytest.fixture
def mixed_scales(tmp_path, data_dir):
    """An align-style output with one x4 and one x2 pair of real images (the x2 HR is the x4 HR halved)."""
    from realsr_tools.pipeline.manifest import make_header, write_manifest

    root = tmp_path / "aligned"
    records = []
    for name, scale in ((NAMES[0], 4), (NAMES[1], 2)):
        lr = cv2.imread(str(data_dir / "pairs" / "realsr_x4" / "LR" / name))
        hr = cv2.imread(str(data_dir / "pairs" / "realsr_x4" / "HR" / name))
        if scale == 2:
            hr = cv2.resize(hr, (hr.shape[1] // 2, hr.shape[0] // 2), interpolation=cv2.INTER_AREA)
        stem = name[:-4]
        for kind, image in (("lr", lr), ("hr", hr)):
            (root / kind / f"x{scale}").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / kind / f"x{scale}" / name), image)
        records.append({"id": stem, "status": "ok", "scale": scale, "lr": f"lr/x{scale}/{name}",
                        "hr": f"hr/x{scale}/{name}", "mask": None})
    write_manifest(root, make_header("align", params={}, path_keys=("lr", "hr", "mask")), records)
    return root


def test_score_and_train_refuse_mixed_scales_without_scale(mixed_scales, tmp_path):
    # issue 12 case 10: score averaged x2 and x4 into one number; train failed with a size mismatch.
    result = runner.invoke(app, ["-q", "score", "--bicubic", "--data", str(mixed_scales)])
    assert result.exit_code == 2 and "several scales (x2, x4)" in result.output and "--scale" in result.output
    result = runner.invoke(app, ["-q", "train", str(mixed_scales), "--out", str(tmp_path / "run"), "--device",
                                 "cpu", "--steps", "1"])
    assert result.exit_code == 2 and "several scales (x2, x4)" in result.output and "--scale" in result.output
    result = runner.invoke(app, ["-q", "score", "--bicubic", "--data", str(mixed_scales), "--scale", "4"])
    assert result.exit_code == 0 and "over 1 image(s)" in result.output
