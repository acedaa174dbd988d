"""PSNR and SSIM in the MATLAB/BasicSR convention, and the AIM 2020 challenge score.

Protocol: images are compared on a 0-255 scale (``data_range=255``); ``crop_border`` pixels are removed on every
side; ``channels="rgb"`` averages SSIM over R, G, B and takes PSNR of the MSE over all three (AIM 2020), while
``channels="y"`` uses ITU-R BT.601 luma with offset 16, not rounded. SSIM uses an 11x11 Gaussian window
(sigma 1.5), K1 = 0.01, K2 = 0.03, population statistics, computed on the valid region only (no padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

Channels = Literal["rgb", "y"]
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11x11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03


@dataclass(frozen=True)
class Protocol:
    """Everything that changes a PSNR/SSIM number, stored beside every reported figure."""

    channels: Channels = "rgb"
    crop_border: int = 0
    data_range: float = 255.0

    def to_dict(self) -> dict:
        return {
            "channels": self.channels,
            "crop_border": self.crop_border,
            "data_range": self.data_range,
            "y_formula": "BT.601: 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on 0-255 RGB, not rounded"
            if self.channels == "y" else None,
            "ssim": "11x11 Gaussian sigma 1.5, K1 0.01, K2 0.03, valid region, mean over channels",
        }


def _prepare(reference: np.ndarray, test: np.ndarray, *, data_range: float | None, crop_border: int,
             channels: Channels) -> tuple[np.ndarray, np.ndarray]:
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.shape != test.shape:
        raise ValueError(f"images differ in shape: reference {reference.shape}, test {test.shape}")
    if data_range is None:
        if reference.dtype != np.uint8 or test.dtype != np.uint8:
            raise ValueError("pass data_range for non-uint8 images (1.0 for float images in [0, 1], 65535 for "
                             "uint16)")
        data_range = 255.0
    if crop_border < 0 or 2 * crop_border >= min(reference.shape[:2]):
        raise ValueError(f"crop_border {crop_border} leaves nothing of a {reference.shape[1]}x{reference.shape[0]} "
                         "image")
    scale = 255.0 / float(data_range)
    ref = reference.astype(np.float64) * scale
    tst = test.astype(np.float64) * scale
    if crop_border:
        ref = ref[crop_border:-crop_border, crop_border:-crop_border]
        tst = tst[crop_border:-crop_border, crop_border:-crop_border]
    if channels == "y":
        ref, tst = rgb_to_y(ref), rgb_to_y(tst)
    elif channels != "rgb":
        raise ValueError(f"channels must be 'rgb' or 'y', got {channels!r}")
    if ref.ndim == 2:
        ref, tst = ref[..., None], tst[..., None]
    return ref, tst


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (studio swing, 16-235) of RGB on a 0-255 scale; float64, not rounded."""
    weights = np.array([65.481, 128.553, 24.966]) / 255.0
    return rgb[..., :3] @ weights + 16.0


def psnr(reference: np.ndarray, test: np.ndarray, *, data_range: float | None = None, crop_border: int = 0,
         channels: Channels = "rgb") -> float:
    """PSNR in dB from the float64 MSE over all pixels and channels; ``inf`` for identical images."""
    ref, tst = _prepare(reference, test, data_range=data_range, crop_border=crop_border, channels=channels)
    mse = np.mean((ref - tst) ** 2, dtype=np.float64)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(reference: np.ndarray, test: np.ndarray, *, data_range: float | None = None, crop_border: int = 0,
         channels: Channels = "rgb") -> float:
    """Mean SSIM (MATLAB/BasicSR convention), averaged over channels."""
    ref, tst = _prepare(reference, test, data_range=data_range, crop_border=crop_border, channels=channels)
    return float(np.mean([_ssim_channel(ref[..., c], tst[..., c]) for c in range(ref.shape[2])]))


def _ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    c1, c2 = (SSIM_K1 * 255.0) ** 2, (SSIM_K2 * 255.0) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, SSIM_SIGMA, truncate=SSIM_RADIUS / SSIM_SIGMA, mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    r = SSIM_RADIUS
    return float(ssim_map[r:-r, r:-r].mean(dtype=np.float64))


def aim_score(mean_psnr: float, mean_ssim: float) -> float:
    """AIM 2020 Real Image SR challenge score: ``PSNR / 50 + (SSIM - 0.4) / 0.6`` from a set's mean PSNR and SSIM."""
    return mean_psnr / 50.0 + (mean_ssim - 0.4) / 0.6
