"""The coarse search on colour: chart patches of one luma but different hue are told apart (a real ColorChecker
photograph)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realsr_tools.geometry import apply_homography
from realsr_tools.registration import register_captures, search_coarse
from realsr_tools.registration.luma import linear

from conftest import srgb16

SIZE = (1000, 667)  # both captures' frames (W, H)


@pytest.fixture(scope="module")
def chart(data_dir):
    """The real ColorChecker photograph (4608 x 3072 portrait), linear light."""
    image = cv2.imread(str(data_dir / "exif_jpeg" / "digicam_corpus" / "nikon_d3100_DSC_0008.JPG"))
    assert image is not None
    return linear(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def capture(photo: np.ndarray, centre: tuple[float, float], pitch: float, white_balance, vignetting: float):
    """A frame of SIZE centred on photo pixel ``centre``, ``pitch`` photo px per frame px (optics blur included),
    with a white balance and a radial fall-off; linear light, and the photo -> frame mapping."""
    w, h = SIZE
    to_frame = np.array([[1 / pitch, 0, (w - 1) / 2 - centre[0] / pitch],
                         [0, 1 / pitch, (h - 1) / 2 - centre[1] / pitch], [0, 0, 1]])
    source = cv2.GaussianBlur(photo, (0, 0), 0.5 * pitch) if pitch > 1 else photo
    frame = cv2.warpAffine(source, to_frame[:2], (w, h), flags=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:h, 0:w]
    fall_off = 1 - vignetting * ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    frame = frame * np.asarray(white_balance, np.float32) * fall_off[..., None].astype(np.float32)
    return np.clip(frame, 0, 1), to_frame


@pytest.fixture(scope="module")
def yellow_patch(chart):
    """LR: twelve patches; HR (x4): the yellow patch and the dark grid around it, another white balance and
    vignetting; and the LR point the HR's centre shows."""
    lr, lr_map = capture(chart, (1700, 1900), 3.0, (0.92, 1.0, 0.90), 0.28)
    hr, _ = capture(chart, (1830, 2061), 0.75, (1.09, 1.0, 1.08), 0.22)
    truth = apply_homography(lr_map, np.array([[1830.0, 2061.0]]))[0]
    return lr, hr, truth


def lr_position_of_hr_centre(lr_to_hr: np.ndarray) -> np.ndarray:
    w, h = SIZE
    return apply_homography(np.linalg.inv(lr_to_hr), np.array([[(w - 1) / 2, (h - 1) / 2]]))[0]


def test_the_search_on_colour_finds_the_patch_the_grey_confuses(yellow_patch):
    lr, hr, truth = yellow_patch
    grey = search_coarse(cv2.cvtColor(lr, cv2.COLOR_RGB2GRAY), cv2.cvtColor(hr, cv2.COLOR_RGB2GRAY), 4.0)
    colour = search_coarse(lr, hr, 4.0)
    # The premise: in grey the yellow patch matches another patch better (measured: 209 LR px away).
    assert np.hypot(*(lr_position_of_hr_centre(grey.lr_to_hr) - truth)) > 50
    assert np.hypot(*(lr_position_of_hr_centre(colour.lr_to_hr) - truth)) < 2


def test_register_captures_uses_colour_and_refines_the_chart(yellow_patch):
    lr, hr, truth = yellow_patch
    registration, _ = register_captures(srgb16(lr), srgb16(hr), ratio=4.0)
    assert np.hypot(*(lr_position_of_hr_centre(registration.lr_to_hr) - truth)) < 0.1
