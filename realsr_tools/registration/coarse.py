"""Coarse LR -> HR estimates: a whole-field NCC pyramid search and SIFT/RANSAC, checked against each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import hr_field_in_lr, scaling, translation

MIN_TEMPLATE_SCORE = 0.45  # NCC of the pyramid search below which it has no reliable match
MIN_INLIERS = 15
COARSE_WIDTH = 320  # LR width of the pyramid search
COARSE_AGREEMENT = 2.0  # px at the coarse search's scale: both coarse estimates agree within this



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
        t_to_hr = translation((hw - 1) / 2, (hh - 1) / 2) @ np.array(
            [[m * c, -m * s, 0], [m * s, m * c, 0], [0, 0, 1]]) @ translation(-(tw - 1) / 2, -(th - 1) / 2)
        t_to_small = np.linalg.inv(scaling(q_x, q_y)) @ t_to_hr
        template = cv2.warpAffine(hr_small, t_to_small[:2], (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        if template.std() < 1e-4:
            return -1.0, np.eye(3)
        result = cv2.matchTemplate(lr_small, template, cv2.TM_CCOEFF_NORMED)
        _, score, _, (px, py) = cv2.minMaxLoc(result)
        fx, fy = _subpixel_peak(result, px, py)
        # small-LR px p <-> template px p - (fx, fy); small-LR px -> LR px via scaling(k).
        lr_to_hr = t_to_hr @ translation(-fx, -fy) @ np.linalg.inv(scaling(k_x, k_y))
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
    lr_to_hr = scaling(q_x, q_y) @ matrix @ np.linalg.inv(scaling(k_x, k_y))
    return lr_to_hr / lr_to_hr[2, 2], count


def _disagreement(a: np.ndarray, b: np.ndarray, hr_shape: tuple[int, int]) -> float:
    """Largest distance (LR px) between the HR frame's corners as the two homographies place them in the LR."""
    return float(np.max(np.linalg.norm(hr_field_in_lr(a, hr_shape) - hr_field_in_lr(b, hr_shape), axis=1)))
