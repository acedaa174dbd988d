"""Robust coarse-to-fine Gauss-Newton refinement of a homography (and radial terms) with in-loop photometrics."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from ..errors import RegistrationError
from ..geometry import (FIFTH_ORDER, RadialDistortion, apply_homography, corner_areas, distortion_frames,
                        hr_field_in_lr, local_zoom, map_lr_to_hr, prior_homography, radial_basis, radial_shift,
                        radial_term, scaling, translation, unabsorbed_displacement)
from .models import (MODELS, PARAMETERS, BlockSystems, ModelChoice, choose_model, cross_validate, fit_model,
                     model_matrix)
from .luma import CLIP_HIGH, CLIP_LOW

# Model selection (:mod:`.models`): the overlap is cut into MODEL_BLOCKS x MODEL_BLOCKS blocks for the
# leave-one-block-out cost; a more flexible model must lower it by more than MODEL_TOLERANCE (per independent
# sample, in units of the residual variance). To leave the focal-ratio prior (translation) the gain must also be
# consistent over the blocks (t > MODEL_MIN_T) and material (median share of a block's held-out cost removed
# >= MODEL_MIN_GAIN); see docs/align.md for the measurements behind these numbers.
MODEL_BLOCKS = 4
MODEL_TOLERANCE = 2.0
MODEL_MIN_T = 2.5
MODEL_MIN_GAIN = 0.2
MAGNIFICATION_PRIOR = 0.03  # standard deviation of log(true magnification / focal ratio): focus breathing, rounding
POLISH_STEPS = 4  # Gauss-Newton steps of a simpler model than the homography from its projection
# Standard deviation of the prior on each distortion coefficient (k, lens units), added against residuals counted
# pixel by pixel (0.18 in independent samples, SAMPLE_AREA); counting it in samples moved no hit (docs/align.md).
DISTORTION_PRIOR = 0.05
MAX_DISTORTION = 0.1  # |k| above which a fitted distortion term is not a lens
# The HR lens's distortion centre. A lens's distortion is centred on its optical axis, which meets the sensor a few
# per cent of the frame away from its centre (sensor placement, decentred elements), and what a centred model misses
# grows with the frame: on the independent generator's 4000-6000 px set (lenses decentred by up to 2 %) the best
# centred radial model is 0.05-0.22 LR px RMS off on 7 of 11 pairs, against a median 0.008 on 500-1400 px frames.
# After the radial model is chosen, the HR term's centre is freed only when held-out evidence asks for it
# (:func:`_decentred`); prior N(0, CENTRE_PRIOR^2) on the offset in units of the term's R (half the HR frame's
# diagonal as seen in the LR), and an offset beyond MAX_DECENTRE is not a lens's. docs/align.md, "The HR lens's
# centre".
# The offset must lower the held-out cost by more than CENTRE_TOLERANCE units (MODEL_TOLERANCE's): on the tuning
# sets (six hard sets of the generator on the tuning photographs, 216 pairs) offsets freed at 2-20 units moved 35
# pairs by a mean of -0.003 LR px (3 better, 3 worse by > 0.01), those above 20 units 24 pairs by -0.016 (14 better,
# 1 worse); docs/align.md, "The HR lens's centre".
HR_TERM = 1  # index of the HR lens's term in :func:`realsr_tools.geometry.distortion_frames`
# The fit's radial terms (:func:`_lens_frames`): the LR lens's and the HR lens's third order, and the HR lens's fifth
# order (:data:`realsr_tools.geometry.FIFTH_ORDER`), which is fitted only with the HR lens's centre. A centred cubic
# leaves what a decentred lens of 2-3 % at the corner does over a 4000-6000 px HR frame at 0.04-0.24 LR px RMS (best
# fits to the independent generator's truth over its seed-9 set's 11 written windows), freeing the centre alone at
# 0.04-0.13, with the centre pulled up to 0.2 R away to take up what the cubic misses; with the fifth order at
# 0.002-0.017, the centre within 0.06 R of the lens's. docs/align.md, "The HR lens's centre".
POWERS = (1, 1, FIFTH_ORDER)
FIFTH_TERM = 2  # index of the HR lens's fifth-order term
HR_TERMS = (HR_TERM, FIFTH_TERM)  # the terms about the HR lens's centre
THIRD_ORDER_TERMS = (0, HR_TERM)  # the terms fitted with the radial model
CENTRE_PRIOR = 0.05
MAX_DECENTRE = 0.15
CENTRE_TOLERANCE = 20.0
# The held-out cost the HR lens's fifth order must remove beyond the freed centre's to be fitted with it (units of
# CENTRE_TOLERANCE's; the same figure, not tuned). docs/align.md, "The HR lens's centre".
FIFTH_TOLERANCE = 20.0
# Largest move of the offset in one Gauss-Newton step (units of R; CENTRE_PRIOR's, not tuned): the whole step is
# shortened to it. Linearised at the radial fit, the offset trades against the perspective and radial terms, and a
# full step can land where the linearisation no longer holds: on the 4000-6000 px set 9's nikon_d3100 x2, decoded as
# power 2.2, the first full step moved the offset 0.37 R, the terms went on to 60 times a lens's, and both fits ran
# to 0.6 / 0.95 R and were rejected (0.424 LR px written); shortened, the first converges in 12 steps to 0.06 R.
CENTRE_STEP = CENTRE_PRIOR
MIN_DISTORTION_EFFECT = 0.03  # LR px of non-homography displacement below which distortion is not modelled
FINE_PIXELS = 400_000  # pixels used per Gauss-Newton step at most (highest-gradient ones)
FINEST_PIXELS = 2_000_000  # template pixels of the finest refinement level at most
HUBER = 1.345  # Huber threshold in robust standard deviations (MAD)
# Gaussian sigma (level px) applied to both images at every level against aliasing. With the blur difference
# modelled (the Laplacian term in refine), light smoothing keeps more of the fine texture that fixes the geometry:
# measured on the simulated sets, median error 0.030 (sigma 2) -> 0.019 (sigma 1) LR px on the normal set and
# 0.063 -> 0.039 on the hard set; sigma 0.5-1.5 are within noise of each other, 3 is worse.
SMOOTHING = 1.0
# Photometric model of the fit (:meth:`_Problem.linearize`): T ~ g(x) I + b + beta Laplacian(I), the gain g a
# quadratic surface in template coordinates times (1 + rho^2), plus rho^4 and rho^6 (rho: radius from the HR frame's
# centre, 1 at its corners). Why: the HR frame's vignetting divides the ratio of the two captures, 1 / (1 - v rho^2)
# = 1 + v rho^2 + v^2 rho^4 + ..., the LR's (about a quadratic over the window) multiplies it, and the HR field spans
# the whole window: a quadratic gain alone leaves 10-25 % of it at the corners for v = 0.25-0.4 (1 EV and more at
# the corner is common wide open). In a flat patch that vignetting is the only gradient, and the geometry bent to
# absorb what the gain left: a chart close-up was 2.7 LR px RMS off (8 px at a corner) and reported ok; 0.25 px with
# the vignetting divided out of both captures, 0.23 px with these terms. Chosen among four forms (2, 4, 7 and 9 extra
# terms) on the tuning seeds only; docs/align.md ("Vignetting in the fit") has the measurements.
PHOTOMETRIC_TERMS = 15  # quadratic gain (6), offset, blur, vignetting (7)
# The first 8 are re-fitted with every candidate in model selection's held-out evidence; the vignetting terms stay at
# the homography fit's values there. Re-fitted, their extrapolation into each held-out block is noise that the
# comparison of geometric models then reads as evidence: with them free, a published 124-px window magnified 1.5 %
# chose a homography 0.30 LR px off at a corner instead of an affine map 0.12 px off.
SELECTION_PHOTOMETRIC_TERMS = 8
# Standard deviation of the Gaussian prior on each vignetting coefficient (gain change at the HR frame's corner; the
# series of 1 / (1 - v rho^2) has terms v^2, v^3 <= 0.25 for v <= 0.5). Data pin them wherever the overlap is usable;
# where most of it is saturated the usable pixels leave them nearly collinear with the quadratic gain, and without
# the prior they wandered: measured, 2 of 16 highlight-clipped simulated pairs diverged (2.7 and 95 LR px).
VIGNETTING_PRIOR = 0.3
# Residuals are weighted relative to the local brightness (1 / (mean + floor)^2, the mean over a Gaussian of
# RELATIVE_SMOOTHING level px of the template): in linear light a bright region's gradients and residuals are many
# times a dark one's, so an unweighted fit follows the brightest objects, while a real scene's captures do not move
# rigidly everywhere (parallax, depth of field, lateral colour) and the pair should be aligned where most of its area
# is. Measured on the published pairs: red flowers in front of dark branches pulled a DRealSR window 0.12 LR px away
# from where the rest of it agreed. The floor (linear light; the sRGB code value 0.15) keeps dark noise from being
# weighted up. Chosen on the tuning seeds and the 100 RealSR pairs among smoothing 2 / 4 / 8 px and floors 0.01 /
# 0.02 / 0.05 (docs/align.md, "Relative weighting").
RELATIVE_SMOOTHING = 4.0
RELATIVE_FLOOR = 0.02
SAMPLE_AREA = 4 * np.pi * max(SMOOTHING, 0.5) ** 2  # level pixels per independent residual sample (smoothing)
CLIP_WEIGHT = 0.3
BORDER = 9  # px of the HR frame's edge left out (smoothing and gradient stencils must not see the border)
# Gauss-Newton steps at most: at the coarsest pyramid level, at intermediate levels, at the finest level (below the
# coarsest), and for the fit with the radial terms. Each fit stops earlier when a step moves no template corner by
# more than the tolerance; these caps only end fits that have not converged. Why these: with 40 / 12 / 6 / 8, a
# colour chart x2 pair of the generator's hard seed 10 (one level: a 414 x 281 template that starts 4 % off in
# magnification, flat patches, two vertical edges) stopped after 40 steps still moving, chose a homography there and
# was written `ok` 4.33 LR px RMS off the truth; run to convergence (67 steps, then 10 with the radial terms) it is
# 0.37 px off. Of 612 pairs of 17 generator and simulator sets, 39 moved: 3 by more than 0.02 px, all closer to the
# truth, 5 by 0.005-0.02 px (two farther, by 0.006 and 0.008); docs/align.md, "Convergence".
COARSEST_STEPS, LEVEL_STEPS, FINEST_STEPS, RADIAL_STEPS = 150, 12, 20, 25
# A fit also ends when a step brings it back within the tolerance of one of its last CYCLE_MEMORY states: it goes
# round a cycle (the Huber weights and the clipping and border masks switch from step to step, so the iteration is
# not smooth) and more steps only go round again. On the published pairs 49 of 193 fits ran to the 150-step cap
# going round exact cycles of a few steps (0.01-0.3 level px a step); this test ends 47 of them after 5-22 steps,
# and registering the 193 pairs is 1.87x faster (benchmarks/bench_refine_cycles.py). What it moved, measured
# 2026-12-02: written mappings by at most 0.003 LR px (59 published pairs; 6 of 708 generator and simulator pairs by
# at most 0.013); docs/align.md, "Convergence".
CYCLE_MEMORY = 12


@dataclass(frozen=True)
class _Refined:
    lr_to_hr: np.ndarray
    distortion: RadialDistortion | None
    correlation: float
    iterations: int
    corner_sigma: float  # LR px: standard deviation of the ROI corners' positions (Gauss-Newton covariance)
    model: ModelChoice

MIN_TEMPLATE = 16  # LR px: the smallest side of the LR region the HR field covers that refine accepts


def _roi(lr_to_hr: np.ndarray, lr_shape: tuple[int, int], hr_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """LR region (x0, y0, x1, y1 exclusive) that the HR field covers, for the refinement's template."""
    corners = hr_field_in_lr(lr_to_hr, hr_shape)
    lh, lw = lr_shape
    x0 = int(np.clip(np.floor(corners[:, 0].min()), 0, lw - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()), 0, lh - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 1, x0 + 1, lw))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 1, y0 + 1, lh))
    return x0, y0, x1, y1


def refine(lr: np.ndarray, hr: np.ndarray, lr_to_hr: np.ndarray, *, ratio: float | None = None,
           fit_distortion: bool = True, saturated: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
           min_size: int = 48, start_size: int = 320, max_iterations: int | None = None,
           tolerance: float = 0.005) -> _Refined:
    """Robust coarse-to-fine Gauss-Newton refinement of ``lr_to_hr`` (grey float32 images).

    Per pyramid level: LR template ``T`` (LR ROI area-downscaled by ``2^L``), HR image ``I`` area-downscaled to the
    same scale and warped by the current mapping. Model ``T(x) ~ g(x) I(H D(x)) + b + beta Laplacian(I)(H D(x))``
    with ``g`` a quadratic surface in normalised template coordinates and the HR frame's vignetting terms
    (:data:`PHOTOMETRIC_TERMS`), ``beta`` the blur difference of the two
    captures (first order) and ``D`` the LR's radial distortion (:class:`RadialDistortion`); each step solves
    jointly for a compositional homography increment and the photometric parameters (IRLS with Huber weights;
    saturated pixels and the pixels their smoothing reaches get zero weight). Steps stop when the increment moves no
    template corner by more than ``tolerance`` level pixels, when the fit is back within ``tolerance`` of one of its
    last :data:`CYCLE_MEMORY` states (it goes round a cycle), or at the level's cap (:data:`COARSEST_STEPS` ...;
    ``max_iterations`` lowers every cap).

    At the finest level the geometric model is chosen by held-out evidence (:func:`_choose_model`,
    :mod:`.models`): translation at the focal ``ratio`` (only when ``ratio`` is given; it also sets a prior on the
    magnification), similarity, affine, homography, or the homography with radial terms (only with
    ``fit_distortion``), and the chosen model is fitted.
    """
    import cv2

    h = np.asarray(lr_to_hr, np.float64).copy()
    prior = None if ratio is None else prior_homography(lr.shape, hr.shape, ratio)
    ks = np.zeros(len(POWERS))
    roi = _roi(h, lr.shape, hr.shape)
    template_full = lr[roi[1]:roi[3], roi[0]:roi[2]]
    lr_saturated, hr_saturated = saturated
    template_clipped = _clipped(template_full, None if lr_saturated is None
                                else lr_saturated[roi[1]:roi[3], roi[0]:roi[2]])
    image_clipped = _clipped(hr, hr_saturated)
    to_roi = translation(roi[0], roi[1])
    th, tw = template_full.shape
    if min(th, tw) < MIN_TEMPLATE:
        # A start that puts the HR field on a sliver of the LR (a wrong coarse match) has nothing to refine: a pixel
        # row has no vertical gradient, and np.gradient refuses fewer than two samples.
        raise RegistrationError(f"the coarse estimate puts the HR field on a {tw}x{th} LR px region; too small to "
                                f"refine (need {MIN_TEMPLATE} px a side): no reliable match")
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
        c_t = to_roi @ scaling(fx_t, fy_t)  # template px -> LR px
        zoom = local_zoom(h, ((roi[0] + roi[2]) / 2, (roi[1] + roi[3]) / 2))
        factor = max(zoom * f, 1.0)
        hh, hw = hr.shape
        image = cv2.resize(hr, (max(8, round(hw / factor)), max(8, round(hh / factor))),
                           interpolation=cv2.INTER_AREA) if factor > 1 else hr
        c_i = scaling(hw / image.shape[1], hh / image.shape[0])  # image px -> HR px
        h_level = np.linalg.inv(c_i) @ h @ c_t
        template_usable = ~_contaminated(template_clipped, template.shape)
        image_bad = _contaminated(image_clipped, image.shape)
        if SMOOTHING:
            template = cv2.GaussianBlur(template, (0, 0), SMOOTHING)
            image = cv2.GaussianBlur(image, (0, 0), SMOOTHING)
        if image_bad.any():
            image = image.copy() if image is hr else image
            image[image_bad] = np.nan  # the warp spreads NaN to every pixel that touches a clipped one
        iterations = COARSEST_STEPS if level == levels else (LEVEL_STEPS if level > finest else FINEST_STEPS)
        if max_iterations is not None:
            iterations = min(iterations, max_iterations)
        lens_frames = _lens_frames(h, lr.shape, hr.shape)  # LR px, about the mapping this level starts from
        frames = lens_frames.copy()
        frames[:, :2] = apply_homography(np.linalg.inv(c_t), frames[:, :2])
        frames[:, 2] /= fx_t
        problem = _Problem(template, image, frames, template_usable)
        fit = _gauss_newton(template, image, h_level, iterations, tolerance, ks=ks,
                            frames=frames, fit_k=False, usable=template_usable, problem=problem)
        total += fit.iterations
        _check_not_degenerate(fit.h, h_level, template.shape)
        if level == finest:
            fit, choice, extra = _choose_model(problem, fit, c_t=c_t, c_i=c_i, prior=prior, ratio=ratio,
                                               fit_distortion=fit_distortion, tolerance=tolerance)
            total += extra
        h_level, ks, correlation, spread = fit.h, fit.ks, fit.correlation, fit.spread * fx_t
        h = c_i @ h_level @ np.linalg.inv(c_t)
        h /= h[2, 2]
    distortion = None
    if np.any(ks):
        # The terms are written in the frames the finest level fitted them in. Recomputed from the final homography
        # they were not the fitted mapping: the coarser levels have no radial terms and absorb their linear part, so
        # the radial fit moves the magnification (2 % on generator hard seed 65's pentax x2, 1164 px), and the
        # written pair was 0.085 LR px off the truth instead of 0.035 (docs/align.md, "The written lens terms").
        distortion = RadialDistortion(_terms(ks, _with_centre(lens_frames, fit.centre)))
    choice = replace(choice, corner_bend=corner_bend(h, distortion, roi, prior))
    return _Refined(h, distortion, correlation, total, spread, choice)


# Why a start that the content does not hold ends: it slides off the frame or collapses (which of the two depends
# on the last bits of OpenCV's resampling: generator hard seed 15's canon_g2 x3 slid off with OpenCV 5.0 and collapses
# with 5.1); either way the user reads the same cause.
UNHELD = "nothing in the content held the fit (flat or one-directional structure, or not the same scene)"
MAX_AREA_CHANGE = 4.0  # factor by which one pyramid level's fit may change the mapped template's area


def _check_not_degenerate(h: np.ndarray, start: np.ndarray, shape: tuple[int, int]) -> None:
    """Raise :class:`RegistrationError` when a level's fit collapsed or blew up the template (a wrong start whose
    iterations diverged: measured, a mapped area 1e-12 of the start's, with correlation 0.13), so that the caller
    tries its other start instead of failing on a singular matrix.

    The area is the mapping's local one at each template corner (perspective included): a diverged fit can keep a
    sensible upper-left 2 x 2 block while its rows became proportional (a rank-1 homography, seen on a whole-frame
    x4 -> x2 registration of two LR captures; model selection then raised ``LinAlgError``), or put a corner past the
    horizon line."""
    th, tw = shape

    def areas(m: np.ndarray) -> np.ndarray:
        signed = corner_areas(m, shape)
        return np.zeros(4) if signed is None else np.abs(signed)

    with np.errstate(all="ignore"):
        change = areas(h) / areas(start)
    if not np.all((1 / MAX_AREA_CHANGE < change) & (change < MAX_AREA_CHANGE)):
        worst = change[np.argmax(np.abs(np.log(np.where(change > 0, change, 1e-300))))]
        raise RegistrationError(f"the refinement diverged at a {tw}x{th} pyramid level (mapped area "
                                f"x{worst:.2g}): no reliable match (a wrong start, or {UNHELD})")


def corner_bend(h: np.ndarray, distortion: RadialDistortion | None, roi: tuple[int, int, int, int],
                 prior: np.ndarray | None) -> float:
    """LR px by which the mapping at the ROI's corners departs from the closest shift at the focal ratio (the
    closest similarity without a prior)."""
    xs, ys = np.meshgrid(np.linspace(roi[0], roi[2] - 1, 9), np.linspace(roi[1], roi[3] - 1, 9))
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    corners = grid[[0, 8, 80, 72]]
    mapped = map_lr_to_hr(h, distortion, grid)
    centre = ((roi[0] + roi[2] - 1) / 2, (roi[1] + roi[3] - 1) / 2)
    name = "translation" if prior is not None else "similarity"
    base = prior if prior is not None else np.eye(3)
    simple = model_matrix(name, fit_model(name, grid, mapped, prior=base, centre=centre), prior=base, centre=centre)
    zoom = local_zoom(h, centre)
    return float(np.max(np.linalg.norm(map_lr_to_hr(h, distortion, corners) - apply_homography(simple, corners),
                                       axis=1)) / zoom)


def _corner_spread(problem: "_Problem", normal: np.ndarray, basis: np.ndarray, p: int, sigma: float) -> float:
    """Largest standard deviation (level px) of the template corners for a model with normal matrix ``normal`` whose
    first ``p`` parameters move the homography increment by ``basis`` (8 x p).

    The residuals are those of smoothed images, correlated over :data:`SAMPLE_AREA` pixels, so the covariance is
    ``sigma^2 * SAMPLE_AREA * (J'WJ)^-1``, not the textbook ``sigma^2 (J'WJ)^-1`` that takes each pixel for an
    independent sample: with it the fit's scatter over noise realisations was 3.2-9.3 times the figure on eight
    generator pairs, with this 0.9-1.3 on seven (docs/align.md, "Corner uncertainty")."""
    covariance = np.linalg.pinv(normal)[:p, :p] * (sigma**2 * SAMPLE_AREA)
    spread = 0.0
    s = problem.s
    for cu, cv in problem.corners:
        ex = np.array([cu, cv, 1, 0, 0, 0, -cu * cu, -cu * cv]) * s @ basis
        ey = np.array([0, 0, 0, cu, cv, 1, -cu * cv, -cv * cv]) * s @ basis
        spread = max(spread, float(np.sqrt(max(ex @ covariance @ ex + ey @ covariance @ ey, 0.0))))
    return spread


def _block_labels(lin: "_Linear", shape: tuple[int, int]) -> np.ndarray:
    """Per pixel of ``lin``, its block of the MODEL_BLOCKS x MODEL_BLOCKS grid over a template of ``shape``."""
    th, tw = shape
    return (np.minimum((lin.x * MODEL_BLOCKS / tw).astype(int), MODEL_BLOCKS - 1)
            + MODEL_BLOCKS * np.minimum((lin.y * MODEL_BLOCKS / th).astype(int), MODEL_BLOCKS - 1))


def _lens_frames(h: np.ndarray, lr_shape: tuple[int, int], hr_shape: tuple[int, int]) -> np.ndarray:
    """The frames (rows cx, cy, R in LR px) of the fit's radial terms (:data:`POWERS`) for the homography ``h``."""
    frames = distortion_frames(h, lr_shape, hr_shape)
    return np.vstack([frames, frames[HR_TERM]])


def _terms(ks: np.ndarray, frames: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """The radial terms (:func:`realsr_tools.geometry.radial_shift`) of coefficients ``ks`` in ``frames``; the
    fifth-order term only where it was fitted (a record without it reads as before it existed)."""
    return tuple(radial_term(k, frame, power) for index, (k, frame, power) in enumerate(zip(ks, frames, POWERS))
                 if k or index != FIFTH_TERM)


def _with_centre(frames: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    """A copy of the radial terms' ``frames`` (rows cx, cy, R) with the HR lens's centre moved by ``centre`` (units
    of its R)."""
    frames = np.array(frames, np.float64)
    if centre is not None and np.any(centre):
        for index in HR_TERMS:
            frames[index, :2] += np.asarray(centre) * frames[index, 2]
    return frames


def _choose_model(problem: "_Problem", fit: "_Step", *, c_t: np.ndarray, c_i: np.ndarray, prior: np.ndarray | None,
                  ratio: float | None, fit_distortion: bool, tolerance: float) -> tuple["_Step", ModelChoice, int]:
    """Choose the geometric model by its leave-one-block-out cost (:mod:`.models`) at the finest level, starting
    from the homography fit ``fit``, and return the chosen model's fit (level coordinates), the choice, and the
    Gauss-Newton steps it took."""
    th, tw = problem.template.shape
    fit_k = fit_distortion
    geometry = 8 + len(POWERS) if fit_k else 8
    lin = problem.linearize(fit.h, np.zeros(len(POWERS)), fit.params, fit_k)
    labels = _block_labels(lin, problem.template.shape)
    systems = BlockSystems.from_pixels(lin.jac, lin.residual, lin.weights, labels, MODEL_BLOCKS**2)
    unit = lin.sigma**2 * SAMPLE_AREA  # residual variance per independent sample
    to_level = np.linalg.inv(c_i)
    centre_t = np.array([[problem.cx, problem.cy]])
    centre_lr = tuple(apply_homography(c_t, centre_t)[0])
    xs, ys = np.meshgrid(np.linspace(0, tw - 1, 9), np.linspace(0, th - 1, 9))
    grid_lr = apply_homography(c_t, np.stack([xs.ravel(), ys.ravel()], 1))
    h_full_lr = c_i @ fit.h @ np.linalg.inv(c_t)
    candidates = [m for m in MODELS if (m != "translation" or prior is not None) and (m != "radial" or fit_k)]

    def linear_model(name: str, h_base: np.ndarray, phi: np.ndarray | None):
        """Step offset, geometric basis (geometry x p) and the log-magnification (value, gradient) of a model
        about ``phi`` (``None``: the increment coordinates about ``h_base`` themselves)."""
        if phi is None:
            p = 8 + len(THIRD_ORDER_TERMS) if name == "radial" else 8
            offset = np.zeros(geometry)
            basis = np.eye(geometry)[:, :p]

            def matrix(z):
                return c_i @ problem.compose(h_base, z[:8]) @ np.linalg.inv(c_t)
            eps = np.full(p, 1e-6)
            z0 = np.zeros(p)
        else:
            p = len(phi)
            offset = np.zeros(geometry)
            offset[:8] = problem.increment(h_base, to_level @ model_matrix(name, phi, prior=prior_base,
                                                                          centre=centre_lr) @ c_t)
            basis = np.zeros((geometry, p))

            def matrix(z):
                return model_matrix(name, z, prior=prior_base, centre=centre_lr)
            shifts = {"translation": (0, 1), "similarity": (2, 3), "affine": (2, 5)}[name]
            eps = np.full(p, 1e-6 * max(1.0, float(np.max(np.abs(phi)))))
            eps[list(shifts)] = 1e-4
            z0 = np.asarray(phi, np.float64)
            for j in range(p):
                step = np.zeros(p)
                step[j] = eps[j]
                basis[:8, j] = (problem.increment(h_base, to_level @ matrix(z0 + step) @ c_t)
                                - problem.increment(h_base, to_level @ matrix(z0 - step) @ c_t)) / (2 * eps[j])
        if ratio is None:
            return offset, basis, None

        def log_zoom(z):
            return np.log(local_zoom(matrix(z), centre_lr) / ratio)
        gradient = np.zeros(p)
        for j in range(min(p, 8)):  # the radial terms do not change the magnification at the centre
            step = np.zeros(p)
            step[j] = eps[j]
            gradient[j] = (log_zoom(z0 + step) - log_zoom(z0 - step)) / (2 * eps[j])
        return offset, basis, (log_zoom(z0), gradient)

    def system(name: str, offset: np.ndarray, basis: np.ndarray, zoom_prior, sigma: float):
        p = basis.shape[1]
        full = np.zeros((geometry + PHOTOMETRIC_TERMS, p + SELECTION_PHOTOMETRIC_TERMS))
        full[:geometry, :p] = basis
        full[geometry:geometry + SELECTION_PHOTOMETRIC_TERMS, p:] = np.eye(SELECTION_PHOTOMETRIC_TERMS)
        theta = np.concatenate([offset, np.zeros(PHOTOMETRIC_TERMS)])
        prior_h, prior_g = np.zeros((p + SELECTION_PHOTOMETRIC_TERMS,) * 2), np.zeros(p + SELECTION_PHOTOMETRIC_TERMS)
        if zoom_prior is not None:
            value, gradient = zoom_prior
            weight = sigma**2 * SAMPLE_AREA / MAGNIFICATION_PRIOR**2
            prior_h[:p, :p] += weight * np.outer(gradient, gradient)
            prior_g[:p] += weight * value * gradient
        if name == "radial":
            # the same prior on the radial coefficients as in the Gauss-Newton fit with them
            prior_h[8:10, 8:10] += sigma**2 / DISTORTION_PRIOR**2 * np.eye(2)
        return full, theta, prior_h, prior_g

    prior_base = prior if prior is not None else np.eye(3)
    evidence, fitted = {}, {}
    for name in candidates:
        phi = None if name in ("homography", "radial") else fit_model(name, grid_lr, apply_homography(
            h_full_lr, grid_lr), prior=prior_base, centre=centre_lr)
        offset, basis, zoom_prior = linear_model(name, fit.h, phi)
        full, theta, prior_h, prior_g = system(name, offset, basis, zoom_prior, lin.sigma)
        cost, z, total_h = cross_validate(systems, theta, full, prior_h, prior_g)
        evidence[name] = cost
        fitted[name] = (phi, z, total_h, full)
    information = np.array([np.trace(h[:8, :8]) for h in systems.hessians])
    name, evidence, t_stats = choose_model(evidence, information, unit, tolerance=MODEL_TOLERANCE,
                                           min_t=MODEL_MIN_T, min_gain=MODEL_MIN_GAIN)
    blocks = int(np.count_nonzero(systems.costs))
    choice = ModelChoice(name, evidence, blocks, 0.0, t_stats)
    phi, z, total_h, full = fitted[name]
    extra = 0
    if name == "radial":
        def with_terms(fitted_terms: Sequence[int] | None = None) -> _Step:
            """The Gauss-Newton fit from the homography with these radial terms (``None``: both lenses' third
            order)."""
            return _gauss_newton(problem.template, problem.image, fit.h, RADIAL_STEPS, tolerance,
                                 ks=np.zeros(len(POWERS)),
                                 frames=problem.frames, fit_k=True, usable=None, problem=problem,
                                 fitted_terms=fitted_terms)

        with_k = with_terms()
        extra += with_k.iterations
        # Coefficients beyond any real lens mean the terms are fitting something else (flat texture, parallax); an
        # effect the homography nearly absorbs is not worth a per-pixel warp.
        grid_t = np.stack(np.meshgrid(np.linspace(0, tw - 1, 17), np.linspace(0, th - 1, 17)), -1).reshape(-1, 2)

        def is_lens(ks: np.ndarray, centre: np.ndarray | None = None) -> bool:
            effect = unabsorbed_displacement(_terms(ks, problem.frames_at(centre)), grid_t)
            return bool(np.all(np.abs(ks) <= MAX_DISTORTION)) and effect * c_t[0, 0] > MIN_DISTORTION_EFFECT

        if is_lens(with_k.ks):
            return _decentred(problem, with_k, choice, None, tolerance, extra, is_lens, unit)
        if np.abs(with_k.ks[0]) > MAX_DISTORTION:
            # The LR lens's term is the weakly observed one (its whole effect lies in the central window): keep the
            # HR lens's term alone before giving up the radial model.
            hr_only = with_terms([1])
            extra += hr_only.iterations
            if is_lens(hr_only.ks):
                return _decentred(problem, hr_only, replace(choice, radial_terms=("hr",)), [1], tolerance,
                                  extra, is_lens, unit)
        name = "homography"
        choice = replace(choice, name=name)
        phi, z, total_h, full = fitted[name]
    p = PARAMETERS[name]
    if phi is None:  # homography: one step of the fit with the magnification prior
        h = problem.compose(fit.h, z[:8])
        params = fit.params + full[geometry:, p:] @ z[p:]
        lin_final = problem.linearize(h, np.zeros(len(POWERS)), params, False)
        extra += 1
    else:
        phi = phi + z[:p]
        params = fit.params + full[geometry:, p:] @ z[p:]
        for _ in range(POLISH_STEPS):
            h = to_level @ model_matrix(name, phi, prior=prior_base, centre=centre_lr) @ c_t
            lin_final = problem.linearize(h, np.zeros(len(POWERS)), params, fit_k)
            extra += 1
            offset, basis, zoom_prior = linear_model(name, h, phi)
            single = BlockSystems.from_pixels(lin_final.jac, lin_final.residual, lin_final.weights,
                                              np.zeros(lin_final.residual.size, int), 1)
            full, theta, prior_h, prior_g = system(name, offset, basis, zoom_prior, lin_final.sigma)
            _, z, total_h = cross_validate(single, theta, full, prior_h, prior_g)
            step_phi = z[:p]
            phi = phi + step_phi
            params = params + full[geometry:, p:] @ z[p:]
            moved = np.abs((basis[:8] @ step_phi))
            if np.max(moved) * problem.s < tolerance:
                break
        h = to_level @ model_matrix(name, phi, prior=prior_base, centre=centre_lr) @ c_t
        h /= h[2, 2]
    a, b = lin_final.phot @ params.astype(np.float32), lin_final.target
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    # Corner uncertainty: sigma^2 (B' J'WJ B)^-1 mapped to the template corners, for the chosen model and for the
    # similarity. A translation at the focal ratio takes its magnification from the prior, not from the data, so
    # its own covariance would hide a magnification the data cannot pin (an overlap that is mostly saturated or
    # flat): the similarity's, which estimates it (under the weak prior), says whether the data confirm it.
    spread = _corner_spread(problem, total_h, full[:8, :p], p, lin_final.sigma)
    if "similarity" in fitted and PARAMETERS[name] < PARAMETERS["similarity"]:
        _, _, similarity_h, similarity_full = fitted["similarity"]
        spread = max(spread, _corner_spread(problem, similarity_h, similarity_full[:8, :4], 4, lin.sigma))
    step = _Step(h, np.zeros(len(POWERS)), correlation, 0, spread,
                 float(np.mean(lin_final.weights * lin_final.residual**2)), int(lin_final.residual.size), params)
    return step, choice, extra


def _decentred(problem: "_Problem", fit: "_Step", choice: ModelChoice, fitted_terms: Sequence[int] | None,
               tolerance: float, extra: int, is_lens, unit: float) -> tuple["_Step", ModelChoice, int]:
    """The radial fit ``fit`` with the HR lens's centre freed when the leave-one-block-out evidence asks for it
    (:data:`CENTRE_PRIOR`), and with it the lens's fifth order (:data:`POWERS`) when the evidence asks for that too
    (:data:`FIFTH_TOLERANCE`), or for the two together, else ``fit``; where no fit that refits the LR lens's term
    beside the centre stands, the same fits with that term held at ``fit``'s. The choice records the evidence and
    which fit stood."""
    lin = problem.linearize(fit.h, fit.ks, fit.params, True, fit.centre, True)
    terms = len(POWERS)
    third = list(THIRD_ORDER_TERMS if fitted_terms is None else fitted_terms)
    kept = [*range(8), *(8 + i for i in third)]
    lens_columns = [8 + terms, 9 + terms, 8 + FIFTH_TERM]  # the centre offset, the fifth order
    phot = list(range(10 + terms, 10 + terms + SELECTION_PHOTOMETRIC_TERMS))
    jac = lin.jac[:, kept + lens_columns + phot]
    labels = _block_labels(lin, problem.template.shape)
    systems = BlockSystems.from_pixels(jac, lin.residual, lin.weights, labels, MODEL_BLOCKS**2)
    n_radial, total = len(kept), jac.shape[1]
    k_prior = lin.sigma**2 / DISTORTION_PRIOR**2
    c_prior = lin.sigma**2 / CENTRE_PRIOR**2
    held_out = {}
    n_lens = n_radial + len(lens_columns)
    for name, lens in (("radial", 0), ("decentred", 2), ("fifth order", 3)):
        basis = np.eye(total)[:, [*range(n_radial + lens), *range(n_lens, total)]]
        prior_h = np.zeros((basis.shape[1],) * 2)
        prior_g = np.zeros(basis.shape[1])
        prior_h[8:n_radial, 8:n_radial] += k_prior * np.eye(n_radial - 8)
        prior_g[8:n_radial] += k_prior * fit.ks[third]
        if lens:
            prior_h[n_radial:n_radial + 2, n_radial:n_radial + 2] += c_prior * np.eye(2)
            prior_g[n_radial:n_radial + 2] += c_prior * fit.centre
        if lens > 2:
            prior_h[n_radial + 2, n_radial + 2] += k_prior
            prior_g[n_radial + 2] += k_prior * fit.ks[FIFTH_TERM]
        held_out[name], _, _ = cross_validate(systems, np.zeros(total), basis, prior_h, prior_g)
    gain = float(np.sum(held_out["radial"]) - np.sum(held_out["decentred"])) / unit
    fifth_gain = float(np.sum(held_out["decentred"]) - np.sum(held_out["fifth order"])) / unit
    choice = replace(choice, centre_evidence=gain, fifth_evidence=fifth_gain)
    # The centre is freed on its own evidence, or with the fifth order where the two together remove more than both
    # tolerances: a strong lens can need both while the centre alone fits worse (measured: a 5652-px chart x2, the
    # centre -48 units, the fifth order beyond it +158, written with the cubic alone and its corners 1.0-1.6 LR px
    # off; docs/align.md, "The centre and the fifth order together").
    together = gain + fifth_gain > CENTRE_TOLERANCE + FIFTH_TOLERANCE
    if gain <= CENTRE_TOLERANCE and not together:
        return fit, choice, extra
    # With the fifth order where the evidence asks for it; where that fit does not stand, the centre alone. Where
    # neither stands with the LR lens's term refitted beside the centre, both again with that term held at the
    # radial fit's: over a window off the LR frame's centre the LR term and the HR term's centre can trade against
    # each other (measured: a 5772-px chart x2, its 2767-px window off-centre, whose freed fit took the LR term to
    # 0.12 and the centre to 0.14 R, not a lens; held, the centre came to 0.04 R and the pair from 0.44 to 0.06 LR px
    # off). docs/align.md, "The LR lens's term held when the centre is freed".
    fifths = [True] if gain <= CENTRE_TOLERANCE else [True, False] if fifth_gain > FIFTH_TOLERANCE else [False]
    attempts = [(fifth, False) for fifth in fifths] + ([(fifth, True) for fifth in fifths] if len(third) > 1 else [])
    for fifth, lr_held in attempts:
        refitted = [HR_TERM] if lr_held else third
        try:
            decentred = _gauss_newton(problem.template, problem.image, fit.h, RADIAL_STEPS, tolerance, ks=fit.ks,
                                      frames=problem.frames, fit_k=True, usable=None, problem=problem,
                                      fitted_terms=[*refitted, FIFTH_TERM] if fifth else refitted,
                                      centre=fit.centre, fit_centre=True)
        except RegistrationError:
            # The offset's fit ran off (measured: a 4900-px x3 lost the overlap): the radial fit stands.
            continue
        extra += decentred.iterations
        if np.max(np.abs(decentred.centre)) > MAX_DECENTRE or not is_lens(decentred.ks, decentred.centre):
            continue
        # Started from the radial fit, with more freedom, a fit that converged fits the data better; one that fits
        # them no better ran off (measured: a 4972-px x3 stopped at its step budget, its robust cost 16 % above the
        # radial fit's; kept, the verifier refused the pair at 0.66 LR px; not kept, 0.11 px off). How far it moved
        # the mapping does not tell: a centred fit that was far off is corrected by more than a pixel (measured: a
        # 4608-px x2 moved 1.1 template px, 0.67 -> 0.26 LR px off). docs/align.md, "A freed centre is kept where it
        # fits better".
        if decentred.cost >= fit.cost:
            continue
        return decentred, replace(choice, centre_fitted=True, fifth_fitted=fifth, lr_term_held=lr_held), extra
    return fit, choice, extra


def _clipped(image: np.ndarray, saturated: np.ndarray | None = None) -> np.ndarray:
    """uint8 mask (255 = saturated) of raw values above :data:`CLIP_HIGH`, and of the ``saturated`` pixels (a
    channel of the grey clipped: :func:`.luma.saturated_channels`)."""
    clipped = image > CLIP_HIGH
    if saturated is not None:
        clipped |= saturated
    return (clipped * np.uint8(255)).astype(np.uint8)


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


@dataclass(frozen=True)
class _Step:
    h: np.ndarray
    ks: np.ndarray
    correlation: float
    iterations: int
    spread: float  # level px
    cost: float  # mean Huber-weighted squared residual
    count: int  # pixels used
    params: np.ndarray  # photometric parameters
    # Offset of the HR lens term's centre from the HR frame's centre, in units of that term's R (0: not fitted)
    centre: np.ndarray = field(default_factory=lambda: np.zeros(2))


@dataclass(frozen=True)
class _Linear:
    """One linearisation of the robust least-squares problem: residual ``r + J theta`` for a parameter step theta =
    (8 homography increment terms, the radial terms when asked for, :data:`PHOTOMETRIC_TERMS` photometric terms)."""

    jac: np.ndarray  # float64, pixels x parameters
    residual: np.ndarray  # float64
    weights: np.ndarray  # Huber weights
    sigma: float  # robust residual scale
    params: np.ndarray  # photometric parameters the residual was evaluated with
    phot: np.ndarray  # photometric design (float32), for the correlation
    target: np.ndarray  # template values (float32)
    x: np.ndarray  # template coordinates of the pixels used
    y: np.ndarray


class _Problem:
    """One pyramid level's fit: the template, the HR image at the template's scale, the pixels used."""

    def __init__(self, template: np.ndarray, image: np.ndarray, frames: np.ndarray, usable: np.ndarray):
        import cv2

        th, tw = template.shape
        self.template, self.image, self.frames = template, image, frames
        ys, xs = np.mgrid[0:th, 0:tw].astype(np.float32)
        self.cx, self.cy, self.s = (tw - 1) / 2, (th - 1) / 2, max(tw, th) / 2
        cx, cy, s = self.cx, self.cy, self.s
        self.norm = np.array([[1 / s, 0, -cx / s], [0, 1 / s, -cy / s], [0, 0, 1]])
        self.corners = np.array([[-cx, -cy], [cx, -cy], [cx, cy], [-cx, cy]]) / s
        self.x_all, self.y_all = xs.ravel(), ys.ravel()
        self.terms = radial_basis(self.x_all, self.y_all, frames, POWERS)  # per term: dx, dy, rho^n, 1 / R^2
        self.t = template.ravel()
        self.unclipped_t = usable.ravel() & (self.t > CLIP_LOW)
        # Pixel selection at fine levels: the highest template gradients carry the geometric information.
        gty, gtx = np.gradient(template)
        strength = (gtx * gtx + gty * gty).ravel()
        self.select = None
        if self.t.size > FINE_PIXELS:
            threshold = np.partition(strength, self.t.size - FINE_PIXELS)[self.t.size - FINE_PIXELS]
            self.select = strength >= threshold
        self.stencil = np.ones((BORDER, BORDER), np.uint8)
        local_mean = cv2.GaussianBlur(template, (0, 0), RELATIVE_SMOOTHING)
        self.relative = (1.0 / (np.maximum(local_mean, 0.0) + RELATIVE_FLOOR)).ravel().astype(np.float64)

    def frames_at(self, centre: np.ndarray | None) -> np.ndarray:
        """The radial terms' frames with the HR lens's centre moved by ``centre`` (units of its R)."""
        return _with_centre(self.frames, centre)

    def linearize(self, h: np.ndarray, ks: np.ndarray, params: np.ndarray | None, fit_k: bool,
                  centre: np.ndarray | None = None, fit_centre: bool = False,
                  fitted_terms: Sequence[int] | None = None) -> _Linear:
        """Residual and Jacobian at ``h`` (template px -> image px), radial coefficients ``ks``, the HR lens term's
        centre offset ``centre`` and photometric ``params`` (``None``: a robust fit of them first). ``fit_k``: a
        column per radial term (``fitted_terms``: only these, in that order); ``fit_centre`` (with ``fit_k``): two
        columns for the centre offset follow the radial ones."""
        import cv2

        th, tw = self.template.shape
        x_all, y_all, terms, cx, cy, s = self.x_all, self.y_all, self.terms, self.cx, self.cy, self.s
        frames = self.frames_at(centre)
        if centre is not None and np.any(centre):
            terms = list(terms)
            for index in HR_TERMS:
                terms[index] = radial_basis(x_all, y_all, frames[index:index + 1], POWERS[index:index + 1])[0]
        # Undistorted template coordinates y = D(x), then the homography; NaN marks pixels outside the HR frame
        # (bilinear spreads it by one pixel).
        sx, sy = radial_shift(x_all, y_all, _terms(ks, frames))
        yx, yy = x_all + sx, y_all + sy
        w = np.float32(h[2, 0]) * yx + np.float32(h[2, 1]) * yy + np.float32(h[2, 2])
        with np.errstate(divide="ignore", invalid="ignore"):  # w <= 0: handled below
            map_x = ((np.float32(h[0, 0]) * yx + np.float32(h[0, 1]) * yy + np.float32(h[0, 2])) / w).reshape(th, tw)
            map_y = ((np.float32(h[1, 0]) * yx + np.float32(h[1, 1]) * yy + np.float32(h[1, 2])) / w).reshape(th, tw)
        beyond = (w <= 0).reshape(th, tw)
        if beyond.any():
            # Past a diverging homography's horizon: these pixels map nowhere (w < 0 would mirror them back into
            # the frame, w = 0 printed numpy's division warning to the user's terminal).
            map_x[beyond] = np.nan
            map_y[beyond] = np.nan
        warped = cv2.remap(self.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=float("nan"))
        inside = cv2.erode(np.isfinite(warped).view(np.uint8), self.stencil)  # stencils must not reach the border
        np.nan_to_num(warped, copy=False, nan=0.0)
        gx = cv2.Sobel(warped, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
        gy = cv2.Sobel(warped, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
        w_ = warped.ravel()
        valid = inside.ravel().astype(bool) & self.unclipped_t & (w_ > CLIP_LOW)
        if self.select is not None:
            valid &= self.select
        idx = np.flatnonzero(valid)
        if idx.size < 50:
            # A start the content does not hold slides off the frame (a chart's one flat patch and a single
            # straight border: generator hard seed 15's canon_g2 x3); say so, or it reads as a bug.
            raise RegistrationError(f"refinement lost the overlap ({idx.size} usable pixels at a {tw}x{th} pyramid "
                                    f"level): {UNHELD}")
        uu = (yx[idx] - np.float32(cx)) / np.float32(s)
        vv = (yy[idx] - np.float32(cy)) / np.float32(s)
        ww, tt = w_[idx], self.t[idx]
        columns_p = [ww, uu * ww, vv * ww, uu * uu * ww, uu * vv * ww, vv * vv * ww, np.ones_like(ww)]
        # Blur difference: G_b * I ~ I + (b^2 / 2) Laplacian(I) to first order, so a Laplacian column absorbs the
        # two captures' different optical blur (either way); it otherwise leaves structured residuals at every edge
        # (measured: median error 0.036 -> 0.030 LR px on the simulated normal set).
        columns_p.append(cv2.Laplacian(warped, cv2.CV_32F, ksize=1).ravel()[idx])
        ih, iw = self.image.shape
        # the HR frame's vignetting (PHOTOMETRIC_TERMS): rho^2 from its centre, 1 at its corners
        rho2 = ((map_x.ravel()[idx] - np.float32((iw - 1) / 2)) ** 2
                + (map_y.ravel()[idx] - np.float32((ih - 1) / 2)) ** 2) / np.float32(((iw - 1) / 2) ** 2
                                                                               + ((ih - 1) / 2) ** 2)
        vignetting_terms = [rho2 * rho2, rho2 * rho2 * rho2] + [m * rho2 for m in (uu, vv, uu * uu, uu * vv, vv * vv)]
        columns_p += [m * ww for m in vignetting_terms]
        phot = np.stack(columns_p, 1)
        if params is None:
            prior = np.zeros(phot.shape[1])
            prior[SELECTION_PHOTOMETRIC_TERMS:] = SAMPLE_AREA / VIGNETTING_PRIOR**2
            params = _robust_lstsq(phot.astype(np.float64), tt.astype(np.float64), prior=prior)
        a = params.astype(np.float32)
        gain = a[0] + a[1] * uu + a[2] * vv + a[3] * uu * uu + a[4] * uu * vv + a[5] * vv * vv
        gain = gain + sum(c * m for c, m in zip(a[SELECTION_PHOTOMETRIC_TERMS:], vignetting_terms))
        residual = phot @ a - tt
        # Gradient with respect to the undistorted coordinates: g_y = J_D^-T g_x (J_D symmetric 2x2 per pixel).
        gxs, gys = gx.ravel()[idx], gy.ravel()[idx]
        if np.any(ks):
            jxx = np.ones(idx.size, np.float32)
            jyy = np.ones(idx.size, np.float32)
            jxy = np.zeros(idx.size, np.float32)
            for k, term, power in zip(ks, terms, POWERS):
                if not k:
                    continue
                ddx, ddy, rr, outer = _term_jacobian(term, power, idx)
                kk = np.float32(k)
                jxx += kk * (rr + outer * ddx * ddx)
                jyy += kk * (rr + outer * ddy * ddy)
                jxy += kk * outer * ddx * ddy
            det = jxx * jyy - jxy * jxy
            gxs, gys = (jyy * gxs - jxy * gys) / det, (jxx * gys - jxy * gxs) / det
        gxs, gys = gxs * gain, gys * gain
        k = uu * gxs + vv * gys
        columns = [uu * gxs, vv * gxs, gxs, uu * gys, vv * gys, gys, -uu * k, -vv * k]
        columns = [c * np.float32(s) for c in columns]
        if fit_k:
            for index in range(len(terms)) if fitted_terms is None else fitted_terms:
                dx_k, dy_k, rho_k, _ = terms[index]
                columns.append((gxs * dx_k[idx] + gys * dy_k[idx]) * rho_k[idx])
        if fit_centre:
            # d/dc of k (p - c) rho^n is -k (rho^n I + 2 n rho^(n-1) d d' / R^2); c = c0 + e R, so d/de is R times
            # that, summed over the HR lens's terms
            along_x = along_y = np.float32(0)
            for index in HR_TERMS:
                if not ks[index]:
                    continue
                dx_k, dy_k, rho_k, outer = _term_jacobian(terms[index], POWERS[index], idx)
                kr = np.float32(-ks[index] * frames[index, 2])
                cross = outer * dx_k * dy_k
                along_x = along_x + kr * (gxs * (rho_k + outer * dx_k * dx_k) + gys * cross)
                along_y = along_y + kr * (gxs * cross + gys * (rho_k + outer * dy_k * dy_k))
            columns.append(along_x * np.ones_like(gxs))
            columns.append(along_y * np.ones_like(gxs))
        # One float64 array filled column by column (stacking in float32, concatenating and converting made three
        # fresh copies of it a step, 0.1-0.3 GB at 400 k pixels, pages the kernel must clear).
        jac = np.empty((idx.size, len(columns) + phot.shape[1]))
        for index, column in enumerate(columns):
            jac[:, index] = column
        jac[:, len(columns):] = phot
        # Huber weights on the relative residuals, times the relative weights normalised to mean 1; sigma is the
        # robust scale of the weighted residual (it sets the covariance and the priors' strength).
        relative = self.relative[idx]
        relative_sq = relative * relative
        relative_sq_mean = np.mean(relative_sq)
        huber, sigma_relative = _huber_weights(np.abs(residual) * relative)
        weights = huber * (relative_sq / relative_sq_mean)
        sigma = sigma_relative / np.sqrt(relative_sq_mean)
        return _Linear(jac, residual.astype(np.float64), weights, float(sigma), params, phot, tt, x_all[idx],
                       y_all[idx])

    def compose(self, h: np.ndarray, d: np.ndarray) -> np.ndarray:
        """``h`` after the compositional increment ``d`` (8 terms, normalised template coordinates)."""
        h = h @ np.linalg.inv(self.norm) @ _increment_matrix(d) @ self.norm
        return h / h[2, 2]

    def increment(self, h_from: np.ndarray, h_to: np.ndarray) -> np.ndarray:
        """The 8 increment terms ``d`` with ``compose(h_from, d) = h_to`` (inverse of :meth:`compose`)."""
        increment = self.norm @ np.linalg.inv(h_from) @ h_to @ np.linalg.inv(self.norm)
        increment = increment / increment[2, 2]
        return (increment - np.eye(3)).ravel()[:8]


def _term_jacobian(term, power: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dy, rho^n, 2 n rho^(n-1) / R^2)`` at the pixels ``idx`` of a radial term (:func:`radial_basis`): the
    Jacobian of its displacement ``k d rho^n`` is ``k (rho^n I + 2 n rho^(n-1) d d' / R^2)``."""
    dx_k, dy_k, rho_n, inv_r2 = term
    dx, dy, rr = dx_k[idx], dy_k[idx], rho_n[idx]
    if power == 1:
        return dx, dy, rr, np.float32(2 * inv_r2)
    return dx, dy, rr, 2 * power * inv_r2 * ((dx * dx + dy * dy) * inv_r2) ** (power - 1)


def _increment_matrix(d: np.ndarray) -> np.ndarray:
    """The 3 x 3 matrix of a compositional increment's 8 terms (normalised template coordinates)."""
    return np.array([[1 + d[0], d[1], d[2]], [d[3], 1 + d[4], d[5]], [d[6], d[7], 1]])


def _gauss_newton(template: np.ndarray, image: np.ndarray, h: np.ndarray, iterations: int, tolerance: float, *,
                  ks: np.ndarray, frames: np.ndarray, fit_k: bool, usable: np.ndarray,
                  problem: _Problem | None = None, fitted_terms: Sequence[int] | None = None,
                  centre: np.ndarray | None = None, fit_centre: bool = False) -> _Step:
    """Gauss-Newton steps from ``h`` (and radial coefficients ``ks``, HR lens centre offset ``centre``) until
    converged, back at an earlier state, or ``iterations``. ``fit_k``: fit the radial terms too (``fitted_terms``:
    only these); ``fit_centre`` (with ``fit_k``): also the HR lens term's centre (:data:`CENTRE_PRIOR`), each step
    shortened to move it at most :data:`CENTRE_STEP`."""
    problem = problem or _Problem(template, image, frames, usable)
    terms, corners, s = problem.terms, problem.corners, problem.s
    ks = np.array(ks, np.float64)
    centre = np.zeros(2) if centre is None else np.array(centre, np.float64)
    fit_centre = fit_centre and fit_k
    used = 0
    params = None
    fitted = list(THIRD_ORDER_TERMS if fitted_terms is None else fitted_terms) if fit_k else []
    radial = 8 + len(fitted)  # end of the radial coefficients' columns
    geometry = radial + (2 if fit_centre else 0)
    # per term, its largest rho^n and its displacement's scale rho^(n + 1/2) (in units of R)
    rho_n = np.array([float(term[2].max()) for term in terms])
    k_power = rho_n ** np.array([(n + 0.5) / n for n in POWERS])
    k_radius = np.array([frame[2] for frame in frames])

    def distance(d: np.ndarray, dk: np.ndarray, dc: np.ndarray) -> float:
        """Level px by which a homography increment ``d``, a change ``dk`` of the radial terms and ``dc`` of the HR
        lens centre move the template corners and the terms' largest shift: what the tolerance is stated in."""
        moved = apply_homography(_increment_matrix(d), corners) - corners
        # the shift's derivative in its centre is at most (2n + 1) |k| rho^n: c moves by dc R
        centre_moved = (sum((2 * POWERS[i] + 1) * abs(ks[i]) * rho_n[i] * k_radius[i] for i in HR_TERMS)
                        * np.max(np.abs(dc), initial=0.0))
        return max(np.max(np.abs(moved)) * s, np.max(np.abs(dk) * k_power * k_radius, initial=0.0), centre_moved)

    def returned(h_then: np.ndarray, ks_then: np.ndarray, centre_then: np.ndarray) -> bool:
        """Whether the fit is back within the tolerance of an earlier state (a diverging fit may have passed a
        singular one: no cycle, and no numpy warning on the user's terminal)."""
        try:
            with np.errstate(all="ignore"):
                return bool(distance(problem.increment(h_then, h), ks - ks_then, centre - centre_then) < tolerance)
        except np.linalg.LinAlgError:
            return False

    visited: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=CYCLE_MEMORY)  # states before the last
    for used in range(1, iterations + 1):
        # only the fitted radial terms get columns; the others stay at ks
        lin = problem.linearize(h, ks, params, fit_k, centre, fit_centre, fitted)
        params, sigma, weights, residual, jac = lin.params, lin.sigma, lin.weights, lin.residual, lin.jac
        jw = jac * weights[:, None]
        hessian = jw.T @ jac
        gradient = jw.T @ residual
        if fit_k:
            # Gaussian prior k ~ N(0, DISTORTION_PRIOR^2) in the residuals' units: keeps a term that the overlap
            # cannot see (the LR lens at x4 sees only its centre) from wandering.
            prior = sigma**2 / DISTORTION_PRIOR**2
            hessian[8:radial, 8:radial] += prior * np.eye(len(fitted))
            gradient[8:radial] += prior * ks[fitted]
        if fit_centre:
            prior = sigma**2 / CENTRE_PRIOR**2
            hessian[radial:geometry, radial:geometry] += prior * np.eye(2)
            gradient[radial:geometry] += prior * centre
        vignetting_params = slice(geometry + SELECTION_PHOTOMETRIC_TERMS, None)
        prior = sigma**2 * SAMPLE_AREA / VIGNETTING_PRIOR**2
        hessian[vignetting_params, vignetting_params] += prior * np.eye(PHOTOMETRIC_TERMS - SELECTION_PHOTOMETRIC_TERMS)
        gradient[vignetting_params] += prior * params[SELECTION_PHOTOMETRIC_TERMS:]
        step = -np.linalg.solve(hessian + 1e-9 * np.eye(len(hessian)), gradient)
        if fit_centre:
            step *= min(1.0, CENTRE_STEP / max(float(np.max(np.abs(step[radial:geometry]))), 1e-12))
        d = step[:8]
        visited.append((h, ks, centre))
        k_step = np.zeros(len(terms))
        k_step[fitted] = step[8:radial]
        ks = ks + k_step
        centre = centre + step[radial:geometry] if fit_centre else centre
        params = params + step[geometry:]
        h = problem.compose(h, d)
        if distance(d, k_step, step[radial:geometry]) < tolerance:  # converged
            break
        if any(returned(*state) for state in list(visited)[:-1]):  # [-1]: the step test's
            break  # a cycle (CYCLE_MEMORY)
    a, b = lin.phot @ params.astype(np.float32), lin.target
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    # Uncertainty of the template corners from the Gauss-Newton covariance sigma^2 (J'WJ)^-1 (homography block),
    # at the fitted lens centre: a decentred lens's offset trades against the homography's perspective terms, so the
    # homography block alone, marginal over it, would read the complete mapping's corners as uncertain by several
    # times what they are; whether the data ask for the offset at all is held-out evidence's (:func:`_decentred`).
    kept = [i for i in range(len(hessian)) if not radial <= i < geometry]
    spread = _corner_spread(problem, hessian[np.ix_(kept, kept)], np.eye(8), 8, sigma)
    return _Step(h, ks, correlation, used, spread, float(np.mean(weights * residual ** 2)), int(residual.size),
                 params, centre)


def _robust_lstsq(design: np.ndarray, target: np.ndarray, iterations: int = 3,
                  prior: np.ndarray | None = None) -> np.ndarray:
    """Huber IRLS fit of ``design @ params ~ target``; ``prior``: per parameter, the precision of a zero-mean Gaussian
    prior in units of the residual variance (applied from the second iteration, once the residual scale is known)."""
    weights = np.ones(len(target))
    params = np.zeros(design.shape[1])
    sigma = None
    for _ in range(iterations):
        a = design * weights[:, None]
        normal = a.T @ design + 1e-9 * np.eye(design.shape[1])
        if prior is not None and sigma is not None:
            normal += np.diag(prior * sigma**2)
        params = np.linalg.lstsq(normal, a.T @ target, rcond=None)[0]
        residual = design @ params - target
        weights, sigma = _huber_weights(np.abs(residual))
    return params


def _huber_weights(magnitude: np.ndarray) -> tuple[np.ndarray, float]:
    """Huber IRLS weights of residual magnitudes (threshold :data:`HUBER` robust standard deviations) and that
    robust standard deviation (1.4826 x the median magnitude)."""
    sigma = 1.4826 * np.median(magnitude) + 1e-6
    z = magnitude / (HUBER * sigma)
    return np.where(z <= 1, 1.0, 1.0 / np.maximum(z, 1e-12)), sigma
