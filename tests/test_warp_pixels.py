"""The HR warp on written pixels: ``warp_hr`` (and ``window_to_hr_output``, which it uses) must reproduce a known
output image from an HR source made with the true mapping. The test builds the pixel convention itself (output pixel
centre ``u`` <-> LR point ``x0 + (u + 0.5) / s - 0.5``: LR pixel ``x`` covers output pixels ``s x .. s x + s - 1``, the
convention of every x2/x3/x4 dataset and of ``realsr crop``) and makes the HR source with OpenCV, so it shares no
code with the warp under test."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realsr_tools.geometry import RadialDistortion, warp_hr, window_to_hr_output
from realsr_tools.imaging import read_image

SCALE = 4
WINDOW = (5, 7, 64, 48)  # x0, y0, w, h in LR pixels
BORDER = 16  # output pixels left out at every side (the source's own border handling)


@pytest.fixture(scope="module")
def truth(data_dir):
    """The output the warp must write: a real photograph on the output grid (slightly smoothed, so resampling it
    twice costs well under one grey level)."""
    x0, y0, w, h = WINDOW
    photo = read_image(data_dir / "photos" / "kodak_kodim03.png")
    return cv2.GaussianBlur(photo[100:100 + h * SCALE, 150:150 + w * SCALE], (0, 0), 1.0)


def lr_to_hr(ratio: float) -> np.ndarray:
    angle = np.deg2rad(2.0)
    return np.array([[ratio * np.cos(angle), -ratio * np.sin(angle), 20.0],
                     [ratio * np.sin(angle), ratio * np.cos(angle), 30.0], [0.0, 0.0, 1.0]])


def output_to_lr() -> np.ndarray:
    x0, y0 = WINDOW[:2]
    return np.array([[1 / SCALE, 0, x0 + 0.5 / SCALE - 0.5], [0, 1 / SCALE, y0 + 0.5 / SCALE - 0.5], [0, 0, 1]])


def error(truth: np.ndarray, written: np.ndarray) -> float:
    b = BORDER
    return float(np.abs(truth[b:-b, b:-b] - written[b:-b, b:-b]).mean())


def shifted(image: np.ndarray, dx: float) -> np.ndarray:
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, 0]]), image.shape[1::-1], flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def test_warp_hr_writes_the_pixels_of_the_true_mapping(truth):
    mapping = lr_to_hr(3.8)  # a little less magnification than x4: no anti-alias blur
    out_to_hr = mapping @ output_to_lr()
    np.testing.assert_allclose(window_to_hr_output(mapping, WINDOW, SCALE), out_to_hr, atol=1e-12)
    hr = cv2.warpPerspective(truth, out_to_hr, (400, 360), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    written = warp_hr(hr, mapping, WINDOW, SCALE)
    assert written.shape == truth.shape
    # The tolerance is meaningful: a quarter of an output pixel (1/16 LR px) off costs several times more.
    assert error(truth, written) < 1e-3 and error(shifted(truth, 0.25), written) > 4 * error(truth, written)


def test_warp_hr_with_radial_distortion_writes_the_pixels_of_the_complete_mapping(truth):
    mapping = lr_to_hr(3.8)
    distortion = RadialDistortion(terms=((-0.02, 40.0, 30.0, 60.0),))
    k, cx, cy, radius = distortion.terms[0]
    # The HR source: for every HR pixel, its LR point y = H^-1 p, the undistorted LR point x with
    # y = x + k (x - c) |x - c|^2 / R^2 (fixed-point iteration), then its output pixel.
    ys, xs = np.mgrid[0:360, 0:400].astype(np.float64)
    p = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ np.linalg.inv(mapping).T
    y = p[..., :2] / p[..., 2:]
    x = y.copy()
    for _ in range(30):
        d = x - (cx, cy)
        x = y - k * d * np.sum(d * d, axis=-1, keepdims=True) / radius**2
    x0, y0 = WINDOW[:2]
    u = (x - (x0 + 0.5 / SCALE - 0.5, y0 + 0.5 / SCALE - 0.5)) * SCALE
    hr = cv2.remap(truth, u[..., 0].astype(np.float32), u[..., 1].astype(np.float32), cv2.INTER_CUBIC,
                   borderMode=cv2.BORDER_REFLECT)
    written = warp_hr(hr, mapping, WINDOW, SCALE, distortion=distortion)
    assert error(truth, written) < 1e-3 and error(shifted(truth, 0.25), written) > 4 * error(truth, written)
    # Ignoring the distortion writes visibly different pixels (it moves points by up to ~2 output px here).
    assert error(truth, warp_hr(hr, mapping, WINDOW, SCALE)) > 3 * error(truth, written)
