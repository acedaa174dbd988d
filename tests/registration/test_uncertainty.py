"""The corner uncertainty is the spread of the fit over noise realisations, not a fraction of it.

Why: the fit runs on smoothed images, whose residuals are correlated over several pixels; counted as independent
samples they made ``registration.uncertainty`` read 3.2-9.3 times smaller than the fit's real scatter (docs/align.md,
"Corner uncertainty"), so the texture gate and a reader of the manifest were told a geometry was pinned when noise
alone moved its corners further.
"""

from collections import Counter

import cv2
import numpy as np

from realsr_tools.geometry import apply_homography, output_window
from realsr_tools.imaging.files import read_image
from realsr_tools.registration import register_captures

SEEDS = 16


def _captures(photo: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HR: the photograph; LR: the HR seen at half the focal length, rolled 0.5 deg and shifted, with sensor noise.
    Returns LR, HR (uint16 RGB) and the true LR -> HR homography."""
    hr = photo.astype(np.float32)  # read_image: float in [0, 1]
    lh, lw = hr.shape[0] * 5 // 8, hr.shape[1] * 5 // 8  # the LR frame sees 1.25x the HR field
    angle, zoom = np.deg2rad(0.5), 2.0
    c, s = np.cos(angle) * zoom, np.sin(angle) * zoom
    centre_hr, centre_lr = np.array([hr.shape[1] - 1, hr.shape[0] - 1]) / 2, np.array([lw - 1, lh - 1]) / 2
    lr_to_hr = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    lr_to_hr[:2, 2] = centre_hr + np.array([3.3, -2.7]) - lr_to_hr[:2, :2] @ centre_lr
    # Anti-aliasing for the 2x reduction, then each LR pixel sampled where the truth puts it; the field outside the
    # HR frame is mid grey (the LR sees more than the HR).
    smooth = cv2.GaussianBlur(hr, (0, 0), 0.8)
    lr = cv2.warpAffine(smooth, lr_to_hr[:2], (lw, lh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=(0.5, 0.5, 0.5))
    lr = lr + np.random.default_rng(seed).normal(0, 0.02, lr.shape).astype(np.float32)
    to16 = lambda a: np.round(np.clip(a, 0, 1) * 65535).astype(np.uint16)  # noqa: E731
    return to16(lr), to16(hr), lr_to_hr


def test_the_corner_uncertainty_is_the_spread_of_the_fit_over_noise(data_dir):
    photo = read_image(data_dir / "photos" / "kodak_kodim03.png")
    fits, corners = [], None
    for seed in range(SEEDS):
        lr, hr, truth = _captures(photo, seed)
        registration, _ = register_captures(lr, hr, ratio=2.0)
        if corners is None:
            x, y, w, h = output_window(registration.lr_to_hr, lr.shape, hr.shape, distortion=registration.distortion)
            corners = np.array([[x, y], [x + w - 1, y], [x, y + h - 1], [x + w - 1, y + h - 1]], float)
        error = (registration.map(corners) - apply_homography(truth, corners)) / 2.0  # LR px
        fits.append((registration.model.name, error, registration.uncertainty))
    assert max(np.abs(error).max() for _, error, _ in fits) < 0.5  # every fit found the pair
    # The uncertainty is that of the model the fit chose; the noise also moves that choice (measured: similarity 10
    # times, affine 4, homography 2), so the spread is taken over the fits of the most frequent model.
    model = Counter(name for name, _, _ in fits).most_common(1)[0][0]
    errors = np.array([error for name, error, _ in fits if name == model])  # fits x corners x 2
    scatter = float(np.sqrt(errors.var(axis=0, ddof=1).sum(axis=1)).max())  # the largest corner's deviation
    reported = float(np.median([u for name, _, u in fits if name == model]))
    # Measured 1.41 (a ten-fit standard deviation is good to about +-25 %; on generator pairs 0.78-1.11, 0.38 where
    # the model choice flips with the noise); 0.40 before the correlation of the smoothed residuals was counted.
    assert 0.7 < reported / scatter < 2.0, (reported, scatter)
