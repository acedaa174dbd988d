"""Captures whose white balance differs (auto white balance; +-15 % is common) register as well as captures whose
balance agrees: the HR's channels are balanced to the LR's before the grey is formed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realsr_tools.registration import register_captures
from realsr_tools.registration.luma import srgb_to_linear

from conftest import srgb16

SCALE = 2
SHIFT = (0.3, -0.2)  # LR px
ROLL = 0.5  # degrees
VIGNETTING = 0.3  # LR gain 1 - v r^2, r = 1 at the LR frame's corner


def _pair(photo, white_balance):
    """x2 LR/HR of a photograph: the HR is the scene's central half at full resolution; the LR the whole scene
    rolled, shifted, blurred, area-downscaled, vignetted, with the channel gains ``white_balance`` and noise.
    Returns LR, HR and the true LR -> HR map of points."""
    image = cv2.imread(str(photo))[..., ::-1]
    height = round(image.shape[0] * 1200 / image.shape[1])
    scene = srgb_to_linear(cv2.resize(image, (1200, height), interpolation=cv2.INTER_AREA) / 255.0)
    scene = scene.astype(np.float32)
    h, w = scene.shape[:2]
    hh, hw = h // 2 // SCALE * SCALE, w // 2 // SCALE * SCALE
    y0, x0 = (h - hh) // 2, (w - hw) // 2
    hr = scene[y0:y0 + hh, x0:x0 + hw]
    move = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), ROLL, 1.0)
    move[:, 2] += np.array(SHIFT) * SCALE
    moved = cv2.warpAffine(scene, move, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    lr = cv2.resize(cv2.GaussianBlur(moved, (0, 0), 0.7), (w // SCALE, h // SCALE), interpolation=cv2.INTER_AREA)
    lh, lw = lr.shape[:2]
    yy, xx = np.mgrid[0:lh, 0:lw]
    r2 = ((xx - (lw - 1) / 2) ** 2 + (yy - (lh - 1) / 2) ** 2) / (((lw - 1) / 2) ** 2 + ((lh - 1) / 2) ** 2)
    lr = lr * (1 - VIGNETTING * r2)[..., None].astype(np.float32) * np.float32(white_balance)
    lr = lr + np.random.default_rng(0).normal(0, 0.002, lr.shape).astype(np.float32)
    back = cv2.invertAffineTransform(move)

    def truth(points):
        scene_points = SCALE * points + (SCALE - 1) / 2  # area downscaling: LR pixel centre -> scene px
        return scene_points @ back[:, :2].T + back[:, 2] - np.array([x0, y0])
    return srgb16(lr), srgb16(hr), truth


def _error(photo, white_balance):
    """RMS error (LR px) of the registered map over the HR field's central part, and the HR gains applied."""
    lr, hr, truth = _pair(photo, white_balance)
    registration, _ = register_captures(lr, hr, ratio=SCALE)
    h, w = lr.shape[:2]
    points = np.array([[x, y] for x in np.linspace(0.3 * w, 0.7 * w, 9) for y in np.linspace(0.3 * h, 0.7 * h, 9)])
    error = np.sqrt(np.mean(np.sum((registration.map(points) - truth(points)) ** 2, axis=1))) / SCALE
    return float(error), registration.hr_channel_gains


@pytest.mark.parametrize("photo", ["nikon_d3100_DSC_0008.JPG", "canon_eosrp_MG_0635.JPG"])
def test_a_white_balance_change_does_not_move_a_colour_chart(data_dir, photo):
    """Measured: balanced as the LR, 0.007 / 0.005 LR px; the LR's red +20 % and blue -15 %, the plain luma fit
    was 0.038 / 0.038 px off (a single gain cannot match a red patch and a blue one, and the fit moved their
    edges); with the HR's channels balanced first, 0.007 / 0.006 px."""
    path = data_dir / "exif_jpeg" / "digicam_corpus" / photo
    equal, no_gains = _error(path, (1.0, 1.0, 1.0))
    changed, gains = _error(path, (1.2, 1.0, 0.85))
    assert no_gains is None  # the plain luma where the balance agrees
    assert gains is not None and np.allclose(gains, (1.2, 1.0, 0.85), rtol=0.02), gains
    assert equal < 0.02, equal
    assert changed - equal < 0.01, (equal, changed)


def test_a_degenerate_coarse_estimate_leaves_the_grey_as_it_is():
    """A coarse homography that maps the HR field nowhere (non-finite, or onto a sliver) gives no balance rather
    than an error: the refinement that follows decides what the pair is worth."""
    from realsr_tools.registration.luma import channel_balance

    rng = np.random.default_rng(0)
    lr, hr = rng.random((100, 120, 3), dtype=np.float32), rng.random((200, 240, 3), dtype=np.float32)
    for lr_to_hr in (np.array([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]]), np.diag([1e-9, 1e-9, 1.0])):
        gains, used = channel_balance(lr, hr, lr_to_hr)
        assert used == 0 and np.array_equal(gains, np.ones(3))
