"""Dark noise clipped at zero (:func:`realsr_tools.registration.luma.dark_noise`, :func:`.luma.remove_dark_bias`): its
sigma read from where it clips, and its bias taken out of the local mean."""

from __future__ import annotations

import math

import cv2
import numpy as np

from realsr_tools.imaging import read_pixels
from realsr_tools.registration import luma
from realsr_tools.registration.luma import dark_noise, linear, remove_dark_bias


def _dark_capture(data_dir, sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A real photograph's green channel in linear light, 4 EV under (much of it within a few sigma of black), and
    the same with Gaussian noise of ``sigma`` clipped at zero, as a file holds it."""
    photo = read_pixels(data_dir / "exif_jpeg" / "digicam_corpus" / "olympus_c5050_PB180005.JPG")[:600, :900]
    truth = linear(photo[..., 1], "srgb") / np.float32(16)
    return truth, _with_clipped_noise(truth, sigma, seed)


def _with_clipped_noise(truth: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """``truth`` with Gaussian noise of ``sigma`` clipped at zero, as a file holds it."""
    noise = np.random.default_rng(seed).normal(0, sigma, truth.shape).astype(np.float32)
    return np.maximum(truth + noise, 0)


def test_the_sigma_of_dark_noise_is_read_where_it_clips(data_dir):
    for sigma in (0.002, 0.006):
        truth, captured = _dark_capture(data_dir, sigma)
        assert abs(dark_noise(captured) / sigma - 1) < 0.1
    # nothing at zero (the same photograph lifted above black), or too little of it: nothing to tell
    lifted = truth + 0.05
    assert dark_noise(lifted) is None and np.array_equal(remove_dark_bias(lifted.copy(), None), lifted)
    lone = truth + 0.05
    lone[::97, ::89] = 0
    assert dark_noise(lone) is None


def test_the_sigma_of_dark_noise_is_read_on_flat_black_not_at_a_charts_edges(data_dir, monkeypatch):
    """A ColorChecker photographed small (the real chart photograph at a third of its size, 1 EV under): its black
    bars are a few pixels wide, and most pixels whose share at zero is in the measured range lie at their edges,
    where the share is the bar's and the mean the patch's."""
    sigma = 0.0027  # the generator's read noise on its normal seed 101 chart, whose sigma read 2.5 times this
    photo = read_pixels(data_dir / "exif_jpeg" / "digicam_corpus" / "nikon_d90_DSC_0011.JPG")
    green = linear(photo[..., 1], "srgb")
    small = cv2.resize(green, (green.shape[1] // 3, green.shape[0] // 3), interpolation=cv2.INTER_AREA) / 2
    captured = _with_clipped_noise(small, sigma)
    assert abs(dark_noise(captured) / sigma - 1) < 0.2  # measured 1.11 (the photograph's own dark texture adds)
    monkeypatch.setattr(luma, "DARK_FLATNESS", math.inf)  # every pixel with a share in range measures, as before
    assert dark_noise(captured) / sigma > 1.5  # measured 1.80


def test_the_bias_of_clipped_dark_noise_is_taken_out_of_the_local_mean(data_dir):
    sigma = 0.004
    truth, captured = _dark_capture(data_dir, sigma)
    corrected = remove_dark_bias(captured.copy(), dark_noise(captured))
    local = {name: cv2.GaussianBlur(image, (0, 0), 3.0) for name, image in
             (("truth", truth), ("captured", captured), ("corrected", corrected))}
    near_black = local["truth"] < 2 * sigma
    assert near_black.mean() > 0.2
    before = float(np.mean(local["captured"][near_black] - local["truth"][near_black]))
    after = float(np.mean(local["corrected"][near_black] - local["truth"][near_black]))
    assert before > 0.2 * sigma  # what the clip does: measured 0.26 sigma here
    assert abs(after) < 0.2 * before  # measured -0.03 sigma
    # far above black nothing moves
    bright = cv2.GaussianBlur(captured, (0, 0), 1.0) > 8 * sigma
    assert bright.any() and np.array_equal(corrected[bright], captured[bright])
