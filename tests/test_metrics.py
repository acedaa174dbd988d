"""Metrics pinned to outside references on real RealSR/DRealSR pairs.

Reference values come from scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=2)`` (the MATLAB/BasicSR SSIM) and a float64 numpy MSE
PSNR, both computed here on the same arrays. ``benchmarks/bench_metrics.py --pairs`` runs the same check on all 193
pairs; these tests use a representative subset (both datasets; Canon, Nikon and Sony) to stay fast.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from realsr_tools import metrics
from realsr_tools.imaging import read_pixels
from realsr_tools.metrics import Protocol, aim_score, measure, psnr, rgb_to_y, ssim
from skimage.color import rgb2ycbcr

PAIRS = ["realsr_x4/Canon_003_LR4.png", "realsr_x4/Nikon_050_LR4.png", "drealsr_x4/sony_1_x1.png"]


def _real_pair(data_dir, name):
    """HR and the bicubic-upscaled LR of one real pair (a realistic SR result)."""
    folder, file = name.split("/")
    hr = read_pixels(data_dir / "pairs" / folder / "HR" / file)
    lr = read_pixels(data_dir / "pairs" / folder / "LR" / file)
    return hr, cv2.resize(lr, (hr.shape[1], hr.shape[0]), interpolation=cv2.INTER_CUBIC)


def _reference(hr, sr, border, channels):
    a, b = (hr, sr) if not border else (hr[border:-border, border:-border], sr[border:-border, border:-border])
    a, b = a.astype(np.float64), b.astype(np.float64)
    if channels == "y":  # scikit-image's BT.601 Y (16-235) of RGB in [0, 1]: an implementation realsr does not call
        a, b = rgb2ycbcr(a / 255.0)[..., 0], rgb2ycbcr(b / 255.0)[..., 0]
    reference_ssim = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           data_range=255, channel_axis=2 if channels == "rgb" else None)
    reference_psnr = 10 * np.log10(255.0**2 / np.mean((a - b) ** 2))
    return reference_psnr, reference_ssim


@pytest.fixture(scope="module")
def pairs(data_dir):
    available = [n for n in PAIRS if (data_dir / "pairs" / n.split("/")[0] / "HR" / n.split("/")[1]).is_file()]
    assert len(available) == len(PAIRS), f"missing real pairs: {set(PAIRS) - set(available)}"
    return {name: _real_pair(data_dir, name) for name in PAIRS}


@pytest.mark.parametrize(("channels", "border"), [("rgb", 0), ("rgb", 4), ("y", 4), ("y", 7)])
def test_psnr_ssim_equal_scikit_image_on_real_pairs(pairs, channels, border, monkeypatch):
    # An odd strip height puts strip seams everywhere on the 512-pixel images: seams must not change the value.
    monkeypatch.setattr(metrics, "STRIP_ROWS", 37)
    for name, (hr, sr) in pairs.items():
        reference_psnr, reference_ssim = _reference(hr, sr, border, channels)
        got = measure(hr, sr, crop_border=border, channels=channels, backend="numpy")
        assert abs(got.ssim - reference_ssim) < 1e-10, name
        assert abs(got.psnr - reference_psnr) < 1e-10, name
        assert psnr(hr, sr, crop_border=border, channels=channels) == pytest.approx(reference_psnr, abs=1e-10)
        assert ssim(hr, sr, crop_border=border, channels=channels, backend="numpy") == got.ssim
        assert 0.3 < got.ssim < 1 and 15 < got.psnr < 40  # the pairs are real, not trivially equal or unrelated


def test_torch_backend_on_cpu_equals_numpy_backend(pairs):
    hr, sr = pairs["drealsr_x4/sony_1_x1.png"]
    hr, sr = hr[100:260, 50:250], sr[100:260, 50:250]  # float64 conv2d is slow on CPU; CUDA is its target
    for channels in ("rgb", "y"):
        numpy_value = ssim(hr, sr, crop_border=4, channels=channels, backend="numpy")
        torch_value = measure(hr, sr, crop_border=4, channels=channels, backend="torch")
        assert abs(torch_value.ssim - numpy_value) < 1e-10
        assert abs(torch_value.psnr - psnr(hr, sr, crop_border=4, channels=channels)) < 1e-10


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])
def test_input_dtypes_give_the_uint8_value(pairs, dtype):
    hr, sr = pairs["realsr_x4/Nikon_050_LR4.png"]
    expected = measure(hr, sr, crop_border=4, backend="numpy", workers=1)
    if dtype == "uint16":
        a, b, data_range = hr.astype(np.uint16) * 257, sr.astype(np.uint16) * 257, 65535
    else:
        a, b, data_range = hr.astype(dtype) / 255, sr.astype(dtype) / 255, 1.0
    got = measure(a, b, data_range=data_range, crop_border=4, backend="numpy", workers=2)
    tolerance = 1e-6 if dtype == "float32" else 1e-10  # float32 holds x / 255 to about 3e-8 relative
    assert abs(got.ssim - expected.ssim) < tolerance and abs(got.psnr - expected.psnr) < 1e-4


def test_identical_images_and_the_y_range(pairs):
    hr, _ = pairs["realsr_x4/Canon_003_LR4.png"]
    assert psnr(hr, hr) == float("inf")
    assert ssim(hr, hr, channels="y") == pytest.approx(1.0, abs=1e-12)
    # BT.601 studio swing: black is 16, white 235 (ITU-R BT.601; BasicSR's rgb2ycbcr).
    np.testing.assert_allclose(rgb_to_y(np.array([[0.0, 0, 0], [255, 255, 255]])), [16.0, 235.0], atol=1e-12)


def test_aim_score_formula():
    # AIM 2020 Real Image SR challenge: score = PSNR / 50 + (SSIM - 0.4) / 0.6, from the set means.
    assert aim_score(29.0, 0.82) == pytest.approx(0.58 + 0.7, abs=1e-12)
    assert aim_score(25.0, 0.4) == pytest.approx(0.5, abs=1e-12)
    assert Protocol(channels="y", crop_border=4).to_dict()["y_formula"].startswith("BT.601")


def test_invalid_inputs_are_refused():
    a = np.zeros((32, 32, 3), np.uint8)
    cases = [
        (lambda: psnr(a, a[:16]), "differ in shape"),
        (lambda: ssim(a.astype(np.float32), a.astype(np.float32)), "data_range"),
        (lambda: psnr(a, a, crop_border=16), "leaves nothing"),
        (lambda: ssim(a, a, crop_border=11), "11x11"),
        (lambda: psnr(a, a, channels="lab"), "channels"),
        (lambda: ssim(a[..., 0], a[..., 0], channels="y"), "RGB"),
        (lambda: ssim(a, a, backend="jax"), "backend"),
        (lambda: psnr(a, a, data_range=0), "positive"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_auto_backend_does_not_import_torch():
    # Importing torch only to ask for CUDA cost align and wash 3.3 s per process; "auto" must not do it.
    import subprocess
    import sys

    code = ("import sys, numpy as np; from realsr_tools.metrics import measure; "
            "a = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32); "
            "measure(a, a * 0.9, data_range=1.0); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
