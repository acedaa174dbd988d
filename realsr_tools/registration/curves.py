"""What two exposures of a scene say about a transfer curve neither capture's file states.

Registration compares linear light, and a file that states no curve is decoded as sRGB
(:mod:`realsr_tools.imaging.transfer`). Where it was encoded otherwise (a 2.2 power: Adobe RGB's, and what "gamma
2.2" encoders write; BT.709: LibRaw's and dcraw's default output curve, written without a profile), two captures
that differ in exposure or white balance are no longer a gain apart, and at a chart's black frame the fit reads the
difference as scale (a generator chart pair 0.36 LR px off as sRGB, 0.18 with its own curve). But two exposures of
one scene carry their own evidence: in light they differ by a gain (exposure, white balance, a smooth vignetting
surface) at every brightness under the right curve, and under a wrong one the ratio drifts towards black.

Asked at the coarse match, before any refinement, on the colour thumbnails the coarse search uses: the curve costs
no second registration (asked after the registration, it cost a 20-MP x2 pair 2.3 times its time,
benchmarks/bench_curve_estimate.py). The thumbnails average light under the assumed curve; on the flat pixels the
measure uses, a block average is the same under any curve, so each candidate's light is the assumed light encoded
again and decoded with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..geometry import scaling
from .coarse import colour_thumbnails
from .luma import encoded, linear

# The candidates. Pure powers differ only in their exponent, which exposures cannot tell apart (a gain in light is
# a gain under any power), so one stands for all of them; the curves differ in their toe, where sRGB and BT.709
# leave a power.
EXPOSURE_CURVES = ("srgb", "bt709", "power:2.2")
# A candidate replaces the assumed sRGB only where sRGB bends the captures' light ratio by at least MIN_BEND and the
# candidate by at most FLATTER times that, or by at least SMALL_BEND and the candidate by at most SMALL_BEND_FLATTER
# times that (a smaller bend overturns the assumption only where the candidate is near the measure's floor),
# measured on at least MIN_SAMPLES flat pixel values in at least MIN_LEVELS (brightness level, channel) cells of
# MIN_LEVEL_SAMPLES values each (docs/align.md, "A curve no file states", for the sets they were fixed on).
MIN_BEND = 0.02
FLATTER = 0.5
SMALL_BEND = 0.01
SMALL_BEND_FLATTER = 0.2
MIN_SAMPLES = 20_000
MIN_LEVELS = 6
MIN_LEVEL_SAMPLES = 100
# Brightness levels (encoded value, the HR's): below 0.1 noise and its clipping at black bias the light's mean,
# above 0.95 a channel may be clipped in one capture.
LEVELS = (0.1, 0.15, 0.22, 0.32, 0.45, 0.6, 0.75, 0.95)
FLAT_GRADIENT = 0.004  # encoded value per px (Gaussian sigma 1.5): flatter pixels are away from edges


@dataclass(frozen=True)
class CurveEstimate:
    """What :func:`curve_from_exposures` found: the candidate to decode both captures with (``None``: the evidence
    does not overturn the assumed curve), each candidate's bend (``None``: too little evidence to measure), and the
    number of flat pixel values it rests on."""

    curve: str | None
    bend: dict[str, float | None]
    samples: int

    def to_dict(self) -> dict:
        return {"curve": self.curve, "samples": self.samples,
                "bend": {name: None if value is None else round(value, 4) for name, value in self.bend.items()},
                "measure": "RMS over brightness levels of the log ratio of HR light to a per-channel quadratic "
                           "gain surface times LR light, relative to the spread of log HR light (0: a gain "
                           "apart); on the coarse match's colour thumbnails"}

    @classmethod
    def from_dict(cls, record: dict) -> "CurveEstimate":
        return cls(record["curve"], dict(record["bend"]), record["samples"])


def scene_curve(estimates: Sequence[CurveEstimate | None], *, assumed: str = "srgb") -> tuple[str | None, list[int]]:
    """The curve a scene's pairs found in their exposures, and the indices of the undecided pairs that take it.

    ``estimates``: each pair's :class:`CurveEstimate` (``None`` where its files state their curve and nothing was
    asked). A scene's pairs share its HR capture, so one curve encodes them all; but a pair whose LR is exposed
    like the HR cannot tell (sRGB bends its light ratio less than MIN_BEND) and keeps the assumed curve, the HR
    decoded differently from its siblings (generator hard seed 9's 720-px photograph: its x4 finds power 2.2, its x3,
    0.06 EV from the HR, stays sRGB and is written 0.30 LR px off, 0.15 as power). Where every pair that decided
    found the same curve, each pair that did not takes it unless its own exposures contradict it (bend it by
    MIN_BEND or more, and more than the assumed curve). Pairs that decided differently leave the scene as it is."""
    decided = {estimate.curve for estimate in estimates if estimate is not None and estimate.curve is not None}
    if len(decided) != 1:
        return None, []
    curve = decided.pop()

    def contradicts(estimate: CurveEstimate) -> bool:
        bend, own = estimate.bend.get(curve), estimate.bend.get(assumed)
        return bend is not None and bend >= MIN_BEND and (own is None or bend > own)

    return curve, [i for i, estimate in enumerate(estimates)
                   if estimate is not None and estimate.curve is None and not contradicts(estimate)]


# A camera's curve reaches a scene none of whose pairs decided, on the word of its other scenes, where at least this
# many of its pairs decided, all alike. One pair's decision can be wrong (4000-6000 px hard seed 12's nikon_d90 x2
# found BT.709 in 2.2 power files, docs/align.md, "One curve per scene"), and where it is its camera's only decision it
# would reach every undecided scene of the camera: a lone decision reaches only a scene whose own exposures lean its
# way (session 49).
MIN_CAMERA_DECIDERS = 2


def camera_curve(scenes: Sequence[Sequence[CurveEstimate | None]], *,
                 assumed: str = "srgb") -> tuple[str | None, list[tuple[int, int]]]:
    """The curve one camera's scenes found in their exposures, and the ``(scene, pair)`` indices of the pairs that
    take it: those of the scenes in which no pair decided.

    ``scenes``: each scene's pairs' estimates, as for :func:`scene_curve`, for the scenes of one camera and file type
    (its JPEG engine, or the raw converter that wrote its TIFFs, encodes every file alike). A scene whose pairs are
    all exposed like their HR decides nothing and keeps the assumed curve, though another scene of the same camera
    tells it: generator hard 111's nikon_d90 chart (BT.709 files, three cameras, each with scenes that found
    BT.709 and none that found another curve) was written 0.155 / 0.102 / 0.080 LR px off as sRGB, 0.047 / 0.031 /
    0.025 as BT.709. Where every pair of the camera that decided found the same curve, the pairs of an undecided
    scene take it, unless the exposures of one of them lean the other way (bend it more than the assumed curve): the
    evidence is another scene's, so the scene rule's margin (MIN_BEND) is not asked for, and a scene takes it whole
    or not at all (its pairs share one HR capture). Where fewer than MIN_CAMERA_DECIDERS decided, a scene takes it
    only where its own exposures also lean its way (one of its pairs bends it less than the assumed curve): generator
    hard 118's canon_5dmk3 photograph and nikon_d3100 chart (BT.709 files; 0.21, 0.22 and 0.35 LR px off as sRGB)
    had one deciding pair in their camera's other scenes."""
    estimates = [e for scene in scenes for e in scene if e is not None and e.curve is not None]
    decided = {e.curve for e in estimates}
    if len(decided) != 1:
        return None, []
    curve = decided.pop()
    lone = len(estimates) < MIN_CAMERA_DECIDERS

    def leans(estimate: CurveEstimate, *, away: bool) -> bool:
        bend, own = estimate.bend.get(curve), estimate.bend.get(assumed)
        return bend is not None and own is not None and (bend > own if away else bend < own)

    takers = []
    for i, scene in enumerate(scenes):
        measured = [e for e in scene if e is not None]
        if any(e.curve is not None or leans(e, away=True) for e in measured):
            continue
        if lone and not any(leans(e, away=False) for e in measured):
            continue
        takers += [(i, j) for j, e in enumerate(scene) if e is not None]
    return curve, takers


def exposure_curve(lr: np.ndarray, hr: np.ndarray, lr_to_hr: np.ndarray, *, ratio: float, assumed: str = "srgb",
                   thumbnails: tuple | None = None) -> CurveEstimate:
    """:func:`curve_from_exposures` of an LR and an HR capture (RGB, any dtype :func:`.luma.linear` reads), both
    decoded with the ``assumed`` curve, where ``lr_to_hr`` (a coarse match is enough) puts them: on the colour
    thumbnails of :func:`.estimate.register_captures` (``thumbnails``: ``(lr, lr factors, hr, hr factors)`` as
    :func:`.coarse.colour_thumbnails` makes them; made here where not given)."""
    import cv2

    if thumbnails is None:
        thumbnails = colour_thumbnails(lr, hr, ratio=ratio, curves=(assumed, assumed))
    lr_light, lr_factors, hr_light, hr_factors = thumbnails
    to_thumbnail = np.linalg.inv(scaling(*hr_factors)) @ np.asarray(lr_to_hr, np.float64) @ scaling(*lr_factors)
    size = (lr_light.shape[1], lr_light.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    hr_on_lr = cv2.warpPerspective(hr_light, to_thumbnail, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    overlap = cv2.warpPerspective(np.ones(hr_light.shape[:2], np.uint8), to_thumbnail, size, flags=flags,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return curve_from_exposures(lr_light, hr_on_lr, assumed=assumed, overlap=overlap)


def curve_from_exposures(lr_light: np.ndarray, hr_light: np.ndarray, *, assumed: str = "srgb",
                         overlap: np.ndarray | None = None) -> CurveEstimate:
    """The curve under which two captures of a scene, neither stating its own, are a gain apart.

    ``lr_light``, ``hr_light``: ``H x W x 3`` float32 linear light of the two, decoded with the ``assumed`` curve,
    on one grid (the HR brought onto the LR's); ``overlap``: where the HR covers it (default: everywhere). On flat
    pixels (away from edges, so a residual misalignment or the blur difference does not enter), each candidate's
    HR light is fitted as a per-channel quadratic gain surface times the LR's (the photometric correction's surface
    and direction, without its offset: exposures are a gain), and what is left is measured per brightness level (a
    ratio of sums: noise averages out in light). Where the exposures and white balance are the same, every curve
    leaves the two a gain apart and nothing is decided.
    """
    import cv2

    h, w = lr_light.shape[:2]
    if h < 8 or w < 8 or h * w * 3 < MIN_SAMPLES:
        return CurveEstimate(None, dict.fromkeys(EXPOSURE_CURVES), 0)  # too small to hold the evidence
    lr_code, hr_code = (encoded(light, assumed) for light in (lr_light, hr_light))
    grey = cv2.GaussianBlur(hr_code.mean(axis=2), (0, 0), 1.5)
    gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)) / 8
    flat = gradient < FLAT_GRADIENT
    if overlap is not None:
        flat &= overlap
    flat = cv2.erode(flat.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    low, high = LEVELS[0], LEVELS[-1]
    usable = [flat & (lr_code[..., c] > low) & (lr_code[..., c] < high) & (hr_code[..., c] > low)
              & (hr_code[..., c] < high) for c in range(3)]
    samples = int(sum(mask.sum() for mask in usable))
    if samples < MIN_SAMPLES:
        return CurveEstimate(None, dict.fromkeys(EXPOSURE_CURVES), samples)
    v, u = np.mgrid[0:h, 0:w]
    u, v = 2 * u / (w - 1) - 1, 2 * v / (h - 1) - 1
    basis = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1).astype(np.float64)  # photometric.TERMS
    bend = {}
    for curve in EXPOSURE_CURVES:
        light = [lr_light, hr_light] if curve == assumed else [linear(code, curve) for code in (lr_code, hr_code)]
        bend[curve] = _bend(*(cv2.GaussianBlur(image, (0, 0), 1.0) for image in light), usable, hr_code, basis)
    return CurveEstimate(overturning_curve(bend, assumed=assumed), bend, samples)


def overturning_curve(bend: dict[str, float | None], *, assumed: str = "srgb") -> str | None:
    """The candidate whose ``bend`` overturns the ``assumed`` curve's, or ``None``: the least bent candidate where
    the assumed curve bends at least MIN_BEND and it at most FLATTER times that, or at least SMALL_BEND and it at
    most SMALL_BEND_FLATTER times that. A bend of 0.01-0.02 is within what a file's own curve can show (on the
    generator's sRGB files up to 0.053, a dark frame's vignetting among the causes), so there only a candidate near
    the measure's floor (0.0006-0.0032 where it was the files' curve) tells."""
    own = bend.get(assumed)
    others = {name: value for name, value in bend.items() if name != assumed and value is not None}
    if own is None or not others:
        return None
    best = min(others, key=others.get)
    tiers = ((MIN_BEND, FLATTER), (SMALL_BEND, SMALL_BEND_FLATTER))
    return best if any(own >= least and others[best] <= flatter * own for least, flatter in tiers) else None


def _bend(lr: np.ndarray, hr: np.ndarray, usable: list[np.ndarray], hr_code: np.ndarray,
          basis: np.ndarray) -> float | None:
    """How far ``hr`` (light) is from a gain surface times ``lr`` across brightness levels (see
    :class:`CurveEstimate`); ``None`` below :data:`MIN_LEVELS` measured cells."""
    offsets, counts, spreads = [], [], []
    for c, mask in enumerate(usable):
        if mask.sum() < MIN_LEVEL_SAMPLES:
            continue
        # The HR's light from the LR's, as the photometric correction maps them: over the window, the HR's
        # vignetting (its whole frame's) is a quadratic surface and the LR's nearly flat, so their ratio is one;
        # the other way round it is 1 / quadratic, whose misfit a chart's patches read as a bend.
        target, light = hr[..., c][mask].astype(np.float64), np.maximum(lr[..., c][mask].astype(np.float64), 1e-6)
        design = basis[mask] * light[:, None]
        weights = np.ones(len(target))
        for _ in range(4):  # Huber weights on the relative residual
            coefficients = np.linalg.lstsq(design * weights[:, None], target * weights, rcond=None)[0]
            relative = (target - design @ coefficients) / light
            scale = 1.4826 * np.median(np.abs(relative)) + 1e-9
            weights = np.sqrt(np.minimum(1.0, 2.0 * scale / np.maximum(np.abs(relative), 1e-12)))
        model = design @ coefficients
        code = hr_code[..., c][mask]
        spreads.append(np.std(np.log(np.maximum(target, 1e-6))))
        for low, high in zip(LEVELS[:-1], LEVELS[1:]):
            level = (code >= low) & (code < high)
            if level.sum() >= MIN_LEVEL_SAMPLES and model[level].sum() > 0 and target[level].sum() > 0:
                offsets.append(np.log(target[level].sum() / model[level].sum()))
                counts.append(level.sum())
    if len(offsets) < MIN_LEVELS or not np.mean(spreads) > 0:
        return None
    return float(np.sqrt(np.average(np.square(offsets), weights=counts)) / np.mean(spreads))
