"""Coarse LR -> HR estimates: a whole-field NCC pyramid search and SIFT/RANSAC, checked against each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import apply_homography, corner_areas, hr_field_in_lr, scaling, translation
from .luma import LUMA, linear_thumbnail

MIN_TEMPLATE_SCORE = 0.45  # NCC of the pyramid search below which it has no reliable match
MIN_INLIERS = 15
COARSE_WIDTH = 320  # LR width of the pyramid search
COARSE_AGREEMENT = 2.0  # px at the coarse search's scale: both coarse estimates agree within this
# Colour in the search (:func:`search_coarse`): a chroma image counts where the HR's template varies in it by at
# least MIN_CHROMA_SPREAD (standard deviation of log(R/G) or log(B/G): 5 % in hue); a near-grey scene's chroma is
# noise, and its NCC would only dilute the grey's. CHROMA_FLOOR: linear light added before the ratios.
MIN_CHROMA_SPREAD = 0.05
CHROMA_FLOOR = 1e-3
# Factor off the focal ratio beyond which a feature homography's magnification at an LR frame corner is no camera's
# (the same bound as a refinement level's change of the mapped area, 4x: gauss_newton.MAX_AREA_CHANGE).
MAX_FEATURE_ZOOM_FACTOR = 2.0
# Share of the HR frame (each side) the pyramid search's template shows: margin for the roll searched (+-4.5 deg
# keeps a 3:2 frame's rotated template inside it) and for a field partly outside the LR frame.
TEMPLATE_SHARE = 0.85
# NCC (whole HR frame) by which the whole frame's best match must beat the central template's match to replace it
# (:func:`_margin_contradicts`): a margin for noise, not tuned. Measured on generator hard seeds 79 and 54: the
# chart matches it corrected by 0.05-0.21; two it left alone, 0.004.
WHOLE_FRAME_GAIN = 0.02



@dataclass(frozen=True)
class _Coarse:
    lr_to_hr: np.ndarray
    score: float
    zoom_factor: float  # magnification found / the focal ratio
    roll: float  # deg


def search_coarse(lr: np.ndarray, hr: np.ndarray, ratio: float, *, zoom_range: float = 0.12,
                  roll_deg: float = 4.0, lr_scale: tuple[float, float] = (1.0, 1.0),
                  hr_scale: tuple[float, float] = (1.0, 1.0), around: tuple[float, float] | None = None,
                  whole_frame: bool = False) -> _Coarse | None:
    """Pyramid search over magnification and roll with whole-field NCC; ``None`` when nothing matches.

    ``lr``, ``hr``: float32, grey (``H x W``) or linear-light RGB (``H x W x 3``). With colour, each candidate is
    ranked by the mean NCC of the grey and of the two chroma images ``log(R/G)``, ``log(B/G)`` where the HR varies
    in them (:func:`_features`): two objects of one luma but another hue (two patches of a colour chart) do not
    look alike, and the chroma images do not change with exposure, vignetting or white balance (a constant
    offset). The returned score is the grey's NCC at the chosen match, the measure :data:`MIN_TEMPLATE_SCORE` is
    stated in. ``lr``, ``hr`` may be reduced copies of the captures: ``lr_scale``, ``hr_scale`` are the captures'
    pixels per given pixel (x, y). ``around``: a magnification factor and roll (:class:`_Coarse`) to search
    near (+-2 %, +-1 deg) instead of the whole range, for every position still. ``whole_frame``: the whole HR
    frame is the template from the start (as where :func:`_margin_contradicts` holds), for a second search where
    every start of the first diverged (:func:`.estimate.register_captures`). Returns a similarity (as a 3x3
    homography, LR -> HR capture pixels).
    """
    import cv2

    ratio = ratio * lr_scale[0] / hr_scale[0]  # magnification between the images given
    lh, lw = lr.shape[:2]
    k = max(1.0, lw / COARSE_WIDTH)
    lr_small = _features(cv2.resize(lr, (max(8, round(lw / k)), max(8, round(lh / k))),
                                    interpolation=cv2.INTER_AREA))
    k_x, k_y = lw / lr_small.shape[1], lh / lr_small.shape[0]
    lr_channels = [np.ascontiguousarray(lr_small[..., c]) for c in range(lr_small.shape[2])]
    base = ratio * k * (1 - zoom_range)  # HR px per small-LR px, smallest candidate
    hh, hw = hr.shape[:2]
    hr_small = cv2.resize(hr, (max(8, round(hw / base)), max(8, round(hh / base))), interpolation=cv2.INTER_AREA)
    q_x, q_y = hw / hr_small.shape[1], hh / hr_small.shape[0]

    def correlate(zoom_factor: float, roll: float, whole: bool = False):
        """The NCC maps of one magnification and roll (mean over the images used, and the grey's) with the
        template px -> HR px map; ``None`` where the template does not fit. ``whole``: the whole HR frame (its
        rotated bounding box, masked to the frame), not the central :data:`TEMPLATE_SHARE`."""
        m = ratio * k * zoom_factor  # HR px per template px
        c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
        if whole:
            tw = int(np.ceil((hw * abs(c) + hh * abs(s)) / m))
            th = int(np.ceil((hw * abs(s) + hh * abs(c)) / m))
        else:
            tw = int(hw / m * TEMPLATE_SHARE)
            th = int(hh / m * TEMPLATE_SHARE)
        if tw < 8 or th < 8 or tw >= lr_small.shape[1] or th >= lr_small.shape[0]:
            return None
        # template px -> HR px: centre to centre, magnification m, roll.
        t_to_hr = translation((hw - 1) / 2, (hh - 1) / 2) @ np.array(
            [[m * c, -m * s, 0], [m * s, m * c, 0], [0, 0, 1]]) @ translation(-(tw - 1) / 2, -(th - 1) / 2)
        t_to_small = np.linalg.inv(scaling(q_x, q_y)) @ t_to_hr
        template = cv2.warpAffine(hr_small, t_to_small[:2], (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        mask = None
        if whole:
            ys, xs = np.mgrid[0:th, 0:tw].astype(np.float32)
            at = apply_homography(t_to_hr, np.stack([xs.ravel(), ys.ravel()], axis=1)).reshape(th, tw, 2)
            mask = ((at[..., 0] >= 0) & (at[..., 0] <= hw - 1) & (at[..., 1] >= 0)
                    & (at[..., 1] <= hh - 1)).astype(np.float32)
        # Chroma of the warped colour, not warped chroma: interpolated log ratios at the dark rims of chart patches
        # (measured) moved the best match of a yellow patch to another one, 200 LR px away.
        template = _features(template)

        def spread(channel: int) -> float:  # over the HR frame's pixels
            values = template[..., channel]
            return float((values if mask is None else values[mask > 0]).std())

        if spread(0) < 1e-4:
            return None

        def ncc(channel: int) -> np.ndarray:
            found = cv2.matchTemplate(lr_channels[channel], np.ascontiguousarray(template[..., channel]),
                                      cv2.TM_CCOEFF_NORMED, mask=mask)
            return found if mask is None else np.nan_to_num(found, nan=-1.0, posinf=-1.0, neginf=-1.0)

        grey = ncc(0)
        result, used = grey, 1
        for c in range(1, template.shape[2]):
            if spread(c) >= MIN_CHROMA_SPREAD:
                result = result + ncc(c)
                used += 1
        return result / used, grey, t_to_hr

    def at_peak(maps) -> tuple[float, float, np.ndarray]:
        """Score, grey NCC and LR -> HR homography at the maps' best match."""
        result, grey, t_to_hr = maps
        _, _, _, (px, py) = cv2.minMaxLoc(result)
        fx, fy = _subpixel_peak(result, px, py)
        # small-LR px p <-> template px p - (fx, fy); small-LR px -> LR px via scaling(k).
        lr_to_hr = t_to_hr @ translation(-fx, -fy) @ np.linalg.inv(scaling(k_x, k_y))
        return float(result[py, px]), float(grey[py, px]), lr_to_hr

    def match(zoom_factor: float, roll: float, whole: bool) -> tuple[float, float, np.ndarray]:
        maps = correlate(zoom_factor, roll, whole)
        return (-1.0, -1.0, np.eye(3)) if maps is None else at_peak(maps)

    def grid_search(whole: bool = False) -> tuple[float, float, np.ndarray, float, float]:
        """The best (score, grey NCC, LR -> HR, magnification factor, roll) over the grid."""
        best = (-1.0, -1.0, np.eye(3), 1.0, 0.0)
        if around is None:
            grid = [(z, r) for z in np.linspace(1 - zoom_range, 1 + zoom_range, 13)
                    for r in np.linspace(-roll_deg, roll_deg, 9)]
        else:
            grid = [(around[0] + z, around[1] + r) for z in np.linspace(-0.02, 0.02, 5)
                    for r in np.linspace(-1, 1, 5)]
        for zoom_factor, roll in grid:
            score, grey, matrix = match(zoom_factor, roll, whole)
            if score > best[0]:
                best = (score, grey, matrix, zoom_factor, roll)
        if around is None:  # finer grid around the best cell
            *_, z0, r0 = best
            for zoom_factor in z0 + np.linspace(-0.01, 0.01, 5):
                for roll in r0 + np.linspace(-0.5, 0.5, 5):
                    score, grey, matrix = match(zoom_factor, roll, whole)
                    if score > best[0]:
                        best = (score, grey, matrix, zoom_factor, roll)
        return best

    best = grid_search(whole=whole_frame)
    if best[0] <= -1:
        return None
    if not whole_frame and _margin_contradicts(best, correlate, at_peak, hr_shape=(hh, hw),
                                               small_to_lr=scaling(k_x, k_y), tolerance=COARSE_AGREEMENT * k):
        best = grid_search(whole=True)
    return _Coarse(scaling(*hr_scale) @ best[2] @ np.linalg.inv(scaling(*lr_scale)), best[1], float(best[3]),
                   float(best[4]))


def _margin_contradicts(best: tuple, correlate, at_peak, *, hr_shape: tuple[int, int], small_to_lr: np.ndarray,
                        tolerance: float) -> bool:
    """Whether the HR frame's margin, which the search's template leaves out, puts the frame elsewhere: then
    :func:`search_coarse` searches again with the whole frame as its template (masked to the frame).

    Why: on a chart close-up the margin can hold the only edge across the others (a patch's white and one black
    bar in the template, the bar below it at the frame's foot): the template then matches anywhere along the bar
    and at any magnification (generator hard seed 79's canon_g2 x2: 41 LR px off, refused). The whole frame at the
    match's magnification and roll contradicts it where its own best match lies elsewhere (more than
    ``tolerance``, LR px of the images searched) and scores more than :data:`WHOLE_FRAME_GAIN` better there than
    at the template's match, which must leave room for the whole frame (not a field partly outside the LR frame).
    The whole frame is not the search's template everywhere: its masked NCC costs about four times as much, and
    it needs the field inside the LR frame. ``best``: the search's (score, grey NCC, LR -> HR, magnification
    factor, roll); ``correlate``, ``at_peak``: its NCC maps and their best match (:func:`search_coarse`).
    """
    _, _, lr_to_hr, zoom_factor, roll = best
    maps = correlate(zoom_factor, roll, whole=True)
    if maps is None:
        return False
    whole_score, _, whole_lr_to_hr = at_peak(maps)
    if _disagreement(whole_lr_to_hr, lr_to_hr, hr_shape) <= tolerance:
        return False
    # Where the template's match puts the whole frame's template (small-LR px of its top-left corner).
    offset = np.linalg.inv(maps[2]) @ lr_to_hr @ small_to_lr
    px, py = (int(round(v)) for v in -offset[:2, 2] / offset[2, 2])
    h, w = maps[0].shape
    return 0 <= px < w and 0 <= py < h and whole_score > maps[0][py, px] + WHOLE_FRAME_GAIN


def _features(image: np.ndarray) -> np.ndarray:
    """``H x W x C`` float32 images the search correlates: the grey, and for linear-light RGB also ``log(R/G)``
    and ``log(B/G)`` (:data:`CHROMA_FLOOR` keeps black from dividing by zero)."""
    if image.ndim == 2:
        return image[..., None]
    red, green, blue = (image[..., c] + np.float32(CHROMA_FLOOR) for c in range(3))
    grey = image @ np.asarray(LUMA, np.float32)
    return np.ascontiguousarray(np.stack([grey, np.log(red / green), np.log(blue / green)], axis=-1))


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
    lr_to_hr = lr_to_hr / lr_to_hr[2, 2]
    if not _maps_the_frame(lr_to_hr, (lh, lw), ratio):
        return None, count
    return lr_to_hr, count


def _maps_the_frame(lr_to_hr: np.ndarray, lr_shape: tuple[int, int], ratio: float) -> bool:
    """Whether a homography could carry one capture's frame onto the other's: every LR frame corner in front of its
    horizon, not mirrored, magnified within :data:`MAX_FEATURE_ZOOM_FACTOR` of the focal ratio.

    Why: RANSAC on inliers that lie on one line returns homographies that fold the frame (seen: rows proportional,
    magnification near 0, the HR centre on the horizon), and a refinement from one divided by zero before it
    failed."""
    areas = corner_areas(lr_to_hr, lr_shape)
    low, high = ratio**2 / MAX_FEATURE_ZOOM_FACTOR**2, ratio**2 * MAX_FEATURE_ZOOM_FACTOR**2
    return areas is not None and bool(np.all((low <= areas) & (areas <= high)))


def _disagreement(a: np.ndarray, b: np.ndarray, hr_shape: tuple[int, int]) -> float:
    """Largest distance (LR px) between the HR frame's corners as the two homographies place them in the LR."""
    return float(np.max(np.linalg.norm(hr_field_in_lr(a, hr_shape) - hr_field_in_lr(b, hr_shape), axis=1)))


def colour_thumbnails(lr: np.ndarray, hr: np.ndarray, *, ratio: float, curves: tuple[str, str]) -> tuple:
    """The colour thumbnails of an RGB pair in linear light (each capture decoded with its curve): the LR at twice
    the pyramid search's resolution (the search reduces it further), the HR at the same scale of the scene;
    ``(lr, lr factors, hr, hr factors)`` as :func:`.luma.linear_thumbnail` returns them."""
    factor = max(1.0, lr.shape[1] / (2 * COARSE_WIDTH))
    return (*linear_thumbnail(lr, curves[0], factor), *linear_thumbnail(hr, curves[1], max(1.0, factor * ratio)))
