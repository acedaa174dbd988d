"""Agreement between the LR captures of one scene: a check on pairs that no single pair can check itself.

Every LR capture of a scene is registered to the same HR. Two of them, a wider ``b`` and a narrower ``a``, can also
be registered to each other directly: whole frames with all the scene's structure, where their windows onto the HR
field may hold only a flat chart. The chain ``b -> a -> HR`` must then put each pixel of ``b``'s window where ``b``'s
own mapping puts it. A pair matched to the wrong patch of a chart, or given a magnification its window cannot pin,
disagrees with its scene's other captures by whole pixels; the texture gate and the verifier see neither (they judge
a pair by its own window). Measured on the independent generator (benchmarks/independent/README.md): correct pairs
disagree by 0.004-0.31 LR px (median over the window), a 0.95-px and a 0.72-px error by 0.47-0.82, wrong-patch
matches by 3.6-5.2 (homographies only; docs/align.md, "The scene check", has the measurements with every term).

The direct registration can fail too (at a focal ratio of 1.32 one fitted a bent mapping, magnification 1.231,
104 LR px from both pairs' mappings, that passed every check of :func:`.estimate.check_registration`), so it is given
the chain as one more start (:func:`.estimate.register_captures`: the better fit wins), and a capture is refused only
when every comparison it has disagrees and none agrees (:func:`judge_scene`): in a scene of three captures one
failed direct registration costs nothing. Errors the captures share (the HR side of every pair) are not seen.

A pair that two captures agreeing with each other outvote is registered once more from where they put it
(:func:`scene_start`; align's ``_realign_from_scene``) before it is refused: a chart matched to another of its
patches is then found where it belongs, and kept only if it now agrees with every capture it is compared with.

A pair its scene confirms takes its mapping through the scene's narrowest capture (the one whose window holds the HR
field in the most LR px) where that chain is the better pinned by at least :data:`TRANSFER_MARGIN`
(:func:`chain_source`, :func:`fit_chain`; align's ``_transfer_from_scene``): an x4 window of a chart pins its corners
to 0.1-0.2 LR px, the x2 window of the same chart, carried through a registration of the two whole frames, to a
third of that.

A pair the texture gate alone would refuse (corner uncertainty up to :data:`.estimate.MAX_CONFIRMED_UNCERTAINTY`) is
written provisionally and kept only when a capture that passed the gate confirms it (:func:`judge_scene`): the
agreement of a sibling is the evidence its own window lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import numpy as np

from ..geometry import RadialDistortion, apply_homography, local_zoom, radial_basis, radial_term
from .estimate import MAX_ZOOM_ERROR, _round

GRID_STEP = 4  # LR px between the points of a window at which the two mappings are compared
# LR px of the wider capture: median disagreement above which two captures of a scene disagree. Set from a probe
# that ignored distortion terms (correct pairs up to 0.31); with them, over 57 sets of the independent harness,
# captures both within 0.25 px of the truth disagree by at most 0.21 (once 0.45, outvoted by the third capture),
# a pair 0.72-0.95 px off from its siblings by 0.44-0.78 (docs/align.md, "The scene check").
MAX_DISAGREEMENT = 0.4
# LR px: the 95th percentile of the disagreement above which two captures disagree whatever its median. Two mappings
# each within 1 LR px (the hard target's bound on any written pair) disagree by at most 2, so above it one of them is
# more than 1 px off on at least 5 % of the window: a fit bent at one side of a flat chart keeps the median under the
# limit (4000-6000 px frames, hard geometry, a nikon_d3100 chart x2 4.3 px RMS off, 17 px at a corner: median 0.39,
# p95 5.6 against its sibling). Captures both within 0.25 px of the truth reached p95 0.67 over 297 comparisons of 10
# held-out generator sets (session 19).
MAX_DISAGREEMENT_P95 = 2.0

# A pair takes the chain through its scene's narrowest capture only where the chain's corner uncertainty, carried
# to the pair's LR px, is at most this share of its own (or of its excess disagreement, where larger, since session
# 45: :func:`chain_source`). Fixed on the independent generator's development sets (session 21: normal seeds 9, 11,
# 21, 34-37; hard 2, 26, 40, 46-49, probed offline by benchmarks/independent/probe_scene_transfer.py) before the
# held-out seeds it is reported on.
TRANSFER_MARGIN = 0.5
# LR px: the largest distance over the pair's window between the chain and the record model fitted to it
# (:func:`fit_chain`) that is always allowed; beyond it the chain is written only where the margin leaves room for
# the difference (:func:`chain_fit_tolerance`).
CHAIN_FIT_TOLERANCE = 0.02
# The same for a pair refused on its own (align's step 6) or outvoted by its scene: there the chain replaces a
# refusal, not a registration that passed, and need only be good: within the 0.1 LR px the issue asks of a pair.
# Its chain composes three lenses' terms (its own, the source's, the HR's) that the record's two cannot hold
# exactly: 0.04-0.05 LR px on the hard generator's x4 charts (seed 40), beyond the 0.02 above.
REFUSED_CHAIN_FIT_TOLERANCE = 0.1

PointMap = Callable[[np.ndarray], np.ndarray]  # N x 2 points -> N x 2 points


@dataclass(frozen=True)
class Comparison:
    """Two captures of a scene (indices into the scene's list, ``wide`` the wider) and how far they disagree.

    ``median``, ``p95`` and ``max``: LR px of the wider capture over its window; ``None`` with ``error`` when the
    direct registration failed (the comparison then counts neither way)."""

    wide: int
    narrow: int
    median: float | None = None
    p95: float | None = None
    max: float | None = None
    start: str | None = None  # which start the direct registration kept ("hypothesis": the chain itself)
    error: str | None = None

    @property
    def p95_over(self) -> bool:
        """Its p95 exceeds :data:`MAX_DISAGREEMENT_P95` (a disagreement whatever the median)."""
        return self.p95 is not None and self.p95 > MAX_DISAGREEMENT_P95

    def agrees(self, limit: float = MAX_DISAGREEMENT) -> bool | None:
        return None if self.median is None else self.median <= limit and not self.p95_over

    def to_dict(self) -> dict:
        return {"wide": self.wide, "narrow": self.narrow, "median": _round(self.median), "p95": _round(self.p95),
                "max": _round(self.max), "start": self.start, "error": self.error}


def scene_start(wide_to_narrow: PointMap, sibling_to_hr: PointMap, sibling_window: Sequence[int], *,
                sibling_is_wide: bool, wide_shape: tuple[int, int], narrow_shape: tuple[int, int],
                samples: int = 128) -> np.ndarray | None:
    """The LR -> HR homography of a capture that a sibling's pair and their direct registration imply (``b -> a
    -> HR`` with the sibling on either side), fitted over the sibling's window: a start for registering the
    capture's pair again where its scene's captures agree its window lies. ``None`` when the two frames share too
    little of that window to fit it (fewer than 16 points of a ``samples`` x ``samples`` grid on the wide frame).

    A homography, not the chain itself: the chain passes through two radial terms, and refinement fits the
    capture's own from this start."""
    import cv2

    height, width = wide_shape[:2]
    gy, gx = np.mgrid[0:height - 1:samples * 1j, 0:width - 1:samples * 1j]
    wide = np.column_stack([gx.ravel(), gy.ravel()])
    narrow = wide_to_narrow(wide)
    x0, y0, w, h = sibling_window
    on_sibling = wide if sibling_is_wide else narrow
    keep = ((on_sibling[:, 0] >= x0) & (on_sibling[:, 0] <= x0 + w - 1)
            & (on_sibling[:, 1] >= y0) & (on_sibling[:, 1] <= y0 + h - 1)
            & (narrow[:, 0] >= 0) & (narrow[:, 0] <= narrow_shape[1] - 1)
            & (narrow[:, 1] >= 0) & (narrow[:, 1] <= narrow_shape[0] - 1))
    if np.count_nonzero(keep) < 16:
        return None
    own = (narrow if sibling_is_wide else wide)[keep]
    matrix, _ = cv2.findHomography(own, sibling_to_hr(on_sibling[keep]), 0)
    return None if matrix is None else matrix / matrix[2, 2]


def chain_source(index: int, focal_ratios: Sequence[float], verdicts: Sequence[str], comparisons: Sequence[Comparison],
                 uncertainties: Sequence[float], zooms: Sequence[float], *,
                 sources: Collection[int], excess: float | None = None) -> tuple[int, float] | None:
    """The capture whose mapping, chained through their direct registration, pair ``index`` takes, and the chain's
    corner uncertainty in the pair's LR px; ``None`` when its own is the better pinned.

    The source is the scene's narrowest written capture, and only where it is one of ``sources`` (passed the texture
    gate on its own, not itself registered from its scene), is ``"consistent"``, narrower than the pair, agrees
    with it (or the pair is ``"inconsistent"``: its scene outvotes its own mapping), and its corner
    uncertainty carried to the pair's LR px (``sigma_s * zoom_s / zoom_i``) is at most :data:`TRANSFER_MARGIN` of the
    pair's. Only the narrowest: an x3 that its window pinned to 0.04 LR px by its own measure was 0.28 off
    (generator normal seed 21, an affine fit missing perspective), and an x4 that took its mapping went from 0.05 to
    0.19 px; the x2 of the same scene was right. The direct registration's own uncertainty is left out: it is
    measured at the corners of the two whole frames' overlap, twice or more the pair's window, and the rule was
    measured without it.

    ``excess``: the pair's :func:`excess_disagreement` with its scene (align passes the larger of the median's and
    the p95's), which stands for its own error in the margin where it is larger than its corner uncertainty: the
    scene has measured the pair off by that much, whatever its window claims (generator normal seed 108's nikon_d90
    chart x4: corners 0.064 LR px by its own measure, 0.15 from both its siblings, which agreed to 0.0005, 0.19 off
    the truth; its x2's chain, carried at 0.052, was more than half the 0.064. Normal seed 111's olympus_c5050 chart
    x4, a similarity 0.33 px RMS off and 1.44 at a corner, claimed 0.062 and was 0.106 from its siblings by the
    median, 0.79 by the p95; its chain was carried at 0.068)."""
    source = min(range(len(focal_ratios)), key=lambda j: focal_ratios[j])
    if source not in sources or verdicts[source] != "consistent" \
            or verdicts[index] not in ("consistent", "inconsistent") or not focal_ratios[source] < focal_ratios[index]:
        return None
    if verdicts[index] == "consistent" and not any(c.wide == index and c.narrow == source and c.agrees()
                                                   for c in comparisons):
        return None
    carried = uncertainties[source] * zooms[source] / zooms[index]
    if carried > TRANSFER_MARGIN * max(uncertainties[index], excess or 0.0):
        return None
    return source, carried


def excess_disagreement(index: int, comparisons: Sequence[Comparison], zooms: Sequence[float], *,
                        statistic: str = "median") -> float | None:
    """LR px of capture ``index``: how much more it disagrees with each sibling it was compared with than those
    siblings disagree with each other (each comparison's ``statistic``, ``"median"`` or ``"p95"`` over the wider
    capture's window, carried to ``index``'s LR px by the captures' ``zooms``, HR px per LR px); ``None`` unless it
    was compared with two siblings that were compared with each other.

    A disagreement is shared between the two captures it compares; where two siblings agree with each other
    and both disagree with this capture by more, the excess is this capture's own error, whatever its corner
    uncertainty claims (its window can leave a direction free that its covariance does not show). The median reads
    an error spread over the window; the p95 one that grows towards a side or the corners (a magnification, a bend),
    as the corner uncertainty does."""
    def value(c: Comparison) -> float | None:
        return getattr(c, statistic)

    def carried(c: Comparison) -> float:
        return value(c) * zooms[c.wide] / zooms[index]

    own = [c for c in comparisons if index in (c.wide, c.narrow) and value(c) is not None]
    siblings = {c.narrow if c.wide == index else c.wide for c in own}
    mutual = [carried(c) for c in comparisons
              if value(c) is not None and index not in (c.wide, c.narrow) and {c.wide, c.narrow} <= siblings]
    if len(own) < 2 or not mutual:
        return None
    return max(0.0, min(carried(c) for c in own) - max(mutual))


def chain_fit_tolerance(own_uncertainty: float | None, carried: float = 0.0, excess: float | None = None) -> float:
    """LR px: how far the record model fitted to a chain (:func:`fit_chain`) may be from it for the pair to be
    written with it, the chain's carried to the pair being ``carried``; ``own_uncertainty``: the corner uncertainty
    of the pair's own registration where it passed, ``None`` where it does not stand (refused on its own, or
    outvoted by its scene: :data:`REFUSED_CHAIN_FIT_TOLERANCE`); ``excess``: the pair's
    :func:`excess_disagreement` with its scene.

    The chain replaces a registration that passed only where it is pinned at least :data:`TRANSFER_MARGIN` better
    (:func:`chain_source`); the fit's distance from the chain is one more error of the mapping written, so it may
    take what the margin leaves (``TRANSFER_MARGIN * own - carried``), never less than
    :data:`CHAIN_FIT_TOLERANCE` and never more than :data:`REFUSED_CHAIN_FIT_TOLERANCE`. A hard generator chart x4
    with corners 0.39 LR px uncertain by its own window (0.40 px off the truth) had a chain carried at 0.13 that the
    record's model fitted within 0.037 px, 0.04 px from the truth (generator hard seed 2). Where the scene shows the
    pair's own mapping off by more than its uncertainty says (``excess``), the chain may take what that leaves
    (``excess - carried``): a normal generator chart x4 (840-px frames, an affine fit) claimed 0.055 LR px at its
    corners and was 0.35 px off the truth (1.2 at a corner), 0.18 from both its siblings, which agreed with each
    other to 0.001; its chain, carried at 0.022, was fitted within 0.025 px and not written (generator normal seed
    104)."""
    if own_uncertainty is None:
        return REFUSED_CHAIN_FIT_TOLERANCE
    allowed = TRANSFER_MARGIN * own_uncertainty - carried
    if excess is not None:
        allowed = max(allowed, excess - carried)
    return max(CHAIN_FIT_TOLERANCE, min(REFUSED_CHAIN_FIT_TOLERANCE, allowed))


def unfitted_chain(tolerance: float) -> str:
    """Why a chain was not written: no record model fits it within ``tolerance`` LR px (:func:`chain_fit_tolerance`)."""
    return f"no record model fits the chain within {round(tolerance, 4):g} LR px"


def fit_chain(chain: PointMap, window: Sequence[int], zoom: float, frames: np.ndarray | None = None, *,
              samples: int = 24) -> tuple[np.ndarray, RadialDistortion | None, float]:
    """The record model (an LR -> HR homography, with radial terms of ``frames`` where the homography alone misses
    the chain by more than :data:`CHAIN_FIT_TOLERANCE`) nearest to ``chain`` over ``window`` (least squares on a
    ``samples`` x ``samples`` grid). Returns the homography, the radial terms (``None`` without) and the largest
    distance left, in LR px (``zoom``: HR px per LR px).

    A chain composes two mappings (the direct registration, the source's homography and radial terms), which no
    single record model holds exactly; over one window the difference is a few thousandths of a pixel."""
    from scipy.optimize import least_squares

    x0, y0, w, h = window
    gy, gx = np.mgrid[y0:y0 + h - 1:samples * 1j, x0:x0 + w - 1:samples * 1j]
    points = np.column_stack([gx.ravel(), gy.ravel()])
    target = chain(points)
    # Normalised coordinates keep the homography's parameters of one magnitude for the solver.
    p_centre, q_centre = points.mean(0), target.mean(0)
    p_scale, q_scale = points.std(), target.std()
    target_n = (target - q_centre) / q_scale
    # frames: rows (cx, cy, R) or (cx, cy, R, n) for a term of power n (:func:`.geometry.radial_shift`)
    powers = None if frames is None else [int(f[3]) if len(f) > 3 else 1 for f in frames]
    basis = [] if frames is None else [np.stack([dx * rho, dy * rho], 1) for dx, dy, rho, _ in
                                        radial_basis(points[:, 0], points[:, 1], [f[:3] for f in frames], powers)]

    def mapped(params, terms):
        moved = points + sum((k * b for k, b in zip(params[8:8 + terms], basis)), np.zeros_like(points))
        return apply_homography(np.append(params[:8], 1.0).reshape(3, 3), (moved - p_centre) / p_scale)

    def solve(terms, start):
        start = np.append(start, np.zeros(terms))
        fit = least_squares(lambda x: ((mapped(x, terms) - target_n) * q_scale / zoom).ravel(), start, method="lm",
                            xtol=1e-12, ftol=1e-12)
        residual = float(np.max(np.hypot(*((mapped(fit.x, terms) - target_n) * q_scale / zoom).T)))
        return fit.x, residual

    params, residual = solve(0, np.array([1.0, 0, 0, 0, 1, 0, 0, 0]))
    terms = 0
    if residual > CHAIN_FIT_TOLERANCE and basis:
        params, residual = solve(len(basis), params)
        terms = len(basis)
    normalised = np.append(params[:8], 1.0).reshape(3, 3)
    to_p = np.array([[1 / p_scale, 0, -p_centre[0] / p_scale], [0, 1 / p_scale, -p_centre[1] / p_scale], [0, 0, 1]])
    from_q = np.array([[q_scale, 0, q_centre[0]], [0, q_scale, q_centre[1]], [0, 0, 1]])
    matrix = from_q @ normalised @ to_p
    distortion = None if not terms else RadialDistortion(
        tuple(radial_term(k, frame, power) for k, frame, power in zip(params[8:], frames, powers)))
    return matrix / matrix[2, 2], distortion, residual


def comparison_plan(focal_ratios: Sequence[float], *, neighbours: int = 2) -> list[tuple[int, int]]:
    """Which captures to register to each other: each with its ``neighbours`` nearest in focal length (three
    captures: all three pairs, so that one failed comparison is outvoted). Returns ``(wide, narrow)`` indices."""
    order = sorted(range(len(focal_ratios)), key=lambda i: -focal_ratios[i])  # widest (largest ratio to HR) first
    plan = []
    for position, wide in enumerate(order):
        for narrow in order[position + 1:position + 1 + neighbours]:
            plan.append((wide, narrow))
    return plan


def chain_hypothesis(wide_to_hr: np.ndarray, narrow_to_hr: np.ndarray) -> np.ndarray:
    """The wide -> narrow homography that the two pairs' homographies imply (a start for the direct registration)."""
    chain = np.linalg.inv(np.asarray(narrow_to_hr, np.float64)) @ np.asarray(wide_to_hr, np.float64)
    return chain / chain[2, 2]


def expected_magnification(zoom: float, focal_ratio: float, chain: np.ndarray, point: tuple[float, float]) -> float:
    """The magnification a direct registration's ``zoom`` is checked against (:func:`.estimate.check_registration`):
    the chain's at ``point`` where ``zoom`` is within :data:`.estimate.MAX_ZOOM_ERROR` of it, else the ratio of the
    two LR focal lengths, as for any pair.

    Focal lengths are nominal: each capture's true zoom can be a few % off its own, and the ratio of two LR focal
    lengths off by the sum (up to 8 % on the independent generator, whose zooms are 4 % off). Over 57 of its sets,
    7 of the 8 failed direct registrations were right estimates refused by the 10 % tolerance against that ratio,
    leaving their pairs with one comparison fewer. A direct estimate that the pairs' own magnifications confirm is
    no wrong match; one that agrees with neither is still refused (so a pair given a wrong magnification does not
    turn its siblings' check into a failed registration)."""
    chained = local_zoom(chain, point)
    return chained if abs(zoom / chained - 1) <= MAX_ZOOM_ERROR else focal_ratio


def disagreement(wide_to_hr: PointMap, narrow_to_hr: PointMap, wide_to_narrow: PointMap, window: Sequence[int],
                 zoom: float) -> np.ndarray:
    """``|narrow_to_hr(wide_to_narrow(p)) - wide_to_hr(p)|`` on a :data:`GRID_STEP` grid of ``window`` (x, y, w, h
    in the wide capture), in LR px of the wide capture (``zoom``: its HR px per LR px)."""
    x0, y0, w, h = window
    gy, gx = np.mgrid[y0:y0 + h:GRID_STEP, x0:x0 + w:GRID_STEP].astype(np.float64)
    points = np.column_stack([gx.ravel(), gy.ravel()])
    chained = narrow_to_hr(wide_to_narrow(points))
    return np.hypot(*(chained - wide_to_hr(points)).T) / zoom


def compare(wide_to_hr: PointMap, narrow_to_hr: PointMap, wide_to_narrow: PointMap, window: Sequence[int],
            zoom: float, *, wide: int, narrow: int, start: str | None = None) -> Comparison:
    """A :class:`Comparison` from the :func:`disagreement` over the wide capture's window."""
    d = disagreement(wide_to_hr, narrow_to_hr, wide_to_narrow, window, zoom)
    return Comparison(wide, narrow, float(np.median(d)), float(np.percentile(d, 95)), float(d.max()), start)


def judge_scene(count: int, comparisons: Sequence[Comparison], *, provisional: Collection[int] = (),
                limit: float = MAX_DISAGREEMENT) -> list[str]:
    """Each capture's verdict: ``"consistent"`` (agrees with another capture), ``"inconsistent"`` (disagrees with
    every capture it was measured against: refuse it; two captures that disagree are both refused, since nothing
    tells which is wrong) or ``"unchecked"`` (alone in its scene, or every direct registration failed).

    ``provisional``: captures whose pairs the texture gate alone would refuse (corner uncertainty between
    :data:`.estimate.MAX_UNCERTAINTY` and :data:`.estimate.MAX_CONFIRMED_UNCERTAINTY`). Such a capture is
    ``"consistent"`` only when a capture that passed the gate on its own agrees with it and none disagrees, else
    ``"unconfirmed"`` (refuse it). Its comparisons count for no other capture, either way: its own evidence is the
    weaker (charts matched to the wrong patch lay just above the gate), and two provisional captures that agree may
    share their error."""
    provisional = set(provisional)
    agreed = [0] * count
    disagreed = [0] * count
    for comparison in comparisons:
        verdict = comparison.agrees(limit)
        if verdict is None:
            continue
        pair = (comparison.wide, comparison.narrow)
        for index, other in (pair, pair[::-1]):
            if other not in provisional:  # a provisional capture neither confirms nor contradicts another
                (agreed if verdict else disagreed)[index] += 1
    verdicts = []
    for i in range(count):
        if i in provisional:
            verdicts.append("consistent" if agreed[i] and not disagreed[i] else "unconfirmed")
        else:
            verdicts.append("consistent" if agreed[i] else "inconsistent" if disagreed[i] else "unchecked")
    return verdicts


def consistency_fields(ids: Sequence[str], comparisons: Sequence[Comparison], *, provisional: Collection[int] = (),
                       limit: float = MAX_DISAGREEMENT, lost: str | None = None) -> list[dict]:
    """Each capture's record of the check (align's ``consistency`` field): its verdict (:func:`judge_scene`), the
    comparisons it took part in (captures named by ``ids``) and, for a refused one, the ``reason``. ``lost``: why
    the check could not run (a worker lost; ``comparisons`` is then empty), recorded as the ``error``."""
    provisional = set(provisional)

    def measured(index: int, among: Collection[int]) -> str:
        return ", ".join(f"{ids[other]} by {c.median:.2f}" + (f" (p95 {c.p95:.2f})" if c.p95_over else "")
                         for c in comparisons if index in (c.wide, c.narrow)
                         and c.median is not None and (other := c.narrow if c.wide == index else c.wide) in among)

    everyone = range(len(ids))
    passed = [i for i in everyone if i not in provisional]
    fields = []
    for index, verdict in enumerate(judge_scene(len(ids), comparisons, provisional=provisional, limit=limit)):
        mine = [c for c in comparisons if index in (c.wide, c.narrow)]
        field = {"verdict": verdict, "limit": limit,
                 "comparisons": [c.to_dict() | {"wide": ids[c.wide], "narrow": ids[c.narrow]} for c in mine]}
        if lost is not None:
            field["error"] = lost
        if verdict == "inconsistent":
            field["reason"] = (f"inconsistent with its scene's other captures: registered to it directly, they put "
                               f"its window elsewhere in the HR ({measured(index, everyone)} LR px, median over the "
                               f"window; limit {limit}, p95 {MAX_DISAGREEMENT_P95:g}); a wrong match or scale that "
                               "its own window cannot show")
        elif verdict == "unconfirmed":
            confirming, others = measured(index, passed), measured(index, provisional)
            if lost is not None:
                why = f"the check was lost ({lost})"
            elif confirming:
                why = (f"the captures that passed the gate, registered to it directly, put its window this far from "
                       f"where its own mapping does: {confirming} LR px (median over the window; it needs one within "
                       f"{limit} and none beyond)")
            else:
                why = "no capture that passed the gate could be registered to it" + (
                    f" (captures above the gate, which confirm nothing: {others} LR px)" if others else "")
            field["reason"] = ("not confirmed by its scene's other captures, which a pair above the texture gate "
                               f"needs: {why}")
        fields.append(field)
    return fields
