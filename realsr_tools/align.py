"""Sub-pixel registration of multi-focal captures and the ``align`` stage.

Convention
----------
Points are (x, y): x to the right, y down, pixel centres at integer coordinates, (0, 0) the centre of the top-left
pixel, coordinates of the images as decoded (EXIF orientation applied). ``lr_to_hr`` (a 3x3 homography) maps LR
source pixels to HR source pixels. ``lr_window`` is ``[x0, y0, width, height]`` in LR source pixels. Images inside
the algorithms are float32; grey images are BT.601 luma in [0, 1].

Pipeline per pair (:func:`register`):

1. *Prior*: the HR field sits at the LR centre, magnified by the focal ratio.
2. *Coarse*, two independent estimates checked against each other:
   a. a pyramid search: the HR image, area-downscaled to the LR's scale, is matched over the whole LR image by
      normalised cross-correlation (``cv2.matchTemplate``) for a grid of magnifications (+-12 % around the focal
      ratio) and rolls (+-4 deg); the whole HR field is one template, so repetitive patterns (colour charts,
      windows) and weak texture do not mislead it;
   b. SIFT features on the pre-zoomed images with a ratio test and RANSAC homography.
   When both succeed and disagree, both are refined and the one with the better final fit wins.
3. *Refinement*: forward-compositional Gauss-Newton on an image pyramid (coarse to fine, up to full LR
   resolution) of a full 8-parameter homography together with a photometric model re-estimated in every step
   (a quadratic gain surface and an offset on the luma: exposure, white balance as seen in luma, vignetting; and
   a Laplacian term for the captures' blur difference), with Huber weights (scale from the MAD) so that moving
   objects do not pull the fit, and saturated pixels (and those their smoothing reaches) excluded. The LR is the
   fixed template (never resampled); the HR is area-downscaled to the LR's scale at each level and warped.
4. *Checks* (:class:`RegistrationError` with the reason): no coarse estimate, magnification more than
   :data:`MAX_ZOOM_ERROR` from the focal ratio, too little overlap, low correlation after refinement, residual
   tile misalignment too large. A radial pattern of residual tile shifts (lens distortion that a homography cannot
   absorb) is measured and reported by :func:`distortion_check`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .io import DEFAULT_RAW, RawRendering

MAX_ZOOM_ERROR = 0.10  # |true magnification / focal ratio - 1| above which a pair is refused
MIN_TEMPLATE_SCORE = 0.45  # NCC of the pyramid search below which it has no reliable match
MIN_INLIERS = 15
MIN_CORRELATION = 0.75  # luma correlation after refinement (photometric model applied)
MIN_OVERLAP = 0.5  # output window area / area the HR field should cover in the LR
# Median residual tile shift (LR px) above which a pair is refused. The worst tile is recorded but not gated: one
# tile (a moving object, a repeated pattern, a flat tile) can put its phase-correlation peak pixels away on a
# pair registered to 0.16 px (measured on the simulated hard set), while the simulated pairs registered more than
# 1 px off (1.7 and 1.9 px) had medians of 1.26 and 0.79.
MAX_RESIDUAL_MEDIAN = 0.5
DISTORTION_EVIDENCE = 20.0  # likelihood-ratio statistic above which the distortion terms are kept
DISTORTION_PRIOR = 0.05  # standard deviation of the prior on each distortion coefficient (k, lens units)
MAX_DISTORTION = 0.1  # |k| above which a fitted distortion term is not a lens
MIN_DISTORTION_EFFECT = 0.03  # LR px of non-homography displacement below which distortion is not modelled
MAX_UNCERTAINTY = 0.15  # LR px: corner standard deviation above which the overlap has too little texture
COARSE_WIDTH = 320  # LR width of the pyramid search
COARSE_AGREEMENT = 2.0  # px at the coarse search's scale: both coarse estimates agree within this
FINE_PIXELS = 400_000  # pixels used per Gauss-Newton step at most (highest-gradient ones)
FINEST_PIXELS = 2_000_000  # template pixels of the finest refinement level at most
LANCZOS_RADIUS = 4  # HR pixels of support of the output kernel
HUBER = 1.345  # Huber threshold in robust standard deviations (MAD)
# Gaussian sigma (level px) applied to both images at every level against aliasing. With the blur difference
# modelled (the Laplacian term in refine), light smoothing keeps more of the fine texture that fixes the geometry:
# measured on the simulated sets, median error 0.030 (sigma 2) -> 0.019 (sigma 1) LR px on the normal set and
# 0.063 -> 0.039 on the hard set; sigma 0.5-1.5 are within noise of each other, 3 is worse.
SMOOTHING = 1.0
# Saturated pixels (raw values above CLIP_HIGH) have no known true value, and the edge of a plateau that only one
# capture clips pulls the fit (measured: 0.15 LR px on a simulated pair whose HR is 17 % saturated). After
# smoothing, a pixel is left out when saturated pixels make up more than CLIP_WEIGHT of its smoothing kernel's
# weight. Much smaller weights also remove the textured rim of every highlight, which can carry most of the
# geometry along one axis (measured: 1e-3 moved a headlight pair by 0.3 px); much larger ones let the plateau's
# edge back in. Dark pixels (below CLIP_LOW after smoothing) are left out one by one: dark noise clipped at zero
# biases a value slightly but moves no edge, and dark scenes (a star field) have their geometry next to them.
CLIP_LOW, CLIP_HIGH = 0.005, 0.99
CLIP_WEIGHT = 0.3
BORDER = 9  # px of the HR frame's edge left out (smoothing and gradient stencils must not see the border)
QUALITY_SIZE = 1024  # SSIM and residual shift are measured on the central QUALITY_SIZE^2 LR pixels at most


class RegistrationError(Exception):
    """A pair that cannot be registered; the message is the reason written to the manifest."""


@dataclass(frozen=True)
class DistortionCheck:
    """Residual shifts of a grid of regions fitted by a radial model ``s(d) = alpha d / R + kappa d |d|^2 / R^3``.

    ``kappa`` is the radial residual (LR px) at radius ``R`` (the window's half diagonal); ``explained`` the share of
    the regional shift energy the model explains; ``detected`` when both are large enough to matter.
    """

    regions: int
    kappa: float | None
    explained: float | None
    detected: bool

    def to_dict(self) -> dict:
        return {"regions": self.regions, "radial_px_at_corner": _round(self.kappa), "explained": _round(self.explained),
                "detected": self.detected}


@dataclass(frozen=True)
class Registration:
    """Result of :func:`register`."""

    lr_to_hr: np.ndarray
    zoom: float  # magnification at the centre of the HR field (HR px per LR px)
    coarse: str  # which coarse estimate seeded the refinement: "search", "features"
    coarse_agreement: float | None  # LR px between the two coarse estimates (None: one of them failed)
    search_score: float | None
    feature_inliers: int
    correlation: float  # luma correlation over the overlap after refinement
    iterations: int
    uncertainty: float  # LR px: standard deviation of the overlap's corners from the Gauss-Newton covariance
    distortion: RadialDistortion | None = None  # LR radial distortion relative to the HR (None: not modelled)

    def map(self, points: np.ndarray) -> np.ndarray:
        """The complete LR -> HR mapping of ``N x 2`` LR points."""
        return map_lr_to_hr(self.lr_to_hr, self.distortion, points)

    def to_dict(self) -> dict:
        return {"zoom": _round(self.zoom), "coarse": self.coarse, "coarse_agreement": _round(self.coarse_agreement),
                "search_score": _round(self.search_score), "feature_inliers": self.feature_inliers,
                "correlation": _round(self.correlation), "iterations": self.iterations,
                "uncertainty": _round(self.uncertainty)}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


# ----------------------------------------------------------------------------------------------------------------
# geometry helpers


def apply_homography(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``N x 2`` points (x, y) through a 3x3 homography."""
    points = np.asarray(points, dtype=np.float64)
    p = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ np.asarray(matrix, np.float64).T
    return p[:, :2] / p[:, 2:3]


def _scaling(factor_x: float, factor_y: float | None = None) -> np.ndarray:
    """Pixel coordinates of an image downscaled by ``factor`` -> coordinates of the original (centre-aligned)."""
    fy = factor_x if factor_y is None else factor_y
    return np.array([[factor_x, 0, 0.5 * factor_x - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]])


def prior_homography(lr_shape: tuple[int, int], hr_shape: tuple[int, int], ratio: float) -> np.ndarray:
    """Centre-to-centre magnification by the focal ratio: the starting point before any image evidence."""
    (lh, lw), (hh, hw) = lr_shape[:2], hr_shape[:2]
    return _translation((hw - 1) / 2, (hh - 1) / 2) @ np.diag([ratio, ratio, 1.0]) @ _translation(
        -(lw - 1) / 2, -(lh - 1) / 2)


def local_zoom(lr_to_hr: np.ndarray, point: tuple[float, float]) -> float:
    """Magnification (square root of the Jacobian determinant) of the homography at an LR point."""
    h = np.asarray(lr_to_hr, np.float64)
    x, y = point
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    px, py = apply_homography(h, np.array([[x, y]]))[0]
    jac = np.array([[h[0, 0] - px * h[2, 0], h[0, 1] - px * h[2, 1]],
                    [h[1, 0] - py * h[2, 0], h[1, 1] - py * h[2, 1]]]) / w
    return float(np.sqrt(abs(np.linalg.det(jac))))


def hr_field_in_lr(lr_to_hr: np.ndarray, hr_shape: tuple[int, int]) -> np.ndarray:
    """Corners (TL, TR, BR, BL) of the HR frame in LR coordinates."""
    hh, hw = hr_shape[:2]
    corners = np.array([[0, 0], [hw - 1, 0], [hw - 1, hh - 1], [0, hh - 1]], np.float64)
    return apply_homography(np.linalg.inv(lr_to_hr), corners)


def output_window(lr_to_hr: np.ndarray, lr_shape: tuple[int, int], hr_shape: tuple[int, int], *,
                  distortion: RadialDistortion | None = None) -> tuple[int, ...]:
    """Largest axis-aligned LR window ``(x0, y0, width, height)`` whose HR footprint, with the output kernel's
    support, lies inside the HR frame: the output needs no mask. Assumes a near-axis-aligned HR field (true for
    rolls of a few degrees); with ``distortion`` the window is shrunk until the complete mapping of its border
    stays inside too."""
    zoom = local_zoom(lr_to_hr, tuple(np.mean(hr_field_in_lr(lr_to_hr, hr_shape), axis=0)))
    margin = LANCZOS_RADIUS / max(zoom, 1e-6) + 1.0
    tl, tr, br, bl = hr_field_in_lr(lr_to_hr, hr_shape)
    lh, lw = lr_shape[:2]
    x0 = max(tl[0], bl[0]) + margin
    x1 = min(tr[0], br[0]) - margin
    y0 = max(tl[1], tr[1]) + margin
    y1 = min(bl[1], br[1]) - margin
    ix0, iy0 = max(0, int(np.ceil(x0))), max(0, int(np.ceil(y0)))
    ix1, iy1 = min(lw - 1, int(np.floor(x1))), min(lh - 1, int(np.floor(y1)))
    hh, hw = hr_shape[:2]
    limit = LANCZOS_RADIUS
    while distortion is not None and ix1 - ix0 > 2 and iy1 - iy0 > 2:
        xs, ys = np.linspace(ix0, ix1, 64), np.linspace(iy0, iy1, 64)
        border = np.concatenate([np.stack([xs, np.full(64, iy0)], 1), np.stack([xs, np.full(64, iy1)], 1),
                                 np.stack([np.full(64, ix0), ys], 1), np.stack([np.full(64, ix1), ys], 1)])
        mapped = map_lr_to_hr(lr_to_hr, distortion, border)
        if mapped.min() >= limit and np.all(mapped.max(axis=0) <= [hw - 1 - limit, hh - 1 - limit]):
            break
        ix0, iy0, ix1, iy1 = ix0 + 1, iy0 + 1, ix1 - 1, iy1 - 1
    return ix0, iy0, max(0, ix1 - ix0 + 1), max(0, iy1 - iy0 + 1)


def window_to_hr_output(lr_to_hr: np.ndarray, window: Sequence[int], scale: int) -> np.ndarray:
    """Homography from output-HR pixels (the LR window at ``scale`` x) to HR source pixels."""
    x0, y0 = window[0], window[1]
    out_to_lr = _translation(x0, y0) @ _scaling(1.0 / scale)
    return np.asarray(lr_to_hr, np.float64) @ out_to_lr


def warp_hr(hr: np.ndarray, lr_to_hr: np.ndarray, window: Sequence[int], scale: int, *,
            distortion: RadialDistortion | None = None) -> np.ndarray:
    """HR source (any dtype) resampled onto the LR window at ``scale`` x with a Lanczos-4 kernel.

    Where the true magnification exceeds ``scale`` (the output grid is coarser than the HR pixels), the HR is
    low-passed first (Gaussian, sigma ``0.5 sqrt(m^2 - 1)`` HR px for minification ``m``) against aliasing. With
    ``distortion`` the complete mapping is used (per-pixel maps, computed in strips of rows).
    """
    import cv2

    x0, y0, w, h = window
    matrix = window_to_hr_output(lr_to_hr, window, scale)
    minification = local_zoom(lr_to_hr, (x0 + (w - 1) / 2, y0 + (h - 1) / 2)) / scale
    source = hr
    if minification > 1.0:
        sigma = 0.5 * np.sqrt(minification**2 - 1)
        if sigma >= 0.1:
            source = cv2.GaussianBlur(hr, (0, 0), sigma)
    if distortion is None:
        return cv2.warpPerspective(source, matrix, (w * scale, h * scale),
                                   flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    map_x = np.empty((h * scale, w * scale), np.float32)
    map_y = np.empty_like(map_x)
    hm = np.asarray(lr_to_hr, np.float64).astype(np.float32)
    columns = (x0 + (np.arange(w * scale) + 0.5) / scale - 0.5).astype(np.float32)[None, :]
    for start in range(0, h * scale, 256):
        # float32 is exact enough here (4e-4 px at 6000 px) and keeps a 20-MP map at a few seconds.
        rows = (y0 + (np.arange(start, min(start + 256, h * scale)) + 0.5) / scale - 0.5).astype(np.float32)[:, None]
        yx = np.repeat(columns, len(rows), axis=0)
        yy = np.repeat(rows, columns.shape[1], axis=1)
        for k, cx, cy, radius in distortion.terms:
            dx, dy = columns - np.float32(cx), rows - np.float32(cy)
            factor = np.float32(k / radius**2) * (dx * dx + dy * dy)
            yx += dx * factor
            yy += dy * factor
        denominator = hm[2, 0] * yx + hm[2, 1] * yy + hm[2, 2]
        map_x[start:start + len(rows)] = (hm[0, 0] * yx + hm[0, 1] * yy + hm[0, 2]) / denominator
        map_y[start:start + len(rows)] = (hm[1, 0] * yx + hm[1, 1] * yy + hm[1, 2]) / denominator
    return cv2.remap(source, map_x, map_y, cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)


def grey(image: np.ndarray) -> np.ndarray:
    """BT.601 luma as float32 in [0, 1] from uint8/uint16/float32 RGB."""
    import cv2

    if image.dtype == np.float32:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    peak = 255.0 if image.dtype == np.uint8 else 65535.0
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / peak)


LUMA = (0.299, 0.587, 0.114)  # BT.601 weights of R, G, B
# A channel saturated on its own (a red wall whose red channel clips while its luma stays below CLIP_HIGH) loses its
# texture in one capture only; that luma difference biased a simulated pair 0.5-0.9 px. Such a channel is left out
# of both images' grey when it is saturated alone on more than CHANNEL_SATURATION of either frame. Dropping a
# channel costs signal-to-noise everywhere: at 1-5 % it dropped channels on many simulated pairs and refused one
# registered to 0.08 px; the red wall was 74 % saturated.
CHANNEL_SATURATION = 0.15


def registration_grey(lr: np.ndarray, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Grey images of an LR/HR pair for :func:`register` and the channel weights used (R, G, B; sum 1).

    BT.601 luma (:func:`grey`) unless a channel is saturated alone (at the format's top value while the luma is
    below :data:`CLIP_HIGH`) on more than :data:`CHANNEL_SATURATION` of either frame: then the luma weights of
    the other channels, renormalised, for both images alike. The shares are measured on every 8th pixel.
    """
    import cv2

    keep = np.ones(3, bool)
    for image in (lr, hr):
        sample = np.ascontiguousarray(image[::8, ::8])
        peak = 1.0 if image.dtype == np.float32 else (255 if image.dtype == np.uint8 else 65535)
        unsaturated_luma = grey(sample) < CLIP_HIGH
        alone = (sample >= peak) & unsaturated_luma[..., None]
        keep &= alone.mean(axis=(0, 1)) <= CHANNEL_SATURATION
    if keep.all() or not keep.any():
        return grey(lr), grey(hr), LUMA
    weights = np.where(keep, LUMA, 0.0)
    weights /= weights.sum()

    def weighted(image: np.ndarray) -> np.ndarray:
        peak = 1.0 if image.dtype == np.float32 else (255.0 if image.dtype == np.uint8 else 65535.0)
        channels = [np.ascontiguousarray(image[..., c]) for c in np.flatnonzero(keep)]
        scales = [float(weights[c] / peak) for c in np.flatnonzero(keep)]
        if len(channels) == 1:
            return channels[0].astype(np.float32) * np.float32(scales[0])
        return cv2.addWeighted(channels[0], scales[0], channels[1], scales[1], 0.0, dtype=cv2.CV_32F)

    return weighted(lr), weighted(hr), tuple(float(w) for w in weights)


# ----------------------------------------------------------------------------------------------------------------
# coarse estimates


@dataclass(frozen=True)
class _Coarse:
    lr_to_hr: np.ndarray
    score: float


def search_coarse(lr: np.ndarray, hr: np.ndarray, ratio: float, *, zoom_range: float = 0.12,
                  roll_deg: float = 4.0) -> _Coarse | None:
    """Pyramid search over magnification and roll with whole-field NCC; ``None`` when nothing matches.

    ``lr``, ``hr``: grey float32. Returns a similarity (as a 3x3 homography, LR -> HR pixels) and its NCC score.
    """
    import cv2

    lh, lw = lr.shape
    k = max(1.0, lw / COARSE_WIDTH)
    lr_small = cv2.resize(lr, (max(8, round(lw / k)), max(8, round(lh / k))), interpolation=cv2.INTER_AREA)
    k_x, k_y = lw / lr_small.shape[1], lh / lr_small.shape[0]
    base = ratio * k * (1 - zoom_range)  # HR px per small-LR px, smallest candidate
    hh, hw = hr.shape
    hr_small = cv2.resize(hr, (max(8, round(hw / base)), max(8, round(hh / base))), interpolation=cv2.INTER_AREA)
    q_x, q_y = hw / hr_small.shape[1], hh / hr_small.shape[0]

    def match(zoom_factor: float, roll: float) -> tuple[float, np.ndarray]:
        m = ratio * k * zoom_factor  # HR px per template px
        tw = int(hw / m * 0.85)
        th = int(hh / m * 0.85)
        if tw < 8 or th < 8 or tw >= lr_small.shape[1] or th >= lr_small.shape[0]:
            return -1.0, np.eye(3)
        c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
        # template px -> HR px: centre to centre, magnification m, roll.
        t_to_hr = _translation((hw - 1) / 2, (hh - 1) / 2) @ np.array(
            [[m * c, -m * s, 0], [m * s, m * c, 0], [0, 0, 1]]) @ _translation(-(tw - 1) / 2, -(th - 1) / 2)
        t_to_small = np.linalg.inv(_scaling(q_x, q_y)) @ t_to_hr
        template = cv2.warpAffine(hr_small, t_to_small[:2], (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        if template.std() < 1e-4:
            return -1.0, np.eye(3)
        result = cv2.matchTemplate(lr_small, template, cv2.TM_CCOEFF_NORMED)
        _, score, _, (px, py) = cv2.minMaxLoc(result)
        fx, fy = _subpixel_peak(result, px, py)
        # small-LR px p <-> template px p - (fx, fy); small-LR px -> LR px via _scaling(k).
        lr_to_hr = t_to_hr @ _translation(-fx, -fy) @ np.linalg.inv(_scaling(k_x, k_y))
        return float(score), lr_to_hr

    best = (-1.0, np.eye(3), 1.0, 0.0)
    for zoom_factor in np.linspace(1 - zoom_range, 1 + zoom_range, 13):
        for roll in np.linspace(-roll_deg, roll_deg, 9):
            score, matrix = match(zoom_factor, roll)
            if score > best[0]:
                best = (score, matrix, zoom_factor, roll)
    # Finer grid around the best cell.
    _, _, z0, r0 = best
    for zoom_factor in z0 + np.linspace(-0.01, 0.01, 5):
        for roll in r0 + np.linspace(-0.5, 0.5, 5):
            score, matrix = match(zoom_factor, roll)
            if score > best[0]:
                best = (score, matrix, zoom_factor, roll)
    return None if best[0] <= -1 else _Coarse(best[1], best[0])


def _subpixel_peak(result: np.ndarray, px: int, py: int) -> tuple[float, float]:
    def offset(a: float, b: float, c: float) -> float:
        denominator = a - 2 * b + c
        return 0.0 if abs(denominator) < 1e-12 else float(np.clip(0.5 * (a - c) / denominator, -0.5, 0.5))

    h, w = result.shape
    fx = px + (offset(result[py, px - 1], result[py, px], result[py, px + 1]) if 0 < px < w - 1 else 0.0)
    fy = py + (offset(result[py - 1, px], result[py, px], result[py + 1, px]) if 0 < py < h - 1 else 0.0)
    return fx, fy


def feature_coarse(lr: np.ndarray, hr: np.ndarray, ratio: float, *,
                   work_size: int = 700) -> tuple[np.ndarray | None, int]:
    """SIFT + ratio test + RANSAC homography on pre-zoomed grey images; ``(None, inliers)`` when unreliable."""
    import cv2

    # Pre-zoom: the HR is area-downscaled by the focal ratio so that both images show the scene at one scale.
    lh, lw = lr.shape
    hh, hw = hr.shape
    k = max(1.0, max(hw / ratio, hh / ratio) / work_size)
    lr_small = cv2.resize(lr, (max(8, round(lw / k)), max(8, round(lh / k))), interpolation=cv2.INTER_AREA)
    hr_small = cv2.resize(hr, (max(8, round(hw / (ratio * k))), max(8, round(hh / (ratio * k)))),
                          interpolation=cv2.INTER_AREA)
    to8 = lambda a: np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    sift = cv2.SIFT_create(nfeatures=3000)
    kp_l, des_l = sift.detectAndCompute(to8(lr_small), None)
    kp_h, des_h = sift.detectAndCompute(to8(hr_small), None)
    if des_l is None or des_h is None or len(kp_l) < MIN_INLIERS or len(kp_h) < MIN_INLIERS:
        return None, 0
    matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_l, des_h, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < MIN_INLIERS:
        return None, len(good)
    src = np.float32([kp_l[m.queryIdx].pt for m in good])
    dst = np.float32([kp_h[m.trainIdx].pt for m in good])
    matrix, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 2.0, maxIters=4000, confidence=0.999)
    count = int(inliers.sum()) if inliers is not None else 0
    if matrix is None or count < MIN_INLIERS:
        return None, count
    k_x, k_y = lw / lr_small.shape[1], lh / lr_small.shape[0]
    q_x, q_y = hw / hr_small.shape[1], hh / hr_small.shape[0]
    lr_to_hr = _scaling(q_x, q_y) @ matrix @ np.linalg.inv(_scaling(k_x, k_y))
    return lr_to_hr / lr_to_hr[2, 2], count


def _disagreement(a: np.ndarray, b: np.ndarray, hr_shape: tuple[int, int]) -> float:
    """Largest distance (LR px) between the HR frame's corners as the two homographies place them in the LR."""
    return float(np.max(np.linalg.norm(hr_field_in_lr(a, hr_shape) - hr_field_in_lr(b, hr_shape), axis=1)))


# ----------------------------------------------------------------------------------------------------------------
# refinement


@dataclass(frozen=True)
class RadialDistortion:
    """Radial lens distortion between the two captures, in LR pixels, applied before ``lr_to_hr``.

    ``y = x + sum_i k_i (x - c_i) |x - c_i|^2 / R_i^2``; the complete LR -> HR mapping is ``lr_to_hr(y)``
    (:func:`map_lr_to_hr`). Two terms, each in its lens's own units: the LR lens about the LR frame's centre
    (``R`` = half diagonal of the LR frame; ``k < 0`` is barrel distortion of the wide end) and the HR lens about
    the HR frame's centre as seen in the LR (``R`` = HR half diagonal / magnification; to first order in ``k``).
    """

    terms: tuple[tuple[float, float, float, float], ...]  # (k, centre x, centre y, R), LR px

    def undistort(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, np.float64)
        out = points.copy()
        for k, cx, cy, radius in self.terms:
            d = points - (cx, cy)
            out += k * d * np.sum(d * d, axis=-1, keepdims=True) / radius**2
        return out

    def to_dict(self) -> dict:
        return {"model": "y = x + sum k (x - c)|x - c|^2 / R^2 on LR px, then lr_to_hr",
                "terms": [{"lens": lens, "k": round(k, 8), "centre": [round(cx, 3), round(cy, 3)],
                           "radius": round(radius, 3)} for lens, (k, cx, cy, radius) in zip(("lr", "hr"), self.terms)]}


def map_lr_to_hr(lr_to_hr: np.ndarray, distortion: RadialDistortion | None, points: np.ndarray) -> np.ndarray:
    """The complete LR -> HR mapping of ``N x 2`` points: undistort (if any), then the homography."""
    points = np.asarray(points, np.float64)
    return apply_homography(lr_to_hr, distortion.undistort(points) if distortion else points)


def _distortion_frames(h: np.ndarray, lr_shape: tuple[int, int], hr_shape: tuple[int, int]) -> np.ndarray:
    """Centres and radii (LR px) of the two distortion terms for the current homography: rows (cx, cy, R)."""
    (lh, lw), (hh, hw) = lr_shape[:2], hr_shape[:2]
    hr_centre = apply_homography(np.linalg.inv(h), np.array([[(hw - 1) / 2, (hh - 1) / 2]]))[0]
    zoom = local_zoom(h, tuple(hr_centre))
    return np.array([[(lw - 1) / 2, (lh - 1) / 2, np.hypot(lw, lh) / 2],
                     [hr_centre[0], hr_centre[1], np.hypot(hw, hh) / 2 / zoom]])


@dataclass(frozen=True)
class _Refined:
    lr_to_hr: np.ndarray
    distortion: RadialDistortion | None
    correlation: float
    iterations: int
    corner_sigma: float  # LR px: standard deviation of the ROI corners' positions (Gauss-Newton covariance)


def _roi(lr_to_hr: np.ndarray, lr_shape: tuple[int, int], hr_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """LR region (x0, y0, x1, y1 exclusive) that the HR field covers, for the refinement's template."""
    corners = hr_field_in_lr(lr_to_hr, hr_shape)
    lh, lw = lr_shape
    x0 = int(np.clip(np.floor(corners[:, 0].min()), 0, lw - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()), 0, lh - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 1, x0 + 1, lw))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 1, y0 + 1, lh))
    return x0, y0, x1, y1


def refine(lr: np.ndarray, hr: np.ndarray, lr_to_hr: np.ndarray, *, fit_distortion: bool = True,
           min_size: int = 48, start_size: int = 320, max_iterations: int = 40,
           tolerance: float = 0.005) -> _Refined:
    """Robust coarse-to-fine Gauss-Newton refinement of ``lr_to_hr`` (grey float32 images).

    Per pyramid level: LR template ``T`` (LR ROI area-downscaled by ``2^L``), HR image ``I`` area-downscaled to the
    same scale and warped by the current mapping. Model ``T(x) ~ g(x) I(H D(x)) + b + beta Laplacian(I)(H D(x))``
    with ``g`` a quadratic surface in normalised template coordinates, ``beta`` the blur difference of the two
    captures (first order) and ``D`` the LR's radial distortion (:class:`RadialDistortion`, when
    ``fit_distortion``); each step solves jointly for a compositional homography increment, the distortion
    coefficient and the photometric parameters (IRLS with Huber weights; saturated pixels and the pixels their
    smoothing reaches get zero weight). Steps
    stop when the increment moves no template corner by more than ``tolerance`` level pixels.
    """
    import cv2

    h = np.asarray(lr_to_hr, np.float64).copy()
    ks = np.zeros(2)
    roi = _roi(h, lr.shape, hr.shape)
    template_full = lr[roi[1]:roi[3], roi[0]:roi[2]]
    template_clipped = _clipped(template_full)
    image_clipped = _clipped(hr)
    to_roi = _translation(roi[0], roi[1])
    th, tw = template_full.shape
    levels = 0
    while max(th, tw) / 2 ** (levels + 1) >= start_size and min(th, tw) / 2 ** (levels + 1) >= min_size:
        levels += 1
    # Large frames stop at the level of at most FINEST_PIXELS template pixels: millions of pixels there fix the
    # geometry to far below a pixel, and full resolution would cost seconds per step.
    finest = 0
    while th * tw / 4**finest > FINEST_PIXELS:
        finest += 1
    levels = max(levels, finest)
    total = 0
    correlation = spread = 0.0
    for level in range(levels, finest - 1, -1):
        f = 2**level
        if level:
            template = cv2.resize(template_full, (max(8, round(tw / f)), max(8, round(th / f))),
                                  interpolation=cv2.INTER_AREA)
        else:
            template = template_full
        fx_t, fy_t = tw / template.shape[1], th / template.shape[0]
        c_t = to_roi @ _scaling(fx_t, fy_t)  # template px -> LR px
        zoom = local_zoom(h, ((roi[0] + roi[2]) / 2, (roi[1] + roi[3]) / 2))
        factor = max(zoom * f, 1.0)
        hh, hw = hr.shape
        image = cv2.resize(hr, (max(8, round(hw / factor)), max(8, round(hh / factor))),
                           interpolation=cv2.INTER_AREA) if factor > 1 else hr
        c_i = _scaling(hw / image.shape[1], hh / image.shape[0])  # image px -> HR px
        h_level = np.linalg.inv(c_i) @ h @ c_t
        template_usable = ~_contaminated(template_clipped, template.shape)
        image_bad = _contaminated(image_clipped, image.shape)
        if SMOOTHING:
            template = cv2.GaussianBlur(template, (0, 0), SMOOTHING)
            image = cv2.GaussianBlur(image, (0, 0), SMOOTHING)
        if image_bad.any():
            image = image.copy() if image is hr else image
            image[image_bad] = np.nan  # the warp spreads NaN to every pixel that touches a clipped one
        iterations = 40 if level == levels else (12 if level > finest else 6)
        frames = _distortion_frames(h, lr.shape, hr.shape)
        frames[:, :2] = apply_homography(np.linalg.inv(c_t), frames[:, :2])
        frames[:, 2] /= fx_t
        fit = _gauss_newton(template, image, h_level, min(iterations, max_iterations), tolerance, ks=ks,
                            frames=frames, fit_k=False, usable=template_usable)
        total += fit.iterations
        if fit_distortion and level == finest:
            # Model selection: keep the two radial terms only when they lower the robust cost significantly
            # (a likelihood-ratio test on the independent samples: smoothing correlates neighbouring pixels).
            with_k = _gauss_newton(template, image, fit.h, 8, tolerance, ks=ks, frames=frames, fit_k=True,
                                   usable=template_usable)
            total += with_k.iterations
            independent = fit.count / (4 * np.pi * max(SMOOTHING, 0.5) ** 2)
            significant = (fit.cost - with_k.cost) / with_k.cost * independent > DISTORTION_EVIDENCE
            # ... and physically plausible, and large enough to matter: coefficients beyond any real lens mean the
            # terms are fitting something else (flat texture, parallax); an effect the homography nearly absorbs
            # is not worth a per-pixel warp.
            plausible = bool(np.all(np.abs(with_k.ks) <= MAX_DISTORTION))
            if significant and plausible and _distortion_effect(with_k.ks, frames, template.shape) * fx_t > \
                    MIN_DISTORTION_EFFECT:
                fit = with_k
        h_level, ks, correlation, spread = fit.h, fit.ks, fit.correlation, fit.spread * fx_t
        h = c_i @ h_level @ np.linalg.inv(c_t)
        h /= h[2, 2]
    distortion = None
    if np.any(ks):
        frames = _distortion_frames(h, lr.shape, hr.shape)
        distortion = RadialDistortion(tuple((float(k), *map(float, frame)) for k, frame in zip(ks, frames)))
    return _Refined(h, distortion, correlation, total, spread)


def _clipped(image: np.ndarray) -> np.ndarray:
    """uint8 mask (255 = saturated) of raw values above :data:`CLIP_HIGH`."""
    return ((image > CLIP_HIGH) * np.uint8(255)).astype(np.uint8)


def _contaminated(clipped: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of a pyramid level of ``shape`` whose smoothed value takes more than :data:`CLIP_WEIGHT` of its
    weight from saturated pixels (``clipped`` at full resolution; area downscaling marks any block that holds one)."""
    import cv2

    if not clipped.any():
        return np.zeros(shape, bool)
    level = clipped if clipped.shape == shape else cv2.resize(clipped, (shape[1], shape[0]),
                                                               interpolation=cv2.INTER_AREA)
    weight = (level > 0).astype(np.float32)
    if SMOOTHING:
        weight = cv2.GaussianBlur(weight, (0, 0), SMOOTHING)
    return weight > CLIP_WEIGHT


def _distortion_effect(ks: np.ndarray, frames: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest displacement (level px) of the distortion over the template that no homography absorbs."""
    import cv2

    th, tw = shape
    xs, ys = np.meshgrid(np.linspace(0, tw - 1, 17), np.linspace(0, th - 1, 17))
    points = np.stack([xs.ravel(), ys.ravel()], 1)
    moved = points.copy()
    for k, (cx, cy, radius) in zip(ks, frames):
        d = points - (cx, cy)
        moved += k * d * np.sum(d * d, axis=1, keepdims=True) / radius**2
    best, _ = cv2.findHomography(points, moved, 0)
    if best is None:
        return float(np.max(np.linalg.norm(moved - points, axis=1)))
    return float(np.max(np.linalg.norm(apply_homography(best, points) - moved, axis=1)))


@dataclass(frozen=True)
class _Step:
    h: np.ndarray
    ks: np.ndarray
    correlation: float
    iterations: int
    spread: float  # level px
    cost: float  # mean Huber-weighted squared residual
    count: int  # pixels used


def _gauss_newton(template: np.ndarray, image: np.ndarray, h: np.ndarray, iterations: int, tolerance: float, *,
                  ks: np.ndarray, frames: np.ndarray, fit_k: bool, usable: np.ndarray) -> _Step:
    import cv2

    th, tw = template.shape
    ys, xs = np.mgrid[0:th, 0:tw].astype(np.float32)
    cx, cy, s = (tw - 1) / 2, (th - 1) / 2, max(tw, th) / 2
    norm = np.array([[1 / s, 0, -cx / s], [0, 1 / s, -cy / s], [0, 0, 1]])
    corners = np.array([[-cx, -cy], [cx, -cy], [cx, cy], [-cx, cy]]) / s
    x_all, y_all = xs.ravel(), ys.ravel()
    ks = np.array(ks, np.float64)
    terms = []  # per distortion term: dx, dy, rho = |d|^2 / R^2, 1 / R^2
    for cx_k, cy_k, radius in frames:
        dx_k, dy_k = x_all - np.float32(cx_k), y_all - np.float32(cy_k)
        terms.append((dx_k, dy_k, (dx_k * dx_k + dy_k * dy_k) / np.float32(radius**2), np.float32(1 / radius**2)))
    t = template.ravel()
    unclipped_t = usable.ravel() & (t > CLIP_LOW)
    # Pixel selection at fine levels: the highest template gradients carry the geometric information.
    gty, gtx = np.gradient(template)
    strength = (gtx * gtx + gty * gty).ravel()
    select = None
    if t.size > FINE_PIXELS:
        threshold = np.partition(strength, t.size - FINE_PIXELS)[t.size - FINE_PIXELS]
        select = strength >= threshold
    stencil = np.ones((BORDER, BORDER), np.uint8)
    used = 0
    geometry = 8 + len(terms) if fit_k else 8
    for used in range(1, iterations + 1):
        # Undistorted template coordinates y = D(x), then the homography; NaN marks pixels outside the HR frame
        # (bilinear spreads it by one pixel).
        yx, yy = x_all.copy(), y_all.copy()
        for k, (dx_k, dy_k, rho_k, _) in zip(ks, terms):
            if k:
                yx += np.float32(k) * dx_k * rho_k
                yy += np.float32(k) * dy_k * rho_k
        w = np.float32(h[2, 0]) * yx + np.float32(h[2, 1]) * yy + np.float32(h[2, 2])
        map_x = ((np.float32(h[0, 0]) * yx + np.float32(h[0, 1]) * yy + np.float32(h[0, 2])) / w).reshape(th, tw)
        map_y = ((np.float32(h[1, 0]) * yx + np.float32(h[1, 1]) * yy + np.float32(h[1, 2])) / w).reshape(th, tw)
        warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=float("nan"))
        inside = cv2.erode(np.isfinite(warped).view(np.uint8), stencil)  # stencils must not reach the border
        np.nan_to_num(warped, copy=False, nan=0.0)
        gx = cv2.Sobel(warped, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
        gy = cv2.Sobel(warped, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
        w_ = warped.ravel()
        valid = inside.ravel().astype(bool) & unclipped_t & (w_ > CLIP_LOW)
        if select is not None:
            valid &= select
        idx = np.flatnonzero(valid)
        if idx.size < 50:
            raise RegistrationError(f"refinement lost the overlap ({idx.size} usable pixels at a "
                                    f"{tw}x{th} pyramid level)")
        uu = (yx[idx] - np.float32(cx)) / np.float32(s)
        vv = (yy[idx] - np.float32(cy)) / np.float32(s)
        ww, tt = w_[idx], t[idx]
        columns_p = [ww, uu * ww, vv * ww, uu * uu * ww, uu * vv * ww, vv * vv * ww, np.ones_like(ww)]
        # Blur difference: G_b * I ~ I + (b^2 / 2) Laplacian(I) to first order, so a Laplacian column absorbs the
        # two captures' different optical blur (either way); it otherwise leaves structured residuals at every edge
        # (measured: median error 0.036 -> 0.030 LR px on the simulated normal set).
        columns_p.append(cv2.Laplacian(warped, cv2.CV_32F, ksize=1).ravel()[idx])
        phot = np.stack(columns_p, 1)
        if used == 1:
            params = _robust_lstsq(phot.astype(np.float64), tt.astype(np.float64))
        a = params.astype(np.float32)
        gain = a[0] + a[1] * uu + a[2] * vv + a[3] * uu * uu + a[4] * uu * vv + a[5] * vv * vv
        residual = phot @ a - tt
        # Gradient with respect to the undistorted coordinates: g_y = J_D^-T g_x (J_D symmetric 2x2 per pixel).
        gxs, gys = gx.ravel()[idx], gy.ravel()[idx]
        if np.any(ks):
            jxx = np.ones(idx.size, np.float32)
            jyy = np.ones(idx.size, np.float32)
            jxy = np.zeros(idx.size, np.float32)
            for k, (dx_k, dy_k, rho_k, inv_r2) in zip(ks, terms):
                ddx, ddy, rr = dx_k[idx], dy_k[idx], rho_k[idx]
                kk = np.float32(k)
                jxx += kk * (rr + 2 * inv_r2 * ddx * ddx)
                jyy += kk * (rr + 2 * inv_r2 * ddy * ddy)
                jxy += kk * 2 * inv_r2 * ddx * ddy
            det = jxx * jyy - jxy * jxy
            gxs, gys = (jyy * gxs - jxy * gys) / det, (jxx * gys - jxy * gxs) / det
        gxs, gys = gxs * gain, gys * gain
        k = uu * gxs + vv * gys
        columns = [uu * gxs, vv * gxs, gxs, uu * gys, vv * gys, gys, -uu * k, -vv * k]
        columns = [c * np.float32(s) for c in columns]
        if fit_k:
            for dx_k, dy_k, rho_k, _ in terms:
                columns.append((gxs * dx_k[idx] + gys * dy_k[idx]) * rho_k[idx])
        jac = np.concatenate([np.stack(columns, 1), phot], axis=1).astype(np.float64)
        sigma = 1.4826 * np.median(np.abs(residual)) + 1e-6
        z = np.abs(residual) / (HUBER * sigma)
        weights = np.where(z <= 1, 1.0, 1.0 / np.maximum(z, 1e-12))
        jw = jac * weights[:, None]
        hessian = jw.T @ jac
        gradient = jw.T @ residual.astype(np.float64)
        if fit_k:
            # Gaussian prior k ~ N(0, DISTORTION_PRIOR^2) in the residuals' units: keeps a term that the overlap
            # cannot see (the LR lens at x4 sees only its centre) from wandering.
            prior = sigma**2 / DISTORTION_PRIOR**2
            hessian[8:geometry, 8:geometry] += prior * np.eye(len(terms))
            gradient[8:geometry] += prior * ks
        step = -np.linalg.solve(hessian + 1e-9 * np.eye(len(hessian)), gradient)
        d = step[:8]
        if fit_k:
            ks = ks + step[8:geometry]
        params = params + step[geometry:]
        increment = np.array([[1 + d[0], d[1], d[2]], [d[3], 1 + d[4], d[5]], [d[6], d[7], 1]])
        h = h @ np.linalg.inv(norm) @ increment @ norm
        h /= h[2, 2]
        moved = apply_homography(increment, corners) - corners
        k_moved = max(abs(step[8 + i]) * float(terms[i][2].max()) ** 1.5 * frames[i][2] for i in range(len(terms))) \
            if fit_k else 0.0
        if max(np.max(np.abs(moved)) * s, k_moved) < tolerance:
            break
    a, b = phot @ params.astype(np.float32), tt
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    # Uncertainty of the template corners from the Gauss-Newton covariance sigma^2 (J'WJ)^-1 (homography block).
    covariance = np.linalg.pinv(hessian)[:8, :8] * sigma**2
    spread = 0.0
    for cu, cv in corners:
        ex = np.array([cu, cv, 1, 0, 0, 0, -cu * cu, -cu * cv]) * s
        ey = np.array([0, 0, 0, cu, cv, 1, -cu * cv, -cv * cv]) * s
        spread = max(spread, float(np.sqrt(max(ex @ covariance @ ex + ey @ covariance @ ey, 0.0))))
    return _Step(h, ks, correlation, used, spread, float(np.mean(weights * residual.astype(np.float64) ** 2)),
                 int(idx.size))


def _robust_lstsq(design: np.ndarray, target: np.ndarray, iterations: int = 3) -> np.ndarray:
    weights = np.ones(len(target))
    params = np.zeros(design.shape[1])
    for _ in range(iterations):
        a = design * weights[:, None]
        params = np.linalg.lstsq(a.T @ design + 1e-9 * np.eye(design.shape[1]), a.T @ target, rcond=None)[0]
        residual = design @ params - target
        sigma = 1.4826 * np.median(np.abs(residual)) + 1e-6
        z = np.abs(residual) / (HUBER * sigma)
        weights = np.where(z <= 1, 1.0, 1.0 / np.maximum(z, 1e-12))
    return params


# ----------------------------------------------------------------------------------------------------------------
# registration


def register(lr: np.ndarray, hr: np.ndarray, *, ratio: float) -> Registration:
    """Register an LR capture to its HR capture (grey float32 images); raises :class:`RegistrationError`.

    ``ratio`` is the focal ratio (HR focal length / LR focal length): the expected magnification.
    """
    search = search_coarse(lr, hr, ratio)
    features, inliers = feature_coarse(lr, hr, ratio)
    search_ok = search is not None and search.score >= MIN_TEMPLATE_SCORE
    candidates: list[tuple[str, np.ndarray]] = []
    agreement = None
    if search_ok and features is not None:
        agreement = _disagreement(search.lr_to_hr, features, hr.shape)
        candidates.append(("search", search.lr_to_hr))
        if agreement > COARSE_AGREEMENT * max(1.0, lr.shape[1] / COARSE_WIDTH):
            candidates.append(("features", features))
    elif search_ok:
        candidates.append(("search", search.lr_to_hr))
    elif features is not None:
        candidates.append(("features", features))
    else:
        score = "none" if search is None else f"{search.score:.2f}"
        raise RegistrationError(f"no reliable match: pyramid search NCC {score} < {MIN_TEMPLATE_SCORE} and SIFT "
                                f"found {inliers} RANSAC inliers < {MIN_INLIERS}")
    results = []
    errors = []
    for name, start in candidates:
        try:
            results.append((name, refine(lr, hr, start)))
        except RegistrationError as exc:
            errors.append(f"{name}: {exc}")
    if not results:
        raise RegistrationError("; ".join(errors))
    name, best = max(results, key=lambda item: item[1].correlation)
    roi = _roi(best.lr_to_hr, lr.shape, hr.shape)
    zoom = local_zoom(best.lr_to_hr, ((roi[0] + roi[2] - 1) / 2, (roi[1] + roi[3] - 1) / 2))
    return Registration(best.lr_to_hr, zoom, name, agreement, None if search is None else search.score, inliers,
                        best.correlation, best.iterations, best.corner_sigma, best.distortion)


def check_registration(registration: Registration, *, ratio: float, window: Sequence[int],
                       lr_shape: tuple[int, int], hr_shape: tuple[int, int]) -> None:
    """Refuse registrations that cannot be right; raises :class:`RegistrationError` naming the failed check."""
    zoom = registration.zoom
    if abs(zoom / ratio - 1) > MAX_ZOOM_ERROR:
        raise RegistrationError(f"estimated magnification {zoom:.3f} is {abs(zoom / ratio - 1):.0%} off the focal "
                                f"ratio {ratio:.3f} (tolerance {MAX_ZOOM_ERROR:.0%}); wrong pair or wrong focal "
                                "lengths")
    expected = (hr_shape[0] / zoom) * (hr_shape[1] / zoom)
    area = window[2] * window[3]
    if area < MIN_OVERLAP * expected:
        raise RegistrationError(f"too little overlap: the output window {window[2]}x{window[3]} LR px covers "
                                f"{area / expected:.0%} of the HR field (need {MIN_OVERLAP:.0%})")
    if registration.uncertainty > MAX_UNCERTAINTY:
        raise RegistrationError(f"too little texture in the overlap to fix the geometry: corner uncertainty "
                                f"{registration.uncertainty:.2f} LR px > {MAX_UNCERTAINTY} (flat or one-directional "
                                "structure)")
    if registration.correlation < MIN_CORRELATION:
        raise RegistrationError(f"no reliable match: luma correlation {registration.correlation:.2f} after "
                                f"refinement < {MIN_CORRELATION}")


def distortion_check(reference: np.ndarray, test: np.ndarray, *, grid: int = 4) -> DistortionCheck:
    """Fit a radial model to the median residual shift of ``grid x grid`` regions (LR grid images)."""
    from .quality import tile_shifts

    h, w = reference.shape[:2]
    tile = max(16, min(64, min(h, w) // (2 * grid)))
    centres, shifts = [], []
    for j in range(grid):
        for i in range(grid):
            ys, ye = j * h // grid, (j + 1) * h // grid
            xs, xe = i * w // grid, (i + 1) * w // grid
            found, _ = tile_shifts(reference[ys:ye, xs:xe], test[ys:ye, xs:xe], tile=tile)
            if len(found) >= 2:
                centres.append(((xs + xe - 1) / 2 - (w - 1) / 2, (ys + ye - 1) / 2 - (h - 1) / 2))
                shifts.append(np.median(found, axis=0))
    if len(centres) < 6:
        return DistortionCheck(len(centres), None, None, False)
    d = np.asarray(centres) / (np.hypot(w, h) / 2)
    s = np.asarray(shifts)
    r2 = np.sum(d * d, axis=1, keepdims=True)
    design = np.stack([d.ravel(), (d * r2).ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design, s.ravel(), rcond=None)
    fitted = design @ coef
    energy = float(np.sum(s**2))
    explained = 1 - float(np.sum((s.ravel() - fitted) ** 2)) / energy if energy > 0 else 0.0
    kappa = float(coef[1])
    return DistortionCheck(len(centres), kappa, explained, abs(kappa) > 0.15 and explained > 0.5)


# ----------------------------------------------------------------------------------------------------------------
# the stage

OUTPUT_KEYS = ("lr", "hr")
PATH_KEYS = ("lr", "hr", "mask")
PNG_COMPRESSION = 1  # zlib level: 1 writes a 20-MP PNG in about half the time of level 3, files ~5 % larger
PREVIEW_SIZE = 256  # LR px on the longer side of each preview panel


@dataclass(frozen=True)
class AlignSummary:
    """Counts of one ``run_align`` call and where its manifest is."""

    ok: int
    failed: int
    skipped: int
    manifest: Path
    failures: tuple[tuple[str, str], ...] = field(default=())  # (pair id, reason) of this run's failures


@dataclass(frozen=True)
class _Settings:
    capture_dir: Path
    out_dir: Path
    preview: bool
    bit_depth: int
    photometric: bool
    raw: RawRendering = DEFAULT_RAW


def run_align(capture_dir: Path | str, out_dir: Path | str, *, scales: Sequence[int] = (2, 3, 4), workers: int = 1,
              preview: bool = False, overwrite: bool = False, bit_depth: int = 8, photometric: bool = True,
              raw: RawRendering = DEFAULT_RAW, show_progress: bool = True) -> AlignSummary:
    """Register every planned pair of a capture folder and write aligned LR/HR pairs and the ``align`` manifest.

    Parameters
    ----------
    capture_dir : capture root (scene folders, optional ``captures.csv``); pairs come from
        :func:`realsr_tools.captures.discover`.
    out_dir : output folder: ``lr/x<s>/<id>.png``, ``hr/x<s>/<id>.png``, ``preview/<id>.png``, ``manifest.jsonl``.
    scales : nominal tracks to align; pairs of other tracks are left out.
    workers : pairs aligned in parallel (processes).
    preview : write a small checkerboard / difference PNG per pair.
    overwrite : redo pairs already aligned (default: skip them, i.e. resume).
    bit_depth : 8 or 16 bits per channel for the output PNGs.
    photometric : correct the LR towards the HR (:mod:`realsr_tools.photometric`); ``False`` keeps the LR
        pixels bit-exact (crop only).
    raw : how RAW captures are rendered (:class:`realsr_tools.io.RawRendering`; every capture alike).
    show_progress : draw a progress bar.
    """
    from .captures import discover
    from .errors import ConfigError, InputError
    from .manifest import StageWriter, completed_records, make_header
    from .progress import track

    capture_dir, out_dir = Path(capture_dir), Path(out_dir)
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit depth must be 8 or 16, got {bit_depth}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if out_dir.resolve() == capture_dir.resolve() or capture_dir.resolve() in out_dir.resolve().parents:
        raise ConfigError(f"{out_dir}: the output folder must lie outside the capture folder {capture_dir}, or a "
                          "re-run would find the aligned images as captures")
    found = discover(capture_dir)
    pairs = [pair for pair in found.pairs if pair.scale in set(scales)]
    if not pairs:
        raise InputError(f"{capture_dir}: no LR/HR pair at scale(s) {', '.join(map(str, scales))}; run "
                         "'realsr inspect' to see the scenes, focal lengths and problems")
    header = make_header("align", params={
        "capture_root": str(capture_dir.resolve()), "scales": list(scales), "bit_depth": bit_depth,
        "photometric": photometric, "preview": preview, "mask": None, "raw_rendering": asdict(raw),
        "convention": "lr_to_hr maps LR source px to HR source px; (x, y), pixel centres at integers, (0, 0) the "
                      "top-left pixel centre, images as decoded (EXIF orientation applied)",
    }, path_keys=PATH_KEYS)
    done = {} if overwrite else completed_records(out_dir, "align", OUTPUT_KEYS)
    wanted = {pair.id for pair in pairs}
    keep = [record for key, record in done.items() if key in wanted]
    todo = [pair for pair in pairs if pair.id not in done]
    settings = _Settings(capture_dir, out_dir, preview, bit_depth, photometric, raw)
    ok = failed = 0
    failures = []
    with StageWriter(out_dir, header, keep=keep) as writer:
        for record in track(_records(todo, settings, workers), description="align", total=len(todo),
                            enabled=show_progress):
            writer.add(record)
            if record["status"] == "ok":
                ok += 1
            else:
                failed += 1
                failures.append((record["id"], record["error"]))
    return AlignSummary(ok, failed, len(pairs) - len(todo), out_dir / "manifest.jsonl", tuple(failures))


def _records(pairs: list, settings: _Settings, workers: int) -> Iterator[dict[str, Any]]:
    if workers == 1 or len(pairs) < 2:
        for pair in pairs:
            yield align_pair(pair, settings)
        return
    from .parallel import process_pool

    with process_pool(workers, initializer=_single_thread) as pool:
        yield from pool.map(align_pair, pairs, [settings] * len(pairs))


def _single_thread() -> None:
    """Worker set-up: OpenCV on one thread, since the pool already keeps every core busy."""
    import cv2

    cv2.setNumThreads(1)


def align_pair(pair, settings: _Settings) -> dict[str, Any]:
    """Align one :class:`~realsr_tools.captures.PlannedPair` and write its outputs; returns its manifest record."""
    from .errors import RealsrError

    record: dict[str, Any] = {
        "id": pair.id, "scene": pair.scene, "camera": pair.camera, "scale": pair.scale, "status": "failed",
        "error": None, "lr_source": pair.lr, "hr_source": pair.hr, "focal_ratio": pair.focal_ratio,
        "lr_to_hr": None, "lr_window": None, "lr": None, "hr": None, "mask": None, "preview": None,
        "photometric": None, "quality": None, "registration": None, "distortion": None,
    }
    try:
        record.update(_align_pair(pair, settings))
        record["status"] = "ok"
    except (RegistrationError, RealsrError) as exc:
        record["error"] = str(exc)
    return record


def _align_pair(pair, s: _Settings) -> dict[str, Any]:
    # Decoding and PNG encoding release the GIL and are the slowest single steps on large frames: the two reads run
    # at once, and the HR output is encoded while the photometric fit and the quality measures run.
    from .parallel import one_blas_thread

    with one_blas_thread(), ThreadPoolExecutor(max_workers=2) as io_pool:
        return _align_pair_with(pair, s, io_pool)


def _align_pair_with(pair, s: _Settings, io_pool: ThreadPoolExecutor) -> dict[str, Any]:
    import cv2

    from .io import read_pixels, to_float, write_image
    from .metrics import psnr, ssim
    from .photometric import PhotometricModel, fit_photometric
    from .quality import residual_shift

    hr_read = io_pool.submit(read_pixels, s.capture_dir / pair.hr, raw=s.raw)
    lr_pixels = read_pixels(s.capture_dir / pair.lr, raw=s.raw)
    hr_pixels = hr_read.result()
    lr_grey, hr_grey, grey_weights = registration_grey(lr_pixels, hr_pixels)
    registration = register(lr_grey, hr_grey, ratio=pair.focal_ratio)
    del lr_grey, hr_grey
    window = output_window(registration.lr_to_hr, lr_pixels.shape, hr_pixels.shape,
                           distortion=registration.distortion)
    check_registration(registration, ratio=pair.focal_ratio, window=window, lr_shape=lr_pixels.shape[:2],
                       hr_shape=hr_pixels.shape[:2])
    x0, y0, w, h = window
    scale = pair.scale
    hr_out = warp_hr(hr_pixels, registration.lr_to_hr, window, scale, distortion=registration.distortion)
    del hr_pixels
    stem = f"x{scale}/{pair.id}.png"
    written = {kind: s.out_dir / kind / stem for kind in OUTPUT_KEYS}
    hr_write = io_pool.submit(write_image, written["hr"], hr_out, bit_depth=s.bit_depth,
                              png_compression=PNG_COMPRESSION)
    lr_write = None
    try:
        lr_crop = lr_pixels[y0:y0 + h, x0:x0 + w]
        hr_on_lr = cv2.resize(to_float(hr_out), (w, h), interpolation=cv2.INTER_AREA)
        lr_float = to_float(lr_crop)
        model = fit_photometric(lr_float, hr_on_lr) if s.photometric else PhotometricModel.identity()
        lr_out = model.apply(lr_float) if s.photometric else lr_crop
        lr_check = np.clip(lr_out, 0, 1) if s.photometric else lr_float
        # Quality on the central QUALITY_SIZE^2 LR pixels at most (SSIM and tile registration are the slow parts).
        cy, cx = max(0, (h - QUALITY_SIZE) // 2), max(0, (w - QUALITY_SIZE) // 2)
        centre = (slice(cy, cy + QUALITY_SIZE), slice(cx, cx + QUALITY_SIZE))
        shift = residual_shift(hr_on_lr[centre], lr_check[centre])
        if shift.median is not None and shift.median > MAX_RESIDUAL_MEDIAN:
            raise RegistrationError(f"residual misalignment too large: tile shifts median {shift.median:.2f} LR px "
                                    f"(limit {MAX_RESIDUAL_MEDIAN}; worst {shift.worst:.2f})")
        lr_write = io_pool.submit(write_image, written["lr"], lr_out, bit_depth=s.bit_depth,
                                  png_compression=PNG_COMPRESSION)
        distortion = distortion_check(hr_on_lr[centre], lr_check[centre])
        quality = {
            "psnr": round(psnr(hr_on_lr, lr_check, data_range=1.0), 3),
            "ssim": round(ssim(hr_on_lr[centre], lr_check[centre], data_range=1.0), 4),
            "shift_median": _round(shift.median), "shift_worst": _round(shift.worst),
            "shift_tiles": shift.tiles, "shift_total_tiles": shift.total_tiles,
            "distortion": distortion.to_dict(),
            "region": "psnr: whole window; ssim, shifts, distortion: central "
                      f"{min(w, QUALITY_SIZE)}x{min(h, QUALITY_SIZE)} LR px",
            "reference": "HR output area-downscaled to the LR grid vs corrected LR",
        }
        hr_write.result()
        lr_write.result()
    except BaseException:
        # A pair refused after its warp (or interrupted) leaves no output behind; its record says why.
        wait([job for job in (hr_write, lr_write) if job is not None])
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    preview_path = None
    if s.preview:  # only for a pair whose outputs were written
        preview_path = f"preview/{pair.id}.png"
        write_image(s.out_dir / preview_path, preview_image(lr_check, hr_on_lr), bit_depth=8)
    return {
        "lr_to_hr": np.round(registration.lr_to_hr, 10).tolist(),
        "distortion": registration.distortion.to_dict() if registration.distortion else None,
        "lr_window": [int(x0), int(y0), int(w), int(h)],
        "lr": f"lr/{stem}", "hr": f"hr/{stem}", "mask": None, "preview": preview_path,
        "photometric": model.to_dict() | {"applied": s.photometric},
        "quality": quality,
        "registration": registration.to_dict() | {"grey_weights": [round(w, 4) for w in grey_weights]},
    }


def preview_image(lr: np.ndarray, hr_on_lr: np.ndarray, *, square: int = 16) -> np.ndarray:
    """Left: checkerboard of LR and HR-on-LR squares (edges run straight across squares when aligned); right: the
    absolute difference amplified 4x. Float32 RGB, each panel at most :data:`PREVIEW_SIZE` px on its longer side."""
    import cv2

    h, w = lr.shape[:2]
    f = max(1.0, max(h, w) / PREVIEW_SIZE)
    size = (max(1, round(w / f)), max(1, round(h / f)))
    a = cv2.resize(lr, size, interpolation=cv2.INTER_AREA)
    b = cv2.resize(hr_on_lr, size, interpolation=cv2.INTER_AREA)
    ys, xs = np.mgrid[0:size[1], 0:size[0]]
    board = ((ys // square + xs // square) % 2 == 0)[..., None]
    checker = np.where(board, a, b)
    difference = np.clip(4 * np.abs(a - b), 0, 1)
    gap = np.ones((size[1], 4, 3), np.float32)
    return np.concatenate([checker, gap, difference], axis=1).astype(np.float32)
