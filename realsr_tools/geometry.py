"""Geometry of an LR/HR capture pair: homographies, the radial lens model, output windows and the HR warp.

Convention
----------
Points are (x, y): x to the right, y down, pixel centres at integer coordinates, (0, 0) the centre of the top-left
pixel, coordinates of the images as decoded (EXIF orientation applied). ``lr_to_hr`` (a 3x3 homography) maps LR
source pixels to HR source pixels. ``lr_window`` is ``[x0, y0, width, height]`` in LR source pixels. An output
pair of scale ``s`` puts output-HR pixel ``u`` at LR position ``x0 + (u + 0.5) / s - 0.5`` (:func:`scaling`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

LANCZOS_RADIUS = 4  # HR pixels of support of the output kernel


def apply_homography(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (x, y) of shape ``... x 2`` through a 3x3 homography (float64)."""
    points = np.asarray(points, dtype=np.float64)
    p = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1) @ np.asarray(matrix, np.float64).T
    return p[..., :2] / p[..., 2:3]


def radial_term(k: float, frame: Sequence[float], power: int = 1) -> tuple[float, ...]:
    """A term of the radial lens model: ``(k, centre x, centre y, R)`` of ``frame`` (its first three values), with
    ``power`` ``n`` as a fifth element only where it is not 1 (a term of order ``2 n + 1``; :data:`FIFTH_ORDER`)."""
    return (float(k), *map(float, frame[:3])) + ((int(power),) if power != 1 else ())


def term_power(term: Sequence[float]) -> int:
    """The power ``n`` of a radial term (:func:`radial_term`): its fifth element, 1 without one."""
    return int(term[4]) if len(term) > 4 else 1


def radial_shift(x: np.ndarray, y: np.ndarray, terms) -> tuple[np.ndarray, np.ndarray]:
    """Displacement ``sum_i k_i (p - c_i) rho_i^n_i``, ``rho_i = |p - c_i|^2 / R_i^2``, of the radial lens model at
    points ``p``.

    ``x`` and ``y`` are arrays that broadcast against each other (a row of columns and a column of rows give the
    whole grid); the result has their broadcast shape and dtype (float32 in, float32 arithmetic: the per-pixel maps
    of a 20-MP warp). ``terms``: :func:`radial_term` tuples; a zero ``k`` is skipped.
    """
    x, y = np.asarray(x), np.asarray(y)
    dtype = np.result_type(x, y, np.float32)
    shape = np.broadcast_shapes(x.shape, y.shape)
    sx, sy = np.zeros(shape, dtype), np.zeros(shape, dtype)
    for term in terms:
        k, cx, cy, radius = term[:4]
        if not k:
            continue
        power = term_power(term)
        dx, dy = x - dtype.type(cx), y - dtype.type(cy)
        rho = (dx * dx + dy * dy) * dtype.type(1 / radius**2)
        factor = dtype.type(k) * (rho if power == 1 else rho**power)
        sx += dx * factor
        sy += dy * factor
    return sx, sy


def radial_basis(x: np.ndarray, y: np.ndarray, frames, powers: Sequence[int] | None = None
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Per radial term of frame ``(centre x, centre y, R)`` (and power ``n`` of ``powers``, 1 without): ``(dx, dy,
    rho^n, 1 / R^2)`` with ``d = p - c`` and ``rho = |d|^2 / R^2``, so that the term's displacement is ``k (dx, dy)
    rho^n`` (``d/dk`` of :func:`radial_shift`, what a fit of ``k`` needs), in the dtype of ``x`` and ``y``."""
    x, y = np.asarray(x), np.asarray(y)
    dtype = np.result_type(x, y, np.float32)
    out = []
    for index, (cx, cy, radius) in enumerate(frames):
        dx, dy = x - dtype.type(cx), y - dtype.type(cy)
        rho = (dx * dx + dy * dy) / dtype.type(radius**2)
        power = 1 if powers is None else int(powers[index])
        out.append((dx, dy, rho if power == 1 else rho**power, dtype.type(1 / radius**2)))
    return out


def radial_undistort(points: np.ndarray, terms) -> np.ndarray:
    """``p + radial_shift(p)`` for ``... x 2`` points (float64): distorted -> ideal in this module's lens model."""
    points = np.asarray(points, np.float64)
    sx, sy = radial_shift(points[..., 0], points[..., 1], terms)
    return points + np.stack([sx, sy], axis=-1)


def radial_distort(points: np.ndarray, terms, *, iterations: int = 20) -> np.ndarray:
    """Inverse of :func:`radial_undistort` (ideal -> distorted) by fixed-point iteration; converges for the
    coefficients of real lenses (``|k| << 1``)."""
    points = np.asarray(points, np.float64)
    u = points.copy()
    for _ in range(iterations):
        sx, sy = radial_shift(u[..., 0], u[..., 1], terms)
        u = points - np.stack([sx, sy], axis=-1)
    return u


def unabsorbed_displacement(terms, points: np.ndarray) -> float:
    """Largest displacement of the radial model over ``points`` that no homography absorbs (same units)."""
    import cv2

    points = np.asarray(points, np.float64)
    moved = radial_undistort(points, terms)
    best, _ = cv2.findHomography(points, moved, 0)
    if best is None:
        return float(np.max(np.linalg.norm(moved - points, axis=1)))
    return float(np.max(np.linalg.norm(apply_homography(best, points) - moved, axis=1)))


def scaling(factor_x: float, factor_y: float | None = None) -> np.ndarray:
    """Pixel coordinates of an image downscaled by ``factor`` -> coordinates of the original (centre-aligned)."""
    fy = factor_x if factor_y is None else factor_y
    return np.array([[factor_x, 0, 0.5 * factor_x - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]])


def prior_homography(lr_shape: tuple[int, int], hr_shape: tuple[int, int], ratio: float) -> np.ndarray:
    """Centre-to-centre magnification by the focal ratio: the starting point before any image evidence."""
    (lh, lw), (hh, hw) = lr_shape[:2], hr_shape[:2]
    return translation((hw - 1) / 2, (hh - 1) / 2) @ np.diag([ratio, ratio, 1.0]) @ translation(
        -(lw - 1) / 2, -(lh - 1) / 2)


def local_jacobian(lr_to_hr: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    """The 2 x 2 Jacobian of the homography at an LR point (HR px per LR px)."""
    h = np.asarray(lr_to_hr, np.float64)
    x, y = point
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    px, py = apply_homography(h, np.array([[x, y]]))[0]
    return np.array([[h[0, 0] - px * h[2, 0], h[0, 1] - px * h[2, 1]],
                     [h[1, 0] - py * h[2, 0], h[1, 1] - py * h[2, 1]]]) / w


def local_zoom(lr_to_hr: np.ndarray, point: tuple[float, float]) -> float:
    """Magnification (square root of the Jacobian determinant) of the homography at an LR point."""
    return float(np.sqrt(abs(np.linalg.det(local_jacobian(lr_to_hr, point)))))


def corner_areas(lr_to_hr: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """Signed local area scale (Jacobian determinant, HR px^2 per LR px^2) of the homography at the four corner pixels
    of an LR region of ``shape`` (height, width) whose top-left pixel is at (0, 0); ``None`` where the matrix is not
    finite or a corner lies on or past its horizon line (the mapping folds the region: no camera's)."""
    m = np.asarray(lr_to_hr, np.float64)
    if not np.all(np.isfinite(m)) or not m[2, 2]:
        return None
    m = m / m[2, 2]
    h, w = shape
    corners = ((0.0, 0.0), (w - 1.0, 0.0), (0.0, h - 1.0), (w - 1.0, h - 1.0))
    if any(m[2, 0] * x + m[2, 1] * y + 1 <= 0 for x, y in corners):
        return None
    return np.array([np.linalg.det(local_jacobian(m, corner)) for corner in corners])


def local_roll(lr_to_hr: np.ndarray, point: tuple[float, float]) -> float:
    """Rotation (deg, LR x axis towards y) of the homography at an LR point: that of the closest similarity."""
    jac = local_jacobian(lr_to_hr, point)
    return float(np.degrees(np.arctan2(jac[1, 0] - jac[0, 1], jac[0, 0] + jac[1, 1])))


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
    out_to_lr = translation(x0, y0) @ scaling(1.0 / scale)
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
        sx, sy = radial_shift(columns, rows, distortion.terms)
        yx += sx
        yy += sy
        denominator = hm[2, 0] * yx + hm[2, 1] * yy + hm[2, 2]
        map_x[start:start + len(rows)] = (hm[0, 0] * yx + hm[0, 1] * yy + hm[0, 2]) / denominator
        map_y[start:start + len(rows)] = (hm[1, 0] * yx + hm[1, 1] * yy + hm[1, 2]) / denominator
    return cv2.remap(source, map_x, map_y, cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)



# The power ``n`` of the HR lens's fifth-order term (``k2 (x - c) rho^2``, Brown-Conrady's and Lensfun's ``poly5``
# second coefficient). The HR frame is seen to its corners, where a lens's fifth order is largest; the LR lens only
# within its central 1 / scale, where it is not. docs/align.md, "The HR lens's centre".
FIFTH_ORDER = 2


@dataclass(frozen=True)
class RadialDistortion:
    """Radial lens distortion between the two captures, in LR pixels, applied before ``lr_to_hr``.

    ``y = x + sum_i k_i (x - c_i) rho_i^n_i`` with ``rho_i = |x - c_i|^2 / R_i^2``; the complete LR -> HR mapping is
    ``lr_to_hr(y)`` (:func:`map_lr_to_hr`). Terms, each in its lens's own units: the LR lens about the LR frame's
    centre (``R`` = half diagonal of the LR frame; ``k < 0`` is barrel distortion of the wide end) and the HR lens
    about the HR frame's centre as seen in the LR through the homography the terms were fitted at (the finest
    refinement level's start), or about the centre the fit moved it to where the data asked for that (``R`` = HR
    half diagonal / that homography's magnification; to first order in ``k``), both third order (``n`` = 1); where
    the HR lens's centre was freed, a third term: the HR lens's fifth order (``n`` = :data:`FIFTH_ORDER`, same
    centre and ``R``).
    """

    terms: tuple[tuple[float, ...], ...]  # radial_term tuples: (k, centre x, centre y, R[, n]), LR px

    def undistort(self, points: np.ndarray) -> np.ndarray:
        return radial_undistort(points, self.terms)

    @classmethod
    def from_dict(cls, record: dict | None) -> "RadialDistortion | None":
        """The inverse of :meth:`to_dict` (a manifest's ``distortion`` field); ``None`` for ``None``."""
        if not record:
            return None
        return cls(tuple(radial_term(t["k"], (*t["centre"], t["radius"]), t.get("power", 1)) for t in record["terms"]))

    def to_dict(self) -> dict:
        terms = []
        for lens, term in zip(("lr", "hr", "hr"), self.terms):
            k, cx, cy, radius = term[:4]
            written = {"lens": lens, "k": round(k, 8), "centre": [round(cx, 3), round(cy, 3)],
                       "radius": round(radius, 3)}
            if term_power(term) != 1:
                written["power"] = term_power(term)
            terms.append(written)
        model = ("y = x + sum k (x - c)(|x - c|^2 / R^2)^power on LR px (power 1 where not stated), then lr_to_hr"
                 if any("power" in term for term in terms) else "y = x + sum k (x - c)|x - c|^2 / R^2 on LR px, then "
                 "lr_to_hr")
        return {"model": model, "terms": terms}


def map_lr_to_hr(lr_to_hr: np.ndarray, distortion: RadialDistortion | None, points: np.ndarray) -> np.ndarray:
    """The complete LR -> HR mapping of ``N x 2`` points: undistort (if any), then the homography."""
    points = np.asarray(points, np.float64)
    return apply_homography(lr_to_hr, distortion.undistort(points) if distortion else points)


def distortion_frames(h: np.ndarray, lr_shape: tuple[int, int], hr_shape: tuple[int, int]) -> np.ndarray:
    """Centres and radii (LR px) of the two distortion terms for the current homography: rows (cx, cy, R)."""
    (lh, lw), (hh, hw) = lr_shape[:2], hr_shape[:2]
    hr_centre = apply_homography(np.linalg.inv(h), np.array([[(hw - 1) / 2, (hh - 1) / 2]]))[0]
    zoom = local_zoom(h, tuple(hr_centre))
    return np.array([[(lw - 1) / 2, (lh - 1) / 2, np.hypot(lw, lh) / 2],
                     [hr_centre[0], hr_centre[1], np.hypot(hw, hh) / 2 / zoom]])
