"""Register an LR capture to its HR capture and check that the result can be right."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..errors import RegistrationError
from ..geometry import RadialDistortion, apply_homography, local_roll, local_zoom, map_lr_to_hr
from .coarse import (COARSE_AGREEMENT, COARSE_WIDTH, MIN_INLIERS, MIN_TEMPLATE_SCORE, _disagreement, colour_thumbnails,
                     feature_coarse, search_coarse)
from .curves import CurveEstimate, exposure_curve
from .gauss_newton import _roi, refine
from .luma import channel_balance, grey_and_dark_noise, grey_weights, saturated_channels, weighted_grey
from .models import ModelChoice

MAX_ZOOM_ERROR = 0.10  # |true magnification / focal ratio - 1| above which a pair is refused
MIN_CORRELATION = 0.75  # luma correlation after refinement (photometric model applied)
MIN_OVERLAP = 0.5  # output window area / area the HR field should cover in the LR
# Median residual tile shift (LR px) above which a pair is refused. The worst tile is recorded but not gated: one
# tile (a moving object, a repeated pattern, a flat tile) can put its phase-correlation peak pixels away on a
# pair registered to 0.16 px (measured on the simulated hard set), while the simulated pairs registered more than
# 1 px off (1.7 and 1.9 px) had medians of 1.26 and 0.79.
MAX_RESIDUAL_MEDIAN = 0.5
SAME_MATCH = 1.0  # LR px: refinements whose HR frames' corners lie within this of each other found one match
CORRELATION_TIE = 0.005  # correlation within which the coarse start whose refinement chose the simpler model wins
# LR px: corner standard deviation above which the overlap has too little texture to fix the geometry (align
# --max-uncertainty sets it). Figures in today's units (before 2026-12-03 the uncertainty took each smoothed pixel for
# an independent sample and read 3.54 times smaller; the gate was 0.15 then, the same decisions). What a looser gate
# would let through, measured 2026-12-02: on the independent generator's hard seeds 8 and 9 four pairs refused at
# 0.57-0.85 px registered 0.09-0.18 px RMS off the truth; but realsr's simulated building, 68 % saturated, is 3.3 px
# off at 0.60 px, and a chart registered to a wrong patch 35 px off at 0.99 px (the verifier and the magnification
# check refuse both). A gate of 0.89, tried later that day over 53 sets, returned 24 of the 30 pairs between the gates
# within target, and on two fresh seeds charts matched to a wrong patch, 21 and 5.8 px off at 0.57 and 0.67 px, that
# no other check refused. docs/align.md, step 7 and "Corner uncertainty".
MAX_UNCERTAINTY = 0.53
# LR px: corner standard deviation up to which align's scene check may still confirm a pair the texture gate alone
# refuses (:mod:`.consistency`: it is kept only if a capture of its scene that passed the gate on its own agrees
# with it; 0.25 in the units before 2026-12-03). The two wrong-patch matches above were refused by it (one disagreed
# with its scene by 3.9 / 5.3 LR px, the other had no written sibling). docs/align.md, "The scene check".
MAX_CONFIRMED_UNCERTAINTY = 0.89
# Relative channel gain (|log|) of the two captures' colour balance above which registration balances the HR's
# channels before the grey is formed (:func:`register_captures`); below it the grey stays the plain luma.
BALANCE_TOLERANCE = 0.02


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
    coarse: str  # the start that seeded the refinement: "search", "features", "colour", "hypothesis", SCENE_START,
    # WHOLE_FRAME
    coarse_agreement: float | None  # LR px between the two coarse estimates (None: one of them failed)
    search_score: float | None
    feature_inliers: int
    correlation: float  # luma correlation over the overlap after refinement
    iterations: int
    uncertainty: float  # LR px: standard deviation of the overlap's corners from the Gauss-Newton covariance
    distortion: RadialDistortion | None = None  # LR radial distortion relative to the HR (None: not modelled)
    model: ModelChoice | None = None  # the geometric model fitted, and the evidence for it
    hr_channel_gains: tuple[float, ...] | None = None  # R, G, B gains balancing the HR's grey (None: plain luma)
    curve_estimate: CurveEstimate | None = None  # what the exposures said of the curve (register_captures)
    # Per capture (LR, HR), each channel's dark noise clipped at zero whose bias was taken out of the grey (linear
    # light; None: too little clipped to tell, or the channel not used); register_captures
    dark_noise: tuple[tuple[float | None, ...], tuple[float | None, ...]] | None = None

    def map(self, points: np.ndarray) -> np.ndarray:
        """The complete LR -> HR mapping of ``N x 2`` LR points."""
        return map_lr_to_hr(self.lr_to_hr, self.distortion, points)

    def to_dict(self) -> dict:
        return {"zoom": _round(self.zoom), "coarse": self.coarse, "coarse_agreement": _round(self.coarse_agreement),
                "search_score": _round(self.search_score), "feature_inliers": self.feature_inliers,
                "correlation": _round(self.correlation), "iterations": self.iterations,
                "uncertainty": _round(self.uncertainty),
                "model": None if self.model is None else self.model.to_dict(),
                "hr_channel_gains": None if self.hr_channel_gains is None else list(self.hr_channel_gains)}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class CoarseStarts:
    """The coarse estimates refinement starts from (:func:`coarse_starts`), with what the record keeps of them."""

    starts: list[tuple[str, np.ndarray]]  # (name, LR -> HR homography), the one to trust most first
    agreement: float | None  # LR px between the two coarse estimates (None: one of them failed)
    search_score: float | None
    inliers: int


HYPOTHESIS_ALONE = "hypothesis alone"  # the start name when the hypothesis was the only start refined
SCENE_START = "scene"  # the start name of a pair registered again from where its scene's other captures put it
SCENE_CHAIN = "scene chain"  # a pair written with the mapping its scene's narrowest capture implies (align)
WHOLE_FRAME = "whole frame"  # the start name of the second search, where every start of the first failed


def _hypothesis_alone(lr: np.ndarray, hr: np.ndarray, ratio: float, hypothesis: np.ndarray | None,
                      ) -> CoarseStarts | None:
    """The hypothesis as the only start, where the grey search near its magnification and roll finds its match
    (:func:`register_captures`); ``None`` otherwise."""
    if hypothesis is None:
        return None
    hh, hw = hr.shape[:2]
    centre = apply_homography(np.linalg.inv(hypothesis), np.array([[(hw - 1) / 2, (hh - 1) / 2]]))[0]
    search = search_coarse(lr, hr, ratio,
                           around=(local_zoom(hypothesis, centre) / ratio, local_roll(hypothesis, centre)))
    if not _reliable(search) \
            or _disagreement(search.lr_to_hr, hypothesis, hr.shape) > _coarse_tolerance(lr.shape):
        return None
    return CoarseStarts([(HYPOTHESIS_ALONE, hypothesis)], None, search.score, 0)


def _reliable(search) -> bool:
    """Whether a pyramid search (:func:`.coarse.search_coarse`, ``None`` where nothing matched) found a match
    :data:`.coarse.MIN_TEMPLATE_SCORE` trusts."""
    return search is not None and search.score >= MIN_TEMPLATE_SCORE


def _coarse_tolerance(lr_shape: tuple[int, ...]) -> float:
    """LR px (HR frame corners, :func:`.coarse._disagreement`) within which two coarse estimates found one match."""
    return COARSE_AGREEMENT * max(1.0, lr_shape[1] / COARSE_WIDTH)


def coarse_starts(lr: np.ndarray, hr: np.ndarray, *, ratio: float,
                  colour: tuple[np.ndarray, tuple[float, float], np.ndarray, tuple[float, float]] | None = None,
                  ) -> CoarseStarts:
    """Coarse LR -> HR estimates for :func:`refine_starts` (grey float32 images); raises
    :class:`RegistrationError` when no search finds a match.

    ``colour``: the captures' colour thumbnails and their scales, ``(lr, lr_scale, hr, hr_scale)``
    (:func:`.luma.linear_thumbnail`). The pyramid search then also runs on colour (:func:`.coarse.search_coarse`),
    and where it puts the HR frame elsewhere than the grey search (two chart patches of one luma), or finds a match
    where the grey does not, its estimate is added as the first start (:func:`refine_starts` decides). Where the
    two agree, the grey's estimate alone is used (the colour one would only move the start by a coarse pixel, which
    on weakly textured pairs moved the refinement's model choice both ways).
    """
    search = search_coarse(lr, hr, ratio)
    features, inliers = feature_coarse(lr, hr, ratio)
    search_ok = _reliable(search)
    tolerance = _coarse_tolerance(lr.shape)
    starts: list[tuple[str, np.ndarray]] = []
    agreement = None
    if search_ok and features is not None:
        agreement = _disagreement(search.lr_to_hr, features, hr.shape)
        starts.append(("search", search.lr_to_hr))
        if agreement > tolerance:
            starts.append(("features", features))
    elif search_ok:
        starts.append(("search", search.lr_to_hr))
    elif features is not None:
        starts.append(("features", features))
    if colour is not None:
        lr_small, lr_scale, hr_small, hr_scale = colour
        # Near the grey search's magnification and roll (a chart's patch grid fixes those even where the grey
        # confuses two patches): a sixth of the whole search's cost.
        hue = search_coarse(lr_small, hr_small, ratio, lr_scale=lr_scale, hr_scale=hr_scale,
                            around=None if search is None else (search.zoom_factor, search.roll))
        if _reliable(hue) and (
                not search_ok or _disagreement(search.lr_to_hr, hue.lr_to_hr, hr.shape) > tolerance):
            starts.insert(0, ("colour", hue.lr_to_hr))
    if not starts:
        score = "none" if search is None else f"{search.score:.2f}"
        raise RegistrationError(f"no reliable match: pyramid search NCC {score} < {MIN_TEMPLATE_SCORE} and SIFT "
                                f"found {inliers} RANSAC inliers < {MIN_INLIERS}")
    return CoarseStarts(starts, agreement, None if search is None else search.score, inliers)


def refine_starts(lr: np.ndarray, hr: np.ndarray | Sequence[np.ndarray], coarse: CoarseStarts, *,
                  ratio: float, saturated: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
                  ) -> Registration:
    """Refine every coarse start (:func:`.gauss_newton.refine`) and keep the best (below); raises
    :class:`RegistrationError` when none converges. ``hr``: the HR grey, or one per start (balanced where that
    start puts the overlap: :func:`register_captures`); ``saturated``: LR and HR pixels to treat as clipped
    (:func:`.luma.saturated_channels`)."""
    hr_greys = [hr] * len(coarse.starts) if isinstance(hr, np.ndarray) else list(hr)
    results = []
    errors = []
    for (name, start), hr_grey in zip(coarse.starts, hr_greys):
        try:
            results.append((name, refine(lr, hr_grey, start, ratio=ratio, saturated=saturated)))
        except RegistrationError as exc:
            errors.append(f"{name}: {exc}")
    if not results:
        raise RegistrationError("; ".join(errors))
    # Among the grey estimates the better final fit wins; but correlation is measured on the data fitted, where a
    # more flexible model always gains a little: between two fits within CORRELATION_TIE of each other, the one
    # with fewer parameters wins.
    grey_results = [(name, fit) for name, fit in results if name != "colour"]
    if grey_results:
        name, best = max(grey_results, key=lambda item: item[1].correlation)
        for other_name, other in grey_results:
            if other.model.parameters < best.model.parameters and \
                    other.correlation >= best.correlation - CORRELATION_TIE:
                name, best = other_name, other
    # The colour estimate is there to tell matches apart: it wins only with another match (not within SAME_MATCH
    # of the grey one) that fits better, or alone. Otherwise the grey estimate's refinement stands as it would
    # without it (the tie rule above, applied to it, let a colour start's homography displace a better radial fit).
    colour = dict(results).get("colour")
    if colour is not None and (not grey_results or (
            colour.correlation > best.correlation
            and _disagreement(colour.lr_to_hr, best.lr_to_hr, hr_greys[0].shape) > SAME_MATCH)):
        name, best = "colour", colour
    roi = _roi(best.lr_to_hr, lr.shape, hr_greys[0].shape)
    zoom = local_zoom(best.lr_to_hr, ((roi[0] + roi[2] - 1) / 2, (roi[1] + roi[3] - 1) / 2))
    return Registration(best.lr_to_hr, zoom, name, coarse.agreement, coarse.search_score, coarse.inliers,
                        best.correlation, best.iterations, best.corner_sigma, best.distortion,
                        best.model)


def register(lr: np.ndarray, hr: np.ndarray, *, ratio: float) -> Registration:
    """Register an LR capture to its HR capture (grey float32 images); raises :class:`RegistrationError`.

    ``ratio`` is the focal ratio (HR focal length / LR focal length): the expected magnification.
    """
    return refine_starts(lr, hr, coarse_starts(lr, hr, ratio=ratio), ratio=ratio)


def register_captures(lr: np.ndarray, hr: np.ndarray, *, ratio: float, curves: tuple[str, str] = ("srgb", "srgb"),
                      hypothesis: np.ndarray | None = None,
                      hypothesis_alone_if_found: bool = False,
                      scene_start: np.ndarray | None = None,
                      ask_exposures: bool = False) -> tuple[Registration, tuple[float, ...]]:
    """Register RGB captures (any dtype :func:`.luma.registration_grey` reads): the grey images, the coarse
    estimate (its pyramid search on colour thumbnails: two chart patches of one luma are told apart by their hue),
    the HR's channels balanced to the LR's colour (:func:`.luma.channel_balance`) where they differ by
    more than :data:`BALANCE_TOLERANCE`, then the refinement on the balanced grey. Returns the registration (with
    the HR channel gains applied, ``None`` when none) and the grey's channel weights.

    The balance is measured where the coarse estimate puts the overlap (a colour start: where it puts it), before
    any refinement: a second refinement from a finished fit (tried) can settle in another model (a radial pair
    0.06 LR px off came back a homography 0.63 px off), and it would double the cost.

    ``hypothesis``: an LR -> HR homography known from elsewhere, refined as one more grey start (named
    ``"hypothesis"``) that wins only by the better fit, as the search's starts do (:mod:`.consistency`). With
    ``hypothesis_alone_if_found``, the grey pyramid search first runs near the hypothesis' magnification and roll
    (every position: a sixth of the whole search), and where it finds the hypothesis' own match (within the coarse
    estimates' agreement), the hypothesis is the only start refined (the registration's ``coarse`` is then
    :data:`HYPOTHESIS_ALONE`); otherwise, or where that refinement fails, the registration runs as without the
    option (so a failure is always the whole registration's). For the scene check, whose
    direct registrations start from the chain of two pairs that are mostly right: the whole search and refining its
    starts, which mostly refine to the chain's optimum again, were its cost.

    ``scene_start``: an LR -> HR homography that is refined as the only start, no search (the registration's
    ``coarse`` is then :data:`SCENE_START`). For a pair the scene check found matched elsewhere than its scene's
    other captures put it (:func:`.consistency.scene_start`): its window alone could not tell the two matches
    apart, so searching it again would find the same one.

    Where every start's refinement fails (diverged, lost the overlap), the grey pyramid search runs again with the
    whole HR frame as its template (:func:`_whole_frame_start`): the first search's template, the frame's centre,
    can match along the one edge it shows at a wrong magnification, where the whole frame's other edges would have
    placed it.

    ``ask_exposures`` (two captures whose files state no curve, ``curves`` the one assumed for both): at the
    coarse match (the first start, or ``scene_start``), before any refinement, the two exposures are asked which
    curve makes them a gain apart (:func:`.curves.exposure_curve`); where they clearly say another, the greys are
    decoded with it and everything after uses it. The registration's ``curve_estimate`` records the answer (the
    scene check's ``hypothesis`` registrations do not ask).
    """
    curves, (lr_grey, hr_grey, weights, saturated, noise) = _decoded_with(lr, hr, curves)
    estimate = None
    if scene_start is not None:
        coarse = CoarseStarts([(SCENE_START, np.asarray(scene_start, np.float64))], None, None, 0)
        if ask_exposures:
            estimate = exposure_curve(lr, hr, coarse.starts[0][1], ratio=ratio, assumed=curves[0])
            if estimate.curve is not None:
                curves, (lr_grey, hr_grey, weights, saturated, noise) = _decoded_with(lr, hr, (estimate.curve,) * 2)
        greys, gains = _balanced_greys(lr, hr, hr_grey, coarse, weights, curves, noise[1])
        registration = _refined(lr_grey, greys, gains, coarse, ratio=ratio, saturated=saturated)
        return replace(registration, curve_estimate=estimate, dark_noise=noise), weights
    if hypothesis is not None:
        hypothesis = np.asarray(hypothesis, np.float64)
    alone = _hypothesis_alone(lr_grey, hr_grey, ratio, hypothesis) if hypothesis_alone_if_found else None
    if alone is not None:
        greys, gains = _balanced_greys(lr, hr, hr_grey, alone, weights, curves, noise[1])
        try:
            return replace(_refined(lr_grey, greys, gains, alone, ratio=ratio, saturated=saturated),
                           dark_noise=noise), weights
        except RegistrationError:
            pass  # the hypothesis alone did not converge: the registration with every start decides
        del greys
    thumbnails = colour_thumbnails(lr, hr, ratio=ratio, curves=curves)
    coarse = coarse_starts(lr_grey, hr_grey, ratio=ratio, colour=thumbnails)
    if ask_exposures and coarse.starts:
        estimate = exposure_curve(lr, hr, coarse.starts[0][1], ratio=ratio, assumed=curves[0], thumbnails=thumbnails)
        if estimate.curve is not None:  # the greys again with it (the search's starts stand: they are geometry)
            del lr_grey, hr_grey
            curves, (lr_grey, hr_grey, weights, saturated, noise) = _decoded_with(lr, hr, (estimate.curve,) * 2)
    del thumbnails
    if hypothesis is not None:
        coarse = replace(coarse, starts=[*coarse.starts, ("hypothesis", hypothesis)])
    greys, gains = _balanced_greys(lr, hr, hr_grey, coarse, weights, curves, noise[1])
    del hr_grey  # a 24-MP frame keeps no grey that no start uses
    try:
        registration = _refined(lr_grey, greys, gains, coarse, ratio=ratio, saturated=saturated)
    except RegistrationError as failure:
        del greys  # and the failed fits' frames (their pyramids) with the traceback
        registration = _whole_frame_start(lr, hr, lr_grey, coarse, failure.with_traceback(None), ratio=ratio,
                                          weights=weights, curves=curves, saturated=saturated, hr_noise=noise[1])
    return replace(registration, curve_estimate=estimate, dark_noise=noise), weights


def _decoded_with(lr: np.ndarray, hr: np.ndarray, curves: tuple[str, str]) -> tuple[tuple[str, str], tuple]:
    """Both captures decoded with ``curves`` (LR, HR): the curves, and the greys, channel weights, saturated pixels
    and dark noise (:func:`.luma.grey_and_dark_noise`) :func:`register_captures` registers with."""
    weights = grey_weights(lr, hr)
    (lr_grey, lr_noise), (hr_grey, hr_noise) = (grey_and_dark_noise(image, curve, weights)
                                                for image, curve in zip((lr, hr), curves))
    saturated = (saturated_channels(lr, weights), saturated_channels(hr, weights))
    return tuple(curves), (lr_grey, hr_grey, weights, saturated, (lr_noise, hr_noise))


def _whole_frame_start(lr: np.ndarray, hr: np.ndarray, lr_grey: np.ndarray, coarse: CoarseStarts,
                       first_failure: RegistrationError, *, ratio: float, weights, curves: tuple[str, str],
                       saturated: tuple[np.ndarray | None, np.ndarray | None], hr_noise) -> Registration:
    """The registration refined from the whole-frame search (:data:`WHOLE_FRAME`), where the refinement of every
    start of the first search failed (``first_failure``: raised again as it is where the second search finds no
    match or the match of a start that failed, and with the second start's failure added where that fails too).

    Why: on a chart close-up (generator hard seed 26's canon_g2 x2 and x3) the central template's best match lay at
    a magnification 8 % off, where the whole frame agreed with it (so :func:`.coarse._margin_contradicts` did not
    hold) and no fit could come back from it; searched with the whole frame from the start, both registered within
    0.09 LR px of the truth. Only after a failure: the whole-frame search costs 3.2 times the central template's
    (benchmarks/bench_coarse.py), and everywhere else the first search's starts stand as they are. What the new
    start finds passes the same gates and verifier as any other.
    """
    hr_grey = weighted_grey(hr, curves[1], weights, dark_noise_sigma=hr_noise)  # the one register_captures freed
    search = search_coarse(lr_grey, hr_grey, ratio, whole_frame=True)
    if not _reliable(search):
        raise first_failure
    tolerance = _coarse_tolerance(lr_grey.shape)
    if any(_disagreement(search.lr_to_hr, start, hr_grey.shape) <= tolerance for _, start in coarse.starts):
        raise first_failure  # the same match again
    second = CoarseStarts([(WHOLE_FRAME, search.lr_to_hr)], coarse.agreement, coarse.search_score, coarse.inliers)
    greys, gains = _balanced_greys(lr, hr, hr_grey, second, weights, curves, hr_noise)
    del hr_grey
    try:
        return _refined(lr_grey, greys, gains, second, ratio=ratio, saturated=saturated)
    except RegistrationError as exc:
        raise RegistrationError(f"{first_failure}; {exc}") from None


def _balanced_greys(lr: np.ndarray, hr: np.ndarray, hr_grey: np.ndarray, coarse: CoarseStarts, weights,
                    curves: tuple[str, str], hr_noise) -> tuple[dict, list]:
    """The HR greys the starts refine on (keyed by the HR channel gains applied, ``None``: the plain grey) and each
    start's key (:func:`register_captures`; ``hr_noise``: the HR channels' dark noise, measured with its grey)."""

    def gains_at(start: np.ndarray) -> tuple[float, ...] | None:
        gains, _ = channel_balance(lr, hr, start, curves)
        if np.max(np.abs(np.log(gains))) <= BALANCE_TOLERANCE:
            return None
        return tuple(float(g) for g in gains)

    # The grey starts share the balance measured where the first of them puts the overlap; a colour start (another
    # match, so another overlap) gets its own, so that where the grey search's refinement stands it is the same as
    # without the colour search.
    grey_starts = [start for name, start in coarse.starts if name != "colour"]
    shared = gains_at(grey_starts[0]) if grey_starts else None
    gains = [gains_at(start) if name == "colour" else shared for name, start in coarse.starts]
    greys = {None: hr_grey} if None in gains else {}
    for applied in set(gains) - {None}:
        # Only the HR's grey changes; the gains are normalised so that white keeps its grey value (the clipping
        # thresholds stay where they are).
        scaled = np.asarray(applied, np.float64)
        greys[applied] = weighted_grey(hr, curves[1], np.asarray(weights) * (scaled / float(np.dot(weights, scaled))),
                                       dark_noise_sigma=hr_noise)
    return greys, gains


def _refined(lr_grey: np.ndarray, greys: dict, gains: list, coarse: CoarseStarts, *, ratio: float,
             saturated: tuple[np.ndarray | None, np.ndarray | None]) -> Registration:
    """:func:`refine_starts` on the balanced greys, with the winning start's HR channel gains recorded."""
    registration = refine_starts(lr_grey, [greys[g] for g in gains], coarse, ratio=ratio, saturated=saturated)
    applied = dict(zip((name for name, _ in coarse.starts), gains))[registration.coarse]
    return replace(registration, hr_channel_gains=applied and tuple(round(g, 4) for g in applied))


def texture_refusal(uncertainty: float, gate: str, note: str = "") -> str:
    """The reason a pair is refused for too little texture (``gate``: the limit it is above, as text)."""
    return (f"too little texture in the overlap to fix the geometry: corner uncertainty {uncertainty:.2f} LR px > "
            f"{gate} (flat or one-directional structure{note})")


def check_registration(registration: Registration, *, ratio: float, window: Sequence[int],
                       lr_shape: tuple[int, int], hr_shape: tuple[int, int],
                       max_uncertainty: float = MAX_UNCERTAINTY, confirmable: float | None = None) -> None:
    """Refuse registrations that cannot be right; raises :class:`RegistrationError` naming the failed check.

    ``max_uncertainty``: LR px of corner standard deviation (``registration.uncertainty``) above which the overlap
    is taken to have too little texture to fix the geometry. ``confirmable``: the corner uncertainty up to which a
    pair above it still passes, for its scene's other captures to confirm (align's scene check).
    """
    zoom = registration.zoom
    zoom_error = abs(zoom / ratio - 1)
    limit = max(max_uncertainty, confirmable or 0.0)

    def too_little_texture(note: str = "") -> RegistrationError:
        gate = f"{max_uncertainty:g}" + (f" ({limit:g} for its scene to confirm)" if limit > max_uncertainty else "")
        return RegistrationError(texture_refusal(registration.uncertainty, gate, note))

    if zoom_error > MAX_ZOOM_ERROR:
        if registration.uncertainty > max_uncertainty:
            # A fit that nothing holds drifts in magnification too (a chart's one flat patch filling the HR: 18-27 %
            # off, corners 7 LR px uncertain); "wrong focal lengths" would send the user to the wrong fix.
            # (Below the gate it can also be a chart matched to another of its patches: generator normal seed 10's
            # canon_g2 x3, 47 LR px off, 12 % off in magnification, corners 0.11 LR px uncertain.)
            raise too_little_texture(f"; the magnification drifted {zoom_error:.0%} off the focal ratio")
        raise RegistrationError(f"estimated magnification {zoom:.3f} is {zoom_error:.0%} off the focal "
                                f"ratio {ratio:.3f} (tolerance {MAX_ZOOM_ERROR:.0%}); wrong pair or wrong focal "
                                "lengths, or the match locked onto the wrong part of a repetitive scene")
    expected = (hr_shape[0] / zoom) * (hr_shape[1] / zoom)
    area = window[2] * window[3]
    too_small = area < MIN_OVERLAP * expected
    if registration.uncertainty > limit:
        # Named before the overlap: a fit that nothing holds implies any window (generator normal seed 28's canon_g2
        # chart x4: 128 LR px off, corners 1.1 LR px uncertain, a 130 x 32 px window), and "too little overlap"
        # would send the user to reframe captures that do overlap.
        raise too_little_texture(f"; the window it implies covers {area / expected:.0%} of the HR field"
                                 if too_small else "")
    if too_small:
        raise RegistrationError(f"too little overlap: the output window {window[2]}x{window[3]} LR px covers "
                                f"{area / expected:.0%} of the HR field (need {MIN_OVERLAP:.0%})")
    if registration.correlation < MIN_CORRELATION:
        raise RegistrationError(f"no reliable match: luma correlation {registration.correlation:.2f} after "
                                f"refinement < {MIN_CORRELATION}")


def distortion_check(reference: np.ndarray, test: np.ndarray, *, grid: int = 4) -> DistortionCheck:
    """Fit a radial model to the median residual shift of ``grid x grid`` regions (LR grid images)."""
    from ..quality import tile_shifts

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
