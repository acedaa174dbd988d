"""PSNR and SSIM in the MATLAB/BasicSR convention, and the AIM 2020 challenge score.

Protocol
--------
Images are ``H x W x C`` arrays (RGB when C = 3), compared on a 0-255 scale: values are multiplied by
``255 / data_range`` (``data_range`` defaults to 255 for uint8 and must be given for anything else).
``crop_border`` pixels are removed on every side first. ``channels="rgb"`` averages SSIM over R, G, B and takes
PSNR of the MSE over all three (the AIM 2020 protocol); ``channels="y"`` uses ITU-R BT.601 luma with offset 16,
``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` on 0-255 RGB, in float64 and not rounded (BasicSR's
``to_y_channel``). PSNR is ``10 log10(255^2 / MSE)`` with the MSE accumulated in float64. SSIM uses an 11x11
Gaussian window (sigma 1.5, the weights of ``scipy.ndimage.gaussian_filter(truncate=3.5)``), K1 = 0.01,
K2 = 0.03, population statistics, and averages the SSIM map over the valid region only (5 pixels in from every
side of the cropped image, no padding), per channel, then over channels. This equals scikit-image's
``structural_similarity(ref, test, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255, channel_axis=2)`` to within 1e-10 (``tests/test_metrics.py``, ``benchmarks/bench_metrics.py``).

Implementation
--------------
The images are processed in horizontal strips of :data:`STRIP_ROWS` output rows (plus the 10-row window halo),
so memory stays at a few hundred MB at most whatever the image size, one thread per core. Each strip is
filtered separably with OpenCV (``sepFilter2D``) accumulating in float64; 8-bit RGB strips are filtered as they
are, with their products formed exactly in uint16 and float32, anything else is converted to float64 first.
Float64 is required for exactness: the variance ``E[x^2] - E[x]^2`` cancels catastrophically (``E[x^2]``
reaches 65025 while ``C2`` is 58.5), and float32 moment filters, even on data shifted by the image mean, drift
from the reference by 2e-7 to 6e-6 on the real pairs.
Only four maps are filtered per channel: ``mu_x``, ``mu_y``, ``E[x^2 + y^2]`` (the two variances only ever
appear summed) and ``E[xy]``. With ``backend="torch"`` (chosen automatically when torch is imported and sees
CUDA) the same float64 computation runs as ``conv2d`` on the GPU.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

Channels = Literal["rgb", "y"]
Backend = Literal["auto", "numpy", "torch"]
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11x11 window: int(3.5 * 1.5 + 0.5), as scipy/scikit-image
SSIM_K1, SSIM_K2 = 0.01, 0.03
STRIP_ROWS = 128  # output rows per strip: 20 MB per float64 map of a 6000-pixel-wide RGB strip
Y_FORMULA = "BT.601: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on 0-255 RGB, float64, not rounded"


@dataclass(frozen=True)
class Protocol:
    """Everything that changes a PSNR/SSIM number, stored beside every reported figure.

    ``data_range`` is the scale the comparison is made on (255: values of 8-bit images), not the range of the
    input arrays, which the metric functions take separately.
    """

    channels: Channels = "rgb"
    crop_border: int = 0
    data_range: float = 255.0

    def to_dict(self) -> dict:
        return {
            "channels": self.channels,
            "crop_border": self.crop_border,
            "data_range": self.data_range,
            "y_formula": Y_FORMULA if self.channels == "y" else None,
            "psnr": "10 log10(255^2 / MSE), MSE in float64 over all pixels and channels",
            "ssim": "11x11 Gaussian sigma 1.5, K1 0.01, K2 0.03, population statistics, valid region, mean over "
                    "channels (= skimage structural_similarity gaussian_weights=True, use_sample_covariance=False)",
        }


@dataclass(frozen=True)
class Measurement:
    """PSNR (dB) and SSIM of one image pair under one protocol."""

    psnr: float
    ssim: float


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (studio swing, 16-235) of ``... x 3`` RGB on a 0-255 scale; float64, not rounded."""
    weights = np.array([65.481, 128.553, 24.966]) / 255.0
    return rgb[..., :3] @ weights + 16.0


def psnr(reference: np.ndarray, test: np.ndarray, *, data_range: float | None = None, crop_border: int = 0,
         channels: Channels = "rgb") -> float:
    """PSNR in dB from the float64 MSE over all pixels and channels; ``inf`` for identical images.

    Parameters
    ----------
    reference, test : ``H x W x C`` (or ``H x W``) arrays of the same shape; uint8, uint16 or float.
    data_range : the value of white in the inputs; default 255 for uint8, required otherwise.
    crop_border : pixels removed on every side before measuring.
    channels : ``"rgb"`` (all channels) or ``"y"`` (BT.601 luma, see the module docstring).
    """
    view = _View(reference, test, data_range=data_range, crop_border=crop_border, channels=channels)
    rows = 4 * STRIP_ROWS
    total = math.fsum(_squared_error(*view.strip(start, start + rows)) for start in range(0, view.height, rows))
    return _psnr_from_mse(total / view.values)


def ssim(reference: np.ndarray, test: np.ndarray, *, data_range: float | None = None, crop_border: int = 0,
         channels: Channels = "rgb", backend: Backend = "auto") -> float:
    """Mean SSIM (MATLAB/BasicSR convention) over the valid region, averaged over channels.

    Parameters are those of :func:`psnr`; ``backend`` picks ``"numpy"`` (OpenCV float64 strips), ``"torch"``
    (float64 ``conv2d`` on CUDA when available, else CPU) or ``"auto"`` (torch when the process has imported torch
    and CUDA is available).
    """
    return measure(reference, test, data_range=data_range, crop_border=crop_border, channels=channels,
                   backend=backend, with_psnr=False).ssim


def measure(reference: np.ndarray, test: np.ndarray, *, data_range: float | None = None, crop_border: int = 0,
            channels: Channels = "rgb", backend: Backend = "auto", with_psnr: bool = True,
            workers: int | None = None) -> Measurement:
    """PSNR and SSIM of one pair in a single pass over the strips (same definitions as :func:`psnr`, :func:`ssim`).

    ``with_psnr=False`` skips the PSNR (reported as ``nan``). ``workers`` threads (default: the CPU count, at
    most 4) process strips in parallel on the numpy backend; the result does not depend on it.
    """
    view = _View(reference, test, data_range=data_range, crop_border=crop_border, channels=channels)
    r = SSIM_RADIUS
    if min(view.height, view.width) < 2 * r + 1:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping {crop_border} from every side; the "
                         f"images are {view.width}x{view.height}")
    filters = _TorchFilters() if _use_torch(backend) else None
    last_row = view.height - 2 * r

    def strip(start: int) -> tuple[float, np.ndarray]:
        ref, tst = view.strip(start, start + STRIP_ROWS + 2 * r)
        squared = 0.0
        if with_psnr:
            # Each strip owns its first STRIP_ROWS rows; the last one also owns the halo rows below it.
            squared = _squared_error(*(a[:None if start + STRIP_ROWS >= last_row else STRIP_ROWS]
                                       for a in (ref, tst)))
        return squared, filters.ssim_sums(ref, tst) if filters else _ssim_sums(ref, tst)

    starts = range(0, last_row, STRIP_ROWS)
    threads = 1 if filters else min(workers or os.cpu_count() or 1, 4, len(starts))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(strip, starts))
    else:
        results = [strip(start) for start in starts]
    squared = math.fsum(result[0] for result in results)
    ssim_sums = np.sum([result[1] for result in results], axis=0)
    valid = (view.height - 2 * r) * (view.width - 2 * r)
    mean_ssim = float(np.mean(ssim_sums / valid))
    return Measurement(_psnr_from_mse(squared / view.values) if with_psnr else float("nan"), mean_ssim)


def aim_score(mean_psnr: float, mean_ssim: float) -> float:
    """AIM 2020 Real Image SR challenge score: ``PSNR / 50 + (SSIM - 0.4) / 0.6`` from a set's mean PSNR and SSIM."""
    return mean_psnr / 50.0 + (mean_ssim - 0.4) / 0.6


def gaussian_window() -> np.ndarray:
    """The 11 float64 weights of the SSIM window, computed as ``scipy.ndimage.gaussian_filter`` does."""
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    weights = np.exp(-0.5 / (SSIM_SIGMA * SSIM_SIGMA) * x * x)
    return weights / weights.sum()


class _View:
    """The cropped, rescaled (and for ``channels="y"`` converted) pair, handed out as strips on the 0-255 scale."""

    def __init__(self, reference: np.ndarray, test: np.ndarray, *, data_range: float | None, crop_border: int,
                 channels: Channels) -> None:
        reference, test = np.asarray(reference), np.asarray(test)
        if reference.shape != test.shape:
            raise ValueError(f"images differ in shape: reference {reference.shape}, test {test.shape}")
        if reference.ndim not in (2, 3):
            raise ValueError(f"expected H x W or H x W x C images, got shape {reference.shape}")
        if channels not in ("rgb", "y"):
            raise ValueError(f"channels must be 'rgb' or 'y', got {channels!r}")
        if channels == "y" and (reference.ndim != 3 or reference.shape[2] != 3):
            raise ValueError(f"channels='y' needs H x W x 3 RGB images, got shape {reference.shape}")
        if data_range is None:
            if reference.dtype != np.uint8 or test.dtype != np.uint8:
                raise ValueError(f"pass data_range for {reference.dtype}/{test.dtype} images (1.0 for float images "
                                 "in [0, 1], 65535 for uint16); only uint8 defaults to 255")
            data_range = 255.0
        if not data_range > 0:
            raise ValueError(f"data_range must be positive, got {data_range}")
        if crop_border < 0 or 2 * crop_border >= min(reference.shape[:2]):
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {reference.shape[1]}x"
                             f"{reference.shape[0]} image")
        if crop_border:
            reference = reference[crop_border:-crop_border, crop_border:-crop_border]
            test = test[crop_border:-crop_border, crop_border:-crop_border]
        self.reference, self.test = reference, test
        self.factor = 255.0 / float(data_range)
        self.channels = channels
        self.height, self.width = reference.shape[:2]
        self.depth = 1 if channels == "y" or reference.ndim == 2 else reference.shape[2]
        self.values = self.height * self.width * self.depth

    def strip(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start:stop`` (clipped to the image) of both images as ``h x W x C`` on the 0-255 scale: float64,
        or uint8 as they are when they are RGB uint8 already on that scale."""
        return self._convert(self.reference[start:stop]), self._convert(self.test[start:stop])

    def _convert(self, block: np.ndarray) -> np.ndarray:
        if block.dtype == np.uint8 and self.factor == 1.0 and self.channels == "rgb":
            return np.ascontiguousarray(block if block.ndim == 3 else block[..., None])
        values = block.astype(np.float64)
        if self.factor != 1.0:
            values *= self.factor
        if self.channels == "y":
            values = rgb_to_y(values)
        return values if values.ndim == 3 else values[..., None]


def _psnr_from_mse(mse: float) -> float:
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _ssim_map_sums(mu_x, mu_y, sum_sq, cross):
    """Sum over rows of the SSIM map from the four filtered ``h x (w C)`` maps (numpy or torch; consumed).

    ``sum_sq`` must already hold ``E[x^2 + y^2] + C1 + C2`` and ``cross`` ``E[xy] + C2 / 2`` (the constants are
    added by the filter). SSIM = A1 A2 / (B1 B2) with A1 = 2 (mu_x mu_y + C1 / 2), A2 = 2 (cov + C2 / 2),
    B1 = mu_x^2 + mu_y^2 + C1 and B2 = E[x^2 + y^2] - mu_x^2 - mu_y^2 + C2; the factor 4 is applied to the sum
    (exact in floating point).
    """
    c1 = (SSIM_K1 * 255.0) ** 2
    mu_xy = mu_x * mu_y
    cross -= mu_xy  # cov + C2 / 2
    mu_xy += c1 / 2
    mu_xy *= cross  # A1 A2 / 4
    mu_x *= mu_x
    mu_y *= mu_y
    mu_x += mu_y
    mu_x += c1  # B1
    sum_sq -= mu_x  # B2
    mu_x *= sum_sq
    mu_xy /= mu_x
    return 4.0 * mu_xy.sum(0)


def _ssim_sums(ref: np.ndarray, tst: np.ndarray) -> np.ndarray:
    """Per-channel sums of the SSIM map of one ``h x W x C`` strip pair (valid region only; float64 strips are
    consumed). uint8 strips (the 0-255 scale itself) are filtered directly, their products formed exactly in
    uint16 and float32; OpenCV accumulates every filter in float64."""
    import cv2

    kernel = _cv2_kernel()
    r = SSIM_RADIUS
    height, width, depth = ref.shape
    c1, c2 = (SSIM_K1 * 255.0) ** 2, (SSIM_K2 * 255.0) ** 2

    def blur(a: np.ndarray, delta: float = 0.0) -> np.ndarray:
        # Only the valid region is kept, so the border mode never matters. Rows of the 2-D view stay contiguous,
        # which numpy needs to run the element-wise steps at full speed.
        out = cv2.sepFilter2D(a, cv2.CV_64F, kernel, kernel, delta=delta, borderType=cv2.BORDER_REFLECT)
        return out.reshape(height, width * depth)[r:-r, r * depth:-r * depth]

    mu_x, mu_y = blur(ref), blur(tst)
    if ref.dtype == np.uint8:
        ref, tst = ref.astype(np.uint16), tst.astype(np.uint16)
        cross = blur(ref * tst, c2 / 2)  # at most 65025: exact in uint16
        sum_sq = np.multiply(ref, ref, dtype=np.float32)  # at most 130050: exact in float32
        sum_sq += np.multiply(tst, tst, dtype=np.float32)
    else:
        cross = blur(ref * tst, c2 / 2)
        ref *= ref
        tst *= tst
        ref += tst
        sum_sq = ref
    sum_sq = blur(sum_sq, c1 + c2)
    return _ssim_map_sums(mu_x, mu_y, sum_sq, cross).reshape(-1, depth).sum(0)


def _squared_error(ref: np.ndarray, tst: np.ndarray) -> float:
    """Sum of squared differences (exact for uint8 strips, float64 accumulation otherwise)."""
    import cv2

    return float(cv2.norm(ref.reshape(ref.shape[0], -1), tst.reshape(tst.shape[0], -1), cv2.NORM_L2SQR))


@functools.lru_cache(maxsize=1)
def _cv2_kernel() -> np.ndarray:
    return gaussian_window()


def _cuda_in_use() -> bool:
    """Whether torch is already imported and sees CUDA. Importing torch only to ask costs seconds (more than the
    metric on a 24-MP pair), so a process that has not imported it (align, wash) keeps the numpy backend."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.cuda.is_available())


def _use_torch(backend: Backend) -> bool:
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
    return backend == "torch" or backend == "auto" and _cuda_in_use()


class _TorchFilters:
    """The same float64 strip computation as ``conv2d`` (CUDA when available, else CPU)."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        window = torch.from_numpy(gaussian_window()).to(self.device)
        self.row = window.view(1, 1, 1, -1)
        self.column = window.view(1, 1, -1, 1)

    def ssim_sums(self, ref: np.ndarray, tst: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(ref).to(self.device, torch.float64).permute(2, 0, 1)  # C x h x W
        y = torch.from_numpy(tst).to(self.device, torch.float64).permute(2, 0, 1)
        depth = x.shape[0]
        stack = torch.cat([x, y, x * x + y * y, x * y]).unsqueeze(1)  # 4C x 1 x h x W
        blurred = torch.nn.functional.conv2d(torch.nn.functional.conv2d(stack, self.row), self.column)
        mu_x, mu_y, sum_sq, cross = (m.transpose(0, 1) for m in blurred.squeeze(1).split(depth))  # h' x C x W'
        c1, c2 = (SSIM_K1 * 255.0) ** 2, (SSIM_K2 * 255.0) ** 2
        sum_sq += c1 + c2
        cross += c2 / 2
        return _ssim_map_sums(mu_x, mu_y, sum_sq, cross).sum(-1).cpu().numpy()
