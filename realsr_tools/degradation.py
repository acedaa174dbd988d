"""The real degradation HR -> LR of a dataset, estimated from its own pairs: one blur kernel and colour relation.

Convention
----------
Images are ``H x W x 3`` RGB float32 in [0, 1]; the LR grid is the HR grid divided by the integer ``scale`` with the
pixel-area convention (LR pixel ``(x, y)`` covers HR pixels ``scale x .. scale x + scale - 1``). A kernel is a
``K x K`` array of taps with ``K = support x scale`` HR pixels, centred on an LR pixel's footprint, summing to 1:

``predicted_lr[y, x, c] = sum_ij kernel[i, j] * hr[scale y - pad + i, scale x - pad + j, c]``,
``pad = (K - scale) // 2``, with mirrored (reflect-101) HR borders.

Model of a real pair: ``lr_c ~ gain * (colour_gain_c * predicted_lr_c + colour_offset_c) + offset``: one kernel and one
colour relation (per-channel gain and offset relative to green) for a camera and scale, and one exposure gain/offset
per pair. Both the kernel and the colour relation are fitted per pair by least squares and aggregated over many pairs
with an element-wise median, so a minority of misaligned, swapped or colour-cast pairs does not bend them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_SUPPORT = 3  # kernel side in LR pixels (3 x scale HR pixels)
DEFAULT_SAMPLES = 4096  # LR pixels per pair used in the least-squares fit
RIDGE = 1e-4
SATURATION = (0.5 / 255, 254.5 / 255)  # LR values outside are treated as clipped


@dataclass(frozen=True)
class PairFit:
    """The degradation of one pair: ``kernel`` (K x K, sums to 1) and ``colour`` (3 x 2: gain, offset per channel,
    relative to green)."""

    kernel: np.ndarray
    colour: np.ndarray


@dataclass(frozen=True)
class Degradation:
    """A dataset's degradation for one camera and scale: the median of ``pairs`` per-pair fits."""

    scale: int
    kernel: np.ndarray
    colour: np.ndarray
    pairs: int

    @property
    def pad(self) -> int:
        return (self.kernel.shape[0] - self.scale) // 2

    def to_dict(self) -> dict:
        return {"scale": self.scale, "pairs": self.pairs, "kernel": np.round(self.kernel, 6).tolist(),
                "colour_gain": np.round(self.colour[:, 0], 5).tolist(),
                "colour_offset": np.round(self.colour[:, 1], 5).tolist()}


def _windows(channel: np.ndarray, scale: int, size: int) -> np.ndarray:
    """View ``(h, w, size, size)`` of the HR windows of every LR pixel (no copy)."""
    pad = (size - scale) // 2
    padded = np.pad(channel, ((pad, size - scale - pad), (pad, size - scale - pad)), mode="reflect")
    return np.lib.stride_tricks.sliding_window_view(padded, (size, size))[::scale, ::scale]


def predict(hr: np.ndarray, kernel: np.ndarray, scale: int, *, strip: int = 128) -> np.ndarray:
    """Blur ``hr`` with ``kernel`` at the LR grid points only (see the module convention); float32 ``h x w x 3``.

    Works on strips of ``strip`` LR rows, so memory stays bounded on full frames.
    """
    size = kernel.shape[0]
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    taps = kernel.astype(np.float32).reshape(-1)
    out = np.empty((h, w, hr.shape[2]), np.float32)
    for c in range(hr.shape[2]):
        windows = _windows(np.asarray(hr[..., c], np.float32), scale, size)
        for top in range(0, h, strip):
            block = windows[top : top + strip, :w]
            out[top : top + strip, :, c] = (block.reshape(-1, size * size) @ taps).reshape(block.shape[:2])
    return out


def fit_channels(lr: np.ndarray, predicted: np.ndarray, usable: np.ndarray | None = None) -> np.ndarray:
    """Per-channel least-squares ``lr_c ~ a_c predicted_c + b_c``; returns 3 x 2 ``[[a_c, b_c]]`` (float64).

    ``usable``: flat indices of the pixels to fit on (default all).
    """
    out = np.empty((3, 2))
    for c in range(3):
        p = predicted[..., c].ravel().astype(np.float64)
        q = lr[..., c].ravel().astype(np.float64)
        if usable is not None:
            p, q = p[usable], q[usable]
        design = np.stack([p, np.ones_like(p)], axis=1)
        out[c] = np.linalg.lstsq(design, q, rcond=None)[0]
    return out


def fit_pair(lr: np.ndarray, hr: np.ndarray, *, scale: int, support: int = DEFAULT_SUPPORT,
             samples: int = DEFAULT_SAMPLES, seed: int = 0, rounds: int = 4) -> PairFit:
    """Least-squares kernel (shared by the channels) and colour relation of one pair.

    The model ``lr_c = g_c (kernel * hr_c) + b_c`` is bilinear; it is solved by alternation: the kernel with one
    offset per channel and the current channel gains ``g_c`` (start: 1), then the gains and offsets per channel
    (:func:`fit_channels`), ``rounds`` times. A small ridge term (``RIDGE`` of the mean diagonal) keeps the taps
    that flat content cannot determine near zero. ``samples`` LR pixels drawn at random (fixed ``seed``) keep the
    fit cheap on large frames; clipped LR pixels (``SATURATION``) are left out.
    """
    size = support * scale
    h, w = lr.shape[:2]
    # Clipped (saturated or black) LR pixels do not follow the linear model: leave them out of the fit.
    usable = np.flatnonzero(((lr > SATURATION[0]) & (lr < SATURATION[1])).all(axis=2).ravel())
    if len(usable) < size * size * 2:
        usable = np.arange(h * w)
    count = min(samples, len(usable))
    rng = np.random.default_rng(seed)
    rows, cols = np.divmod(rng.choice(usable, count, replace=False), w)
    taps = size * size
    windows = [_windows(hr[..., c], scale, size)[rows, cols].reshape(count, -1).astype(np.float64) for c in range(3)]
    targets = [lr[rows, cols, c].astype(np.float64) for c in range(3)]
    # Blocks of the normal equations, computed once: the channel gains only rescale them.
    gram = [x.T @ x for x in windows]
    sums = [x.sum(axis=0) for x in windows]
    moments = [x.T @ t for x, t in zip(windows, targets)]
    gains = np.ones(3)
    for _ in range(rounds):
        normal = np.zeros((taps + 3, taps + 3))
        right = np.zeros(taps + 3)
        for c in range(3):
            normal[:taps, :taps] += gains[c] ** 2 * gram[c]
            normal[:taps, taps + c] = normal[taps + c, :taps] = gains[c] * sums[c]
            normal[taps + c, taps + c] = count
            right[:taps] += gains[c] * moments[c]
            right[taps + c] = targets[c].sum()
        normal[np.diag_indices_from(normal)] += RIDGE * np.trace(normal) / len(normal)
        solution = np.linalg.solve(normal, right)
        kernel = solution[:taps].reshape(size, size)
        total = kernel.sum()
        kernel = kernel / total if abs(total) > 1e-6 else np.full((size, size), 1.0 / taps)
        colour = fit_channels(lr, predict(hr, kernel, scale), usable)
        gains = colour[:, 0]
    return PairFit(kernel=kernel, colour=relative_colour(colour))


def relative_colour(channels: np.ndarray) -> np.ndarray:
    """Per-channel (gain, offset) divided by the green gain: the colour relation without the exposure."""
    green = channels[1, 0] if abs(channels[1, 0]) > 1e-6 else 1.0
    return channels / green


def aggregate(fits: Sequence[PairFit], *, scale: int) -> Degradation:
    """Element-wise median of per-pair kernels and colour relations (kernel renormalised to sum 1)."""
    if not fits:
        raise ValueError("no pair fits to aggregate")
    kernel = np.median(np.stack([f.kernel for f in fits]), axis=0)
    kernel = kernel / kernel.sum()
    colour = np.median(np.stack([f.colour for f in fits]), axis=0)
    return Degradation(scale=scale, kernel=kernel, colour=colour, pairs=len(fits))


def apply(hr: np.ndarray, degradation: Degradation) -> np.ndarray:
    """The LR a pair's HR predicts before its exposure: kernel, LR sampling, then the colour relation."""
    predicted = predict(hr, degradation.kernel, degradation.scale)
    return predicted * degradation.colour[:, 0].astype(np.float32) + degradation.colour[:, 1].astype(np.float32)


LOWPASS_SIGMA = 3.0  # LR px: the wash PSNR judges content and colour; misalignment is the verifier's (docs/crop_wash.md)
TEXTURE_STD = 0.035
TEXTURE_WINDOW = 7
MIN_TEXTURED = 0.05
TONE_DEGREE = 3
CROP_BORDER = 4


@dataclass(frozen=True)
class PairScore:
    """How well one pair's HR predicts its LR (see the module docstring for the definitions)."""

    psnr: float
    ssim: float
    shift: float | None  # median residual shift over textured tiles, LR px; None when no tile is textured
    shift_worst: float | None
    textured: float  # fraction of the compared pixels that are textured
    flat: bool
    exposure: tuple[float, ...]  # tone-curve coefficients, constant term first


def _local_std(grey: np.ndarray) -> np.ndarray:
    import cv2

    size = (TEXTURE_WINDOW, TEXTURE_WINDOW)
    mean = cv2.blur(grey, size, borderType=cv2.BORDER_REFLECT_101)
    square = cv2.blur(grey * grey, size, borderType=cv2.BORDER_REFLECT_101)
    return np.sqrt(np.maximum(square - mean * mean, 0.0))


def fit_exposure(lr: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares tone curve ``lr ~ sum_k c_k predicted^k`` (k = 0..``TONE_DEGREE``), one for all channels.

    Shared by the channels, so it absorbs exposure and tone-curve differences between the captures but not a
    colour cast. Returns the fitted prediction (clipped to [0, 1]) and the coefficients (constant term first).
    """
    values = predicted.reshape(-1).astype(np.float64)
    design = np.stack([values**k for k in range(TONE_DEGREE + 1)], axis=1)
    curve = np.linalg.lstsq(design, lr.reshape(-1).astype(np.float64), rcond=None)[0]
    fitted = np.polynomial.polynomial.polyval(predicted.astype(np.float64), curve)
    return np.clip(fitted, 0.0, 1.0).astype(np.float32), curve


def score_pair(lr: np.ndarray, hr: np.ndarray, degradation: Degradation) -> PairScore:
    """Wash PSNR, SSIM and residual shift of one pair (float32 RGB in [0, 1]; HR exactly ``scale`` x LR)."""
    import cv2

    from .metrics import ssim
    from .quality import residual_shift

    lr = np.asarray(lr, np.float32)
    predicted = apply(hr, degradation)
    fitted, curve = fit_exposure(lr, predicted)

    a = cv2.GaussianBlur(lr, (0, 0), LOWPASS_SIGMA, borderType=cv2.BORDER_REFLECT_101)
    b = cv2.GaussianBlur(fitted, (0, 0), LOWPASS_SIGMA, borderType=cv2.BORDER_REFLECT_101)
    inner = (slice(CROP_BORDER, -CROP_BORDER or None), slice(CROP_BORDER, -CROP_BORDER or None))
    textured = np.maximum(_local_std(a.mean(axis=2)), _local_std(b.mean(axis=2)))[inner] >= TEXTURE_STD
    fraction = float(textured.mean())
    flat = fraction < MIN_TEXTURED
    error = (a[inner] - b[inner]).astype(np.float64) ** 2
    mse = float(error.mean() if flat else error[textured].mean())
    value = float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
    similarity = ssim(lr, fitted, data_range=1.0, crop_border=CROP_BORDER)
    shift = residual_shift(lr, fitted)
    return PairScore(psnr=value, ssim=similarity, shift=shift.median, shift_worst=shift.worst, textured=fraction,
                     flat=flat, exposure=tuple(float(c) for c in curve))


def verdict(score: PairScore, *, min_psnr: float, min_ssim: float | None = None,
            max_shift: float | None = None) -> list[str]:
    """Reasons to drop a pair (empty list: keep it)."""
    reasons = []
    if not score.psnr >= min_psnr:
        reasons.append(f"psnr<{min_psnr:g}")
    if min_ssim is not None and not score.ssim >= min_ssim:
        reasons.append(f"ssim<{min_ssim:g}")
    if max_shift is not None and score.shift is not None and score.shift > max_shift:
        reasons.append(f"shift>{max_shift:g}")
    return reasons
