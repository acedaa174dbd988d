"""Independent verification of an aligned LR/HR pair: the residual displacement field over the whole window.

The verifier judges a registration without sharing its model or its code: it knows nothing of homographies, radial
terms or the focal ratio, and it does not call :mod:`realsr_tools.registration` or :mod:`realsr_tools.quality`. It
looks only at the two images a user gets, and asks at every place where the content can pin a displacement how far
the HR content sits from the LR content.

Method
------
1. Both images become grey (BT.601 luma); the test is blurred to the reference's blur (:func:`match_blur`: the
   Gaussian, among :data:`BLUR_SIGMAS`, that makes the two correlate best), and both are smoothed with a Gaussian
   of :data:`SMOOTH_SIGMA` LR px (aliasing, noise and demosaicking residue are not displacement; the same
   symmetric blur on both does not move anything). Why the blur matching: a tile cuts structure off at its border,
   and where one capture is blurrier the structure outside spreads into the tile on one side only, which a
   translation reads as displacement (measured on realsr's simulated hard captures, LR optics blur up to 1.2 px:
   whole rows of tiles read 0.25-0.49 LR px on a pair registered to 0.05 px, and the pair was refused).
2. Overlapping square tiles (side :func:`tile_size`: 32 px on windows under 256 px, 64 px otherwise; half-tile
   stride) cover the *whole* window, the first and last tile of each row and column flush with the window's edges
   so the corners are measured; at most :data:`MAX_TILES_PER_AXIS` tiles per axis, evenly spread. A window whose
   longer side exceeds that many tiles end to end (1024 px) is measured on its area-downscaled copy (by 2, 4, ...:
   :func:`pyramid_factor`) where they touch, and the tiles are reported in window pixels: spread with gaps, 64-px
   tiles fell inside the flat patches of a chart photographed at 20 MP (0 of 256 measured), 256-px tiles at a
   quarter of the size hold its corners (112 of 208).
   *Clipped channels* (``clipped``, given by the caller who knows the captures): a colour channel saturated in one
   capture and not the other changes the grey of that colour's patches only, so a tile holding several patches sees
   no single gain and offset between the two and reads the edges between them as displacement (a generator chart
   whose LR red clipped on 54 % of the window, registered to 0.05 px: tiles 0.3-0.7 px, refused). A channel
   *biases* a pixel where it is clipped in one capture only (the mask says which: :data:`CLIPPED_REFERENCE`,
   :data:`CLIPPED_TEST`), or in both where the two images disagree by more than :data:`CLIP_TOLERANCE` (clipped in
   both at equal exposure biases nothing). Clipped in one capture only, it biases even where the two values happen
   to agree: the plateau is flat in one image and shaded in the other (a generator chart at 4000-6000 px, its LR
   green clipped on 26 % of the window and within 5 % of the HR on most of it: 16 of 19 tiles read 0.18-0.50 LR px
   where the truth is 0.02, and a pair registered to 0.035 px was refused; since version 7). A channel biasing more than
   :data:`CLIP_SHARE` of a tile's reach (its smoothing and drift) is left out of that tile's grey (BT.601 weights of
   the others renormalised, the flatness threshold raised by the noise that adds). A pixel where *every* channel
   biases (a highlight saturated in one capture only: its plateau is flat in one image and shaded in the other, and
   the edge around it moves with the exposure) has no grey free of it: it and the pixels its smoothing and the blur
   matched reach are left out of the tile's fit, and a tile left with under :data:`MIN_UNCLIPPED` of its pixels is
   **clipped**, unmeasurable (a generator pair registered to 0.04 LR px, its LR 0.75 EV over the HR with a white sky
   clipped on 53-67 % of the window: the tiles at the sky's edge read 0.4-0.7 px and it was refused). A highlight
   clipped in both captures alike is not counted, and keeps its pixels.
3. *Measurability* of each tile from the structure tensor ``J = sum(grad grad^T)`` of the LR tile: its smaller
   eigenvalue per pixel below the flatness threshold is **flat**, a ratio of smaller to larger eigenvalue below
   :data:`MIN_ISOTROPY` is **one-dimensional** (a straight edge or stripes pin the displacement across them only: the
   aperture problem). Both are *unmeasurable*, never *aligned*. The threshold is :data:`MIN_EIGEN` (set on encoded
   values: wash's). In linear light (``linear_light``: align's) a dark scene or an under-exposed capture keeps a
   fraction of its encoded gradients, and with that one threshold generator frames of 4000-6000 px and the 20-MP
   speed pair measured no tile at all; there the threshold falls with the window's bright level (the reference
   grey's :data:`BRIGHT_PERCENTILE`) squared, so the same content exposed lower is the same measurement, but never
   below :data:`NOISE_MARGIN` times what the tile's own noise makes (:func:`_flat_threshold`).
4. *Displacement* of each measurable tile: phase correlation (Hann window) for the start, then Lucas-Kanade
   iterations of a translation with a per-tile gain and offset (exposure and colour differences left by the
   photometric correction do not bias it), the HR resampled with a cubic B-spline at exact positions. A tile whose iterations do not converge,
   wander more than :data:`MAX_DRIFT` px from the phase-correlation start, or whose matched content correlates
   below :data:`MIN_MATCH` is **mismatched** (a moving object, a repeated pattern, or content that is not the same).
   A tile whose displacement's standard deviation (from the fit's residual and the structure tensor) exceeds
   :data:`MAX_TILE_SIGMA` is **noisy**: unmeasurable like a flat one.
5. *Field*: the magnitudes of the measured tile displacements give the median, the 95th percentile and the maximum
   (``p95_excess``: the 95th percentile of each magnitude less twice its standard deviation, what the tiles show
   beyond their noise);
   a robust (Huber-weighted) affine fit ``d(x, y) = A (x, y) + b`` of the displacement field is evaluated at the
   corners of every measured tile (its largest value on the measured area is at one of them), so a roll or a scale
   error whose centre is right (it bends only the corners) is caught from all the tiles, not only the corner ones.
   The fit's covariance (from the tiles' sigmas, inflated by the reduced chi-square of its residuals when they
   scatter more than the sigmas say) gives the standard error ``sigma(p)`` of the fitted field at every such corner
   ``p``, which grows where the field is extrapolated from few or clustered tiles. The judged value is
   ``field = max_p (|d(p)| - sigmas * sigma(p))``: with ``sigmas`` > 0 the field's lower confidence bound (wash,
   :data:`DEFAULT_SIGMAS`: a pair is dropped only where it is misaligned with confidence), with ``sigmas`` < 0 its
   upper bound (align, -1: a pair is written only where its field is within the limit with confidence), 0 the
   point estimate. With too few tiles, or tiles on one line, for an affine fit the weighted mean translation of the
   tiles (and its standard error) stands in for the field.

Verdict (:attr:`Verification.verdict`): ``unmeasurable`` when fewer than :data:`MIN_TILES` tiles could be measured
(and the content did not mismatch); ``misaligned`` when ``field`` (above: the fitted field less ``sigmas``
standard errors; the largest point estimate is ``corner``) exceeds the limit anywhere on the measured area,
when ``p95_excess`` of the single tiles exceeds ``p95_factor`` times the limit (a local, non-affine error), or when
most textured tiles mismatch; ``aligned`` otherwise.

Calibration (wash's defaults :data:`DEFAULT_LIMIT`, :data:`DEFAULT_SIGMAS`, :data:`DEFAULT_P95_FACTOR`): chosen on
the 100 real RealSR x4 pairs only, untouched and with copies damaged by known sub-pixel shifts, rolls and scale
errors, and tested on the 93 DRealSR x4 pairs held out (printed by ``benchmarks/bench_wash_calibration.py``;
docs/crop_wash.md): among the settings that keep >= 95 % of the tuning half's untouched measurable pairs, the one
that drops most of its weakest damaged family (0.5 px shift, 0.3 deg roll, 0.5 % scale).

Convention
----------
``reference`` (the written LR, photometrically corrected) and ``test`` (the HR output area-downscaled to the LR
grid) are ``H x W`` or ``H x W x 3`` float images in [0, 1] on the same pixel grid. Points are ``(x, y)`` with pixel
centres at integer coordinates and ``(0, 0)`` the centre of the window's top-left pixel. A displacement
``d = (dx, dy)`` at ``p`` means ``test(p + d)`` shows what ``reference(p)`` shows, in LR pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

VERSION = 7  # bump when the method or a constant changes: cached verdicts (wash) are recomputed
SMOOTH_SIGMA = 1.0  # LR px, both images
SMALL_WINDOW = 256  # windows whose shorter side is under this get SMALL_TILE tiles
SMALL_TILE = 32
LARGE_TILE = 64
MIN_TILE = 16  # a window shorter than this on a side cannot be measured
MAX_TILES_PER_AXIS = 16
MIN_EIGEN = 2e-5  # smaller structure-tensor eigenvalue per pixel (grey levels^2 per px^2) below which a tile is flat
# In linear light MIN_EIGEN holds for a window whose bright level (BRIGHT_PERCENTILE of the reference's grey) is full
# scale. A darker window (a capture 0.7 EV under, a dark scene) has the same structure at a lower level: its threshold
# falls with the level squared, never below NOISE_MARGIN times the eigenvalue the tile's own noise makes (noise-only
# tiles would mismatch, and most tiles mismatching is a refusal). See :func:`_flat_threshold`.
BRIGHT_PERCENTILE = 99
NOISE_MARGIN = 4.0
MIN_ISOTROPY = 0.04  # smaller / larger eigenvalue below which a tile has one edge direction only
MIN_MATCH = 0.6  # correlation of the LR tile with the displaced HR tile below which the content does not match
# LR px: a tile whose displacement has a larger standard deviation (noise, motion blur) is "noisy": at two sigma it
# cannot tell an aligned tile from one at the limit, so it is unmeasurable, not evidence either way.
MAX_TILE_SIGMA = 0.2
MAX_DRIFT = 2.0  # LR px the Lucas-Kanade iterations may move away from the phase-correlation start
MAX_ITERATIONS = 20
# LR px: a tile whose iterations still move by more than this after MAX_ITERATIONS did not converge. Noisy or
# blur-mismatched tiles settle into a small oscillation (steps of 0.005-0.04 px on the simulated hard captures) rather
# than under the 1e-3 px stop; that is their noise, not a mismatch.
MAX_FINAL_STEP = 0.05
# Gaussian sigmas (LR px) :func:`match_blur` tries on the test, judged on the central BLUR_REGION^2 px at most
BLUR_SIGMAS = (0.35, 0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0)
BLUR_REGION = 768
MIN_TILES = 3  # measured tiles needed for a verdict other than "unmeasurable"
MIN_AFFINE_TILES = 6
SIGMA_FLOOR = 0.03  # LR px added in quadrature to every tile's sigma: no tile is trusted beyond this
# Wash's calibration (module docstring): tuned on the RealSR x4 half of the 193 real pairs, tested on the DRealSR x4
# half. LR px: the fitted field must exceed DEFAULT_LIMIT by DEFAULT_SIGMAS standard errors somewhere on the measured
# area, or the tile p95 beyond noise exceed DEFAULT_P95_FACTOR x DEFAULT_LIMIT. A 0.3 deg roll or a 0.5 % scale
# error moves a 128-px window's corners by 0.45-0.47 px; the confidence bound lets the limit sit well below that
# without dropping untouched pairs whose corner is extrapolated from a few noisy tiles.
CLIP_LEVEL = 1.0  # share of a format's range at or above which a channel counts as saturated
# Bits of the clipped mask (:func:`clipped_channels`): which capture holds the channel at its top value.
CLIPPED_REFERENCE = 1  # the LR
CLIPPED_TEST = 2  # the HR, anywhere in the LR pixel's area
CLIP_TOLERANCE = 0.05  # relative difference of the two images at a clipped pixel above which clipping biases it
CLIP_FLOOR = 0.05  # level (in the images' own units) below which CLIP_TOLERANCE is taken of this instead
# Share of a tile's reach a channel may bias (clipped in one capture, or disagreeing) and still be measured on: a few
# clipped pixels bias a tile little, and leaving a channel out costs signal (RealSR Nikon_049, 1-6 % of red in its
# tiles: measured without red its affine field rose from 0.15 to 0.31 px and wash dropped it). Chosen on the RealSR
# half of the real pairs (wash's tuning half); the chart tiles the mask is for are 10-60 % clipped.
CLIP_SHARE = 0.10
# Share of a tile that must be left once the pixels near a highlight clipped in every channel of one capture only are
# left out (:func:`_measure_level`); a tile with less is "clipped", unmeasurable.
MIN_UNCLIPPED = 0.5
DEFAULT_LIMIT = 0.30
DEFAULT_SIGMAS = 1.5
DEFAULT_P95_FACTOR = 2.0


@dataclass(frozen=True)
class Verification:
    """The residual displacement field of one pair over its whole window (LR px; see the module docstring).

    ``median``, ``p95``, ``max``: magnitudes over the measured tiles (``None`` when none was measured). ``corner``:
    largest magnitude of the affine fit at the four corners of the measured area (``None`` with fewer than
    :data:`MIN_AFFINE_TILES` measured tiles). ``affine``: ``(a11, a12, b1, a21, a22, b2)`` with
    ``d = [[a11, a12], [a21, a22]] (x - cx, y - cy) + (b1, b2)`` about the window centre ``(cx, cy)``. ``worst``:
    ``(x, y)`` centre of the tile with the largest displacement, in window pixels. ``measurable``: fraction of the
    window's area covered by measured tiles. ``tiles``: measured tiles; ``mismatched``: textured tiles whose content
    did not match; ``noisy``: tiles too noisy to measure; ``total_tiles``: tiles looked at. ``p95_excess``: 95th
    percentile of ``|d| - 2 sigma`` (floored at 0) over the measured tiles, gated against ``p95_factor`` x the limit.
    ``field``: the judged bound ``max_p (|d(p)| - sigmas * sigma(p))`` of the fitted field over the corners
    ``p`` of the measured tiles (the mean translation's where no affine field could be fitted; ``None`` with fewer
    than :data:`MIN_TILES` measured tiles); ``field_sigma``: the standard error ``sigma(p)`` where that maximum is.
    """

    verdict: str  # "aligned", "misaligned" or "unmeasurable"
    reason: str
    median: float | None
    p95: float | None
    p95_excess: float | None
    max: float | None
    corner: float | None
    bend: float | None
    measurable: float
    tiles: int
    mismatched: int
    noisy: int
    total_tiles: int
    tile: int
    worst: tuple[float, float] | None
    affine: tuple[float, ...] | None
    limit: float
    field: float | None = None
    field_sigma: float | None = None
    sigmas: float = DEFAULT_SIGMAS
    p95_factor: float = DEFAULT_P95_FACTOR
    blur: float = 0.0  # LR px: Gaussian sigma by which the test (HR) was blurred to match the reference (LR)
    version: int = VERSION

    @property
    def roll_deg(self) -> float | None:
        """Rotation of the fitted field (degrees, positive clockwise on the image: y points down)."""
        if self.affine is None:
            return None
        return float(np.degrees((self.affine[3] - self.affine[1]) / 2))

    @property
    def scale_error(self) -> float | None:
        """Relative magnification error of the fitted field (0.005: HR content 0.5 % too large)."""
        if self.affine is None:
            return None
        return float((self.affine[0] + self.affine[4]) / 2)

    @property
    def field_estimate(self) -> float | None:
        """The fitted field's point estimate where the judged bound ``field`` is (``sigmas`` standard errors back)."""
        return None if self.field is None else self.field + self.sigmas * self.field_sigma

    def with_limit(self, limit: float, *, p95_factor: float | None = None) -> Verification:
        """The same measurement judged against another limit (and tile-p95 factor); ``sigmas`` stays as measured."""
        p95_factor = self.p95_factor if p95_factor is None else float(p95_factor)
        verdict, reason = _judge(self, limit, p95_factor)
        return replace(self, verdict=verdict, reason=reason, limit=float(limit), p95_factor=p95_factor)

    def to_dict(self) -> dict:
        def r(value, digits=4):
            return None if value is None else round(float(value), digits)

        return {"verdict": self.verdict, "reason": self.reason, "median": r(self.median), "p95": r(self.p95),
                "p95_excess": r(self.p95_excess),
                "max": r(self.max), "corner": r(self.corner), "bend": r(self.bend), "field": r(self.field),
                "field_sigma": r(self.field_sigma), "sigmas": self.sigmas, "p95_factor": self.p95_factor,
                "limit": self.limit,
                "measurable": r(self.measurable, 3), "tiles": self.tiles, "mismatched": self.mismatched,
                "noisy": self.noisy,
                "total_tiles": self.total_tiles, "tile": self.tile,
                "worst": None if self.worst is None else [r(v, 1) for v in self.worst],
                "affine": None if self.affine is None else [float(f"{v:.6g}") for v in self.affine],
                "roll_deg": r(self.roll_deg), "scale_error": r(self.scale_error, 5), "blur_matched": self.blur,
                "version": self.version}

    @classmethod
    def from_dict(cls, data: dict) -> Verification:
        return cls(verdict=data["verdict"], reason=data["reason"], median=data["median"], p95=data["p95"],
                   p95_excess=data["p95_excess"], noisy=data["noisy"],
                   max=data["max"], corner=data["corner"], bend=data["bend"], measurable=data["measurable"],
                   tiles=data["tiles"],
                   mismatched=data["mismatched"], total_tiles=data["total_tiles"], tile=data["tile"],
                   worst=None if data["worst"] is None else tuple(data["worst"]),
                   affine=None if data["affine"] is None else tuple(data["affine"]), limit=data["limit"],
                   # A version-1 record was judged on the point estimate of the fitted corner, tile p95 at 2.5 x.
                   field=data.get("field", data["corner"]),
                   field_sigma=data.get("field_sigma", None if data["corner"] is None else 0.0),
                   sigmas=data.get("sigmas", 0.0), p95_factor=data.get("p95_factor", 2.5),
                   blur=data.get("blur_matched", 0.0), version=data["version"])


@dataclass(frozen=True)
class TileMeasure:
    """One tile: its centre ``(x, y)``, its class and, when measured, its displacement ``(dx, dy)``."""

    x: float
    y: float
    kind: str  # "measured", "flat", "one-dimensional", "clipped", "mismatched", "noisy"
    dx: float = float("nan")
    dy: float = float("nan")
    match: float = float("nan")
    sigma: float = float("nan")  # LR px: standard deviation of the displacement from the fit's residual


LUMA = (0.299, 0.587, 0.114)  # BT.601 weights of R, G, B


def grey(image: np.ndarray, channels: tuple[bool, bool, bool] = (True, True, True)) -> np.ndarray:
    """BT.601 luma of an RGB image (float32) over ``channels`` (weights renormalised); a 2-D image is returned as
    float32."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        kept = LUMA if all(channels) else np.where(channels, LUMA, 0.0) / np.dot(channels, LUMA)
        weights = [np.float32(w) for w in kept]
        image = image[..., 0] * weights[0] + image[..., 1] * weights[1] + image[..., 2] * weights[2]
    return image


def tile_size(shape: tuple[int, int]) -> int:
    """Tile side for a window of ``shape`` (H, W): see the module docstring."""
    short = min(shape[:2])
    side = SMALL_TILE if short < SMALL_WINDOW else LARGE_TILE
    return min(side, short - short % 2)


def tile_origins(length: int, tile: int, *, max_tiles: int = MAX_TILES_PER_AXIS) -> np.ndarray:
    """Top-left coordinates of the tiles along one axis: half-tile stride, first at 0, last flush with the end."""
    count = min(max_tiles, int(np.ceil((length - tile) / (tile / 2))) + 1)
    return np.unique(np.round(np.linspace(0, length - tile, max(count, 1))).astype(int))


def match_blur(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, float]:
    """``test`` (grey) blurred to the blur of ``reference``, and the Gaussian sigma used (LR px; 0: none).

    The sigma among :data:`BLUR_SIGMAS` that maximises the two images' correlation over the central
    :data:`BLUR_REGION` px of the window (the optics' blur is the same over a window). Only the test is blurred:
    the HR brought onto the LR grid averages many HR pixels and is the sharper one, and noise in the reference,
    independent of the test, does not move the optimum; blurring the reference too (tried) chose to smooth away a
    noisy LR's noise and left the two as mismatched as before.
    """
    import cv2

    h, w = reference.shape
    y0, x0 = max(0, (h - BLUR_REGION) // 2), max(0, (w - BLUR_REGION) // 2)
    region = (slice(y0, y0 + BLUR_REGION), slice(x0, x0 + BLUR_REGION))
    ref = reference[region] - reference[region].mean()
    ref_norm = float(np.sqrt((ref * ref).sum()))

    def correlation(b: np.ndarray) -> float:
        b = b - b.mean()
        norm = ref_norm * float(np.sqrt((b * b).sum()))
        return float((ref * b).sum()) / norm if norm > 0 else -1.0

    best, chosen = correlation(test[region]), 0.0
    for sigma in BLUR_SIGMAS:
        value = correlation(cv2.GaussianBlur(test[region], (0, 0), sigma))
        if value > best:
            best, chosen = value, sigma
    return _blurred(test, chosen), chosen


def clipped_channels(lr: np.ndarray, hr: np.ndarray, *, level: float = CLIP_LEVEL) -> np.ndarray | None:
    """``H x W x 3`` uint8 on the LR grid, per channel :data:`CLIPPED_REFERENCE` where it is at or above ``level``
    of its format's range in the LR, plus :data:`CLIPPED_TEST` where it is anywhere in the HR's area of that LR
    pixel (0: in neither); ``None`` where none is. ``lr`` and ``hr`` are the captures' own values (before any
    photometric correction), ``hr`` an integer multiple of ``lr``'s size."""
    import cv2

    def saturated(image: np.ndarray) -> np.ndarray:
        if image.dtype.kind in "ui":  # an integer threshold: a float one would convert every pixel first
            top = np.iinfo(image.dtype).max
            return image >= image.dtype.type(min(np.ceil(level * top), top))
        return image >= level

    lr, hr = np.asarray(lr), np.asarray(hr)
    if lr.ndim != 3 or hr.ndim != 3 or lr.shape[2] != 3 or hr.shape[2] != 3:
        raise ValueError(f"clipped channels need RGB images, got LR {lr.shape} and HR {hr.shape}")
    h, w = lr.shape[:2]
    factor = hr.shape[0] // h
    if hr.shape[:2] != (h * factor, w * factor):
        raise ValueError(f"HR {hr.shape[:2]} is not an integer multiple of LR {lr.shape[:2]}")
    if factor <= 16:  # an area mean of 0 / 255 over the block is >= 1 where any pixel is 255 (0.01 s on 20 MP)
        on_lr = cv2.resize(saturated(hr).view(np.uint8) * np.uint8(255), (w, h), interpolation=cv2.INTER_AREA) > 0
    else:  # numpy's block reduction: the same, 0.6 s on 20 MP
        on_lr = saturated(hr).reshape(h, factor, w, factor, -1).any(axis=(1, 3))
    clipped = saturated(lr).view(np.uint8) * np.uint8(CLIPPED_REFERENCE)
    clipped |= on_lr.reshape(h, w, 3).view(np.uint8) * np.uint8(CLIPPED_TEST)
    return clipped if clipped.any() else None


def _disagreeing(clipped: np.ndarray, reference: np.ndarray, test: np.ndarray, blur: float) -> np.ndarray:
    """The channels that bias a pixel (bool): clipped in one capture only, or clipped in both where the two images
    disagree by more than :data:`CLIP_TOLERANCE` (relative). A channel clipped in both captures at the same level
    (equal exposure) leaves them agreeing: no bias, nothing to leave out."""
    both = clipped == (CLIPPED_REFERENCE | CLIPPED_TEST)
    reference = np.asarray(reference, np.float32)
    test = _blurred(np.asarray(test, np.float32), blur)
    scale = np.maximum(np.maximum(reference, test), CLIP_FLOOR)
    return ((clipped != 0) & ~both) | (both & (np.abs(reference - test) > CLIP_TOLERANCE * scale))


def _blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma else image


def pyramid_factor(shape: tuple[int, int]) -> int:
    """Area-downscaling factor (a power of two) at which :data:`MAX_TILES_PER_AXIS` tiles of :data:`LARGE_TILE` px
    span the window's longer side: beyond it, tiles spread evenly over the window would leave gaps between them. It
    stops where the shorter side would no longer hold a whole tile (a long, thin window)."""
    factor = 1
    while (max(shape[:2]) > factor * MAX_TILES_PER_AXIS * LARGE_TILE
           and min(shape[:2]) >= 2 * factor * LARGE_TILE):
        factor *= 2
    return factor


def measure_tiles(reference: np.ndarray, test: np.ndarray, *, tile: int | None = None,
                  max_tiles: int = MAX_TILES_PER_AXIS, clipped: np.ndarray | None = None,
                  linear_light: bool = False) -> tuple[list[TileMeasure], int, float]:
    """Every tile's class and displacement (see the module docstring), the tile side used and the blur matched
    (:func:`match_blur`), all in the window's pixels. ``clipped``: :func:`clipped_channels`' mask, the captures in
    which each channel is saturated at each pixel (RGB inputs only; ``None``: none is). ``linear_light``: the images
    are linear light, whose flatness threshold follows the window's bright level (:func:`_flat_threshold`); encoded
    values keep :data:`MIN_EIGEN`. A window too large for the tile grid (:func:`pyramid_factor`) is measured on its
    area-downscaled copy (the last rows and columns that do not fill a block left out), unless ``tile`` is given."""
    shape = np.asarray(reference).shape
    if shape[:2] != np.asarray(test).shape[:2]:
        raise ValueError(f"images differ in shape: reference {shape}, test {np.asarray(test).shape}")
    if clipped is not None and (clipped.shape != (*shape[:2], 3) or clipped.dtype != np.uint8):
        raise ValueError(f"clipped mask {clipped.shape} {clipped.dtype} is not clipped_channels' for the images "
                         f"{shape}")
    factor = 1 if tile else pyramid_factor(shape)
    if factor == 1:
        return _measure_level(reference, test, tile or tile_size(shape), max_tiles, clipped, linear_light, 1)
    import cv2

    h, w = shape[0] // factor, shape[1] // factor

    def down(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, np.float32)[:h * factor, :w * factor]
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)

    if clipped is not None:  # a block is clipped in each capture where any of its pixels is
        clipped = np.bitwise_or.reduce(clipped[:h * factor, :w * factor].reshape(h, factor, w, factor, 3), axis=(1, 3))
    level_tile = min(LARGE_TILE, min(h, w) - min(h, w) % 2)
    measures, level_tile, blur = _measure_level(down(reference), down(test), level_tile, max_tiles, clipped,
                                                linear_light, factor)
    offset = (factor - 1) / 2  # a block's centre in window pixels
    return ([replace(m, x=m.x * factor + offset, y=m.y * factor + offset, dx=m.dx * factor, dy=m.dy * factor,
                     sigma=m.sigma * factor) for m in measures], level_tile * factor, blur * factor)


def _measure_level(reference: np.ndarray, test: np.ndarray, tile: int, max_tiles: int, clipped: np.ndarray | None,
                   linear_light: bool, unit: int) -> tuple[list[TileMeasure], int, float]:
    """:func:`measure_tiles` on one pyramid level whose pixel is ``unit`` window pixels (tile side, drift, smoothing
    and the blur returned in the level's pixels; a tile is noisy above :data:`MAX_TILE_SIGMA` window pixels)."""
    import cv2

    ref, tst = grey(reference), grey(test)
    h, w = ref.shape
    if tile < MIN_TILE:
        return [], tile, 0.0
    tst, blur = match_blur(ref, tst)
    hann = cv2.createHanningWindow((tile, tile), cv2.CV_32F)
    pad = int(np.ceil(3 * SMOOTH_SIGMA))
    margin = tile // 2 + int(np.ceil(MAX_DRIFT)) + 2  # how far the HR tile may be displaced while being measured
    ys, xs = tile_origins(h, tile, max_tiles=max_tiles), tile_origins(w, tile, max_tiles=max_tiles)
    local_y, local_x = np.mgrid[0:tile, 0:tile].astype(np.float64)
    greys = {(True, True, True): (ref, tst)}  # the pair's grey over each set of unclipped channels, made when needed
    count = None  # integral image of the disagreeing clipped pixels per channel, when there are any
    excluded = None  # pixels no tile's fit uses: every channel clipped in one capture only, and their reach
    if clipped is not None:
        disagreeing = _disagreeing(clipped, reference, test, blur)
        everywhere = disagreeing.all(axis=-1)
        if everywhere.any():
            radius = pad + int(np.ceil(blur))  # the smoothing and the blur matched spread the plateau's edge
            disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            excluded = cv2.dilate(everywhere.astype(np.uint8), disk) > 0
            disagreeing = disagreeing & ~everywhere[..., None]
        if disagreeing.any():
            count = cv2.integral(disagreeing.astype(np.uint8))
    reach = pad + int(np.ceil(MAX_DRIFT))  # what a tile's smoothing and displacement can reach beyond it
    bright = float(np.clip(np.percentile(ref, BRIGHT_PERCENTILE), 0.0, 1.0)) if linear_light else 1.0
    out = []
    for y in ys:
        for x in xs:
            centre = (x + (tile - 1) / 2, y + (tile - 1) / 2)
            channels = (True, True, True)
            if count is not None:
                y0, x0 = max(0, y - reach), max(0, x - reach)
                y1, x1 = min(h, y + tile + reach), min(w, x + tile + reach)
                share = (count[y1, x1] - count[y0, x1] - count[y1, x0] + count[y0, x0]) / ((y1 - y0) * (x1 - x0))
                channels = tuple(bool(v <= max(CLIP_SHARE, share.min())) for v in share)
                if channels not in greys:
                    greys[channels] = (grey(reference, channels),
                                       _blurred(grey(test, channels), blur))
            ref, tst = greys[channels]
            keep = None if excluded is None else ~excluded[y:y + tile, x:x + tile]
            if keep is not None and keep.all():
                keep = None
            if keep is not None and keep.mean() < MIN_UNCLIPPED:
                out.append(TileMeasure(*centre, "clipped"))
                continue
            a = _smoothed(ref, x, y, tile, pad)
            kind = _structure(a, _flat_threshold(ref[y:y + tile, x:x + tile], bright, channels), keep)
            if kind is not None:
                out.append(TileMeasure(*centre, kind))
                continue
            # The HR region around the tile, smoothed; its origin in window pixels is (x - margin, y - margin).
            region = _smoothed(tst, x - margin, y - margin, tile + 2 * margin, pad)
            b = region[margin:margin + tile, margin:margin + tile]
            # phaseCorrelate multiplies its inputs by the window in place: hand it copies.
            (sx, sy), _ = cv2.phaseCorrelate(a.copy(), b.copy(), hann)
            result = _lucas_kanade(a, region, local_x + margin, local_y + margin, (sx, sy), keep)
            if result is None:
                out.append(TileMeasure(*centre, "mismatched"))
                continue
            (dx, dy), match, sigma = result
            kind = "mismatched" if match < MIN_MATCH else "noisy" if sigma * unit > MAX_TILE_SIGMA else "measured"
            out.append(TileMeasure(*centre, kind, dx, dy, match, sigma))
    return out, tile, blur


def verify(reference: np.ndarray, test: np.ndarray, *, limit: float = DEFAULT_LIMIT,
           sigmas: float = DEFAULT_SIGMAS, p95_factor: float = DEFAULT_P95_FACTOR, tile: int | None = None,
           max_tiles: int = MAX_TILES_PER_AXIS, clipped: np.ndarray | None = None,
           linear_light: bool = False) -> Verification:
    """Measure the residual displacement field of ``test`` against ``reference`` and judge it against ``limit``.

    Parameters
    ----------
    reference : the LR, its light matched to the HR's (wash: as written, photometrically corrected; align: in
        linear light, by a fit of its own), ``H x W`` or ``H x W x 3`` in [0, 1].
    test : the HR output area-downscaled to the LR grid, same shape.
    limit : LR px; the pair is ``misaligned`` when the fitted field less ``sigmas`` of its standard errors exceeds
        it anywhere on the measured area, or the 95th percentile of the tile displacements beyond their noise
        exceeds ``p95_factor`` times it.
    sigmas : standard errors taken off the fitted field before it is judged: > 0 judges its lower confidence bound
        (the pair has the benefit of the doubt: wash), < 0 its upper bound (the limit has it: align's gate uses -1
        with its limit 0.5 and ``p95_factor`` 2.5), 0 the point estimate.
    p95_factor : the single tiles' limit as a multiple of ``limit``.
    The defaults are wash's calibration (module docstring).
    tile : tile side in LR px (default :func:`tile_size`, on the level :func:`pyramid_factor` picks; given, the
        window is measured at full resolution).
    max_tiles : tiles per axis at most (evenly spread over the window).
    clipped : ``H x W x 3`` uint8, the captures in which each channel is saturated (:func:`clipped_channels`);
        tiles near a channel that biases them are measured without it.
    linear_light : the images are linear light (align's): the flatness threshold follows the window's bright level.
    """
    measures, tile, blur = measure_tiles(reference, test, tile=tile, max_tiles=max_tiles, clipped=clipped,
                                         linear_light=linear_light)
    return summarise(measures, tile, np.asarray(reference).shape[:2], limit=limit, sigmas=sigmas,
                     p95_factor=p95_factor, blur=blur)


def summarise(measures: list[TileMeasure], tile: int, shape: tuple[int, int], *, limit: float = DEFAULT_LIMIT,
              sigmas: float = DEFAULT_SIGMAS, p95_factor: float = DEFAULT_P95_FACTOR, blur: float = 0.0,
              ) -> Verification:
    """The field and verdict of a window of ``shape`` (H, W) from its tiles and the blur matched
    (:func:`measure_tiles`): what :func:`verify` returns. Apart so that a calibration can judge one measurement
    under several settings."""
    h, w = shape
    measured = [m for m in measures if m.kind == "measured"]
    mismatched = sum(m.kind == "mismatched" for m in measures)
    median = p95 = excess = largest = corner = bend = field = field_sigma = None
    worst = affine = None
    coverage = 0.0
    if measured:
        centres = np.array([(m.x, m.y) for m in measured])
        shifts = np.array([(m.dx, m.dy) for m in measured])
        magnitude = np.hypot(shifts[:, 0], shifts[:, 1])
        tile_sigmas = np.array([m.sigma for m in measured])
        median, p95 = float(np.median(magnitude)), float(np.percentile(magnitude, 95))
        excess = float(np.percentile(np.maximum(magnitude - 2 * tile_sigmas, 0.0), 95))
        largest = float(magnitude.max())
        worst = tuple(float(v) for v in centres[int(np.argmax(magnitude))])
        coverage = _coverage(centres, tile, (h, w))
        origin = ((w - 1) / 2, (h - 1) / 2)
        fit = _affine_fit(centres, shifts, origin, tile_sigmas)
        if fit is not None:
            coef, covariance = fit
            affine = tuple(float(v) for v in coef.ravel())
            # The measured area is the union of the measured tiles: the affine field's largest value there is at
            # one of their corners. Unmeasured corners of the window are not claimed.
            half = (tile - 1) / 2
            offsets = np.array([(-half, -half), (half, -half), (-half, half), (half, half)])
            corners = (centres[:, None, :] + offsets).reshape(-1, 2) - origin
            bent = corners @ coef[:, :2].T
            values = np.hypot(*(bent + coef[:, 2]).T)
            corner = float(values.max())
            bend = float(np.hypot(bent[:, 0], bent[:, 1]).max())
            design = np.column_stack([corners, np.ones(len(corners))])
            errors = np.sqrt(np.einsum("ij,jk,ik->i", design, covariance, design))
        elif len(measured) >= MIN_TILES:
            # No affine field (too few tiles, or all on one line): the weighted mean translation stands in for it.
            mean, variance = _translation_fit(shifts, tile_sigmas)
            values, errors = np.array([np.hypot(*mean)]), np.array([np.sqrt(variance)])
        if len(measured) >= MIN_TILES:
            lower = values - sigmas * errors
            at = int(np.argmax(lower))
            field, field_sigma = float(lower[at]), float(errors[at])
    result = Verification(verdict="", reason="", median=median, p95=p95, p95_excess=excess, max=largest,
                          corner=corner, bend=bend, measurable=coverage, tiles=len(measured), mismatched=mismatched,
                          noisy=sum(m.kind == "noisy" for m in measures), total_tiles=len(measures), tile=tile,
                          worst=worst, affine=affine, limit=float(limit), field=field, field_sigma=field_sigma,
                          sigmas=float(sigmas), p95_factor=float(p95_factor), blur=float(blur))
    return result.with_limit(limit)


def _judge(v: Verification, limit: float, p95_factor: float) -> tuple[str, str]:
    if v.mismatched >= MIN_TILES and v.mismatched > v.tiles:
        return "misaligned", (f"content does not match in {v.mismatched} of {v.tiles + v.mismatched} textured tiles "
                              "(displaced by more than a tile, moving, or another scene)")
    if v.tiles < MIN_TILES:
        return "unmeasurable", (f"{v.tiles} measurable tile(s) (need {MIN_TILES}): flat, one-directional or noisy "
                                "content cannot show a displacement")
    if v.p95_excess is not None and v.p95_excess > p95_factor * limit:
        return "misaligned", (f"tile displacements beyond their noise: p95 {v.p95_excess:.2f} LR px > "
                              f"{p95_factor:g} x {limit:g} (max {v.max:.2f} at x {v.worst[0]:.0f}, "
                              f"y {v.worst[1]:.0f})")
    # Judged on a lower bound (sigmas > 0) the reason says by how much the limit must be exceeded; on an upper bound
    # (sigmas < 0) it gives the bound itself, beside the point estimate.
    bound = f" by more than {v.sigmas:g} standard errors" if v.sigmas > 0 else ""
    upper = ""
    if v.sigmas < 0 and v.field is not None:
        errors = -v.sigmas
        upper = f"; {v.field:.2f} at {errors:g} standard error{'s' * (errors != 1)} above"
    if v.field is not None and v.field > limit:
        value = v.field_estimate
        if v.affine is None:
            return "misaligned", (f"mean tile shift {value:.2f} +- {v.field_sigma:.2f} LR px{upper} exceeds "
                                  f"{limit:g}{bound} ({v.tiles} tiles, too few or on one line for an affine field)")
        a11, a12, b1, a21, a22, b2 = v.affine
        return "misaligned", (f"affine field reaches {value:.2f} +- {v.field_sigma:.2f} LR px on the measured area"
                              f"{upper}, over {limit:g}{bound} (shift {np.hypot(b1, b2):.2f} px at the centre, roll "
                              f"{np.degrees((a21 - a12) / 2):+.2f} deg, scale {50 * (a11 + a22):+.2f} %)")
    if v.corner is not None or v.field is None:
        field = f"fitted field at most {'-' if v.corner is None else f'{v.corner:.2f}'} LR px{upper}"
    else:
        value = v.field_estimate
        field = f"mean tile shift {value:.2f} +- {v.field_sigma:.2f} LR px{upper} ({v.tiles} tiles)"
    # The share measured is part of the verdict: an `aligned` resting on a few tiles says nothing of the rest.
    return "aligned", (f"{field} (limit {limit:g}{bound}), tile p95 beyond noise {v.p95_excess:.2f}; measured on "
                       f"{v.measurable:.0%} of the window")


def _smoothed(image: np.ndarray, x: int, y: int, size: int, pad: int) -> np.ndarray:
    """``image[y:y+size, x:x+size]`` (mirrored beyond the image) smoothed by :data:`SMOOTH_SIGMA`."""
    import cv2

    h, w = image.shape
    x0, y0, x1, y1 = x - pad, y - pad, x + size + pad, y + size + pad
    crop = image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    if (x0, y0, x1, y1) != (max(0, x0), max(0, y0), min(w, x1), min(h, y1)):
        before_y, before_x = max(0, -y0), max(0, -x0)
        after_y, after_x = max(0, y1 - h), max(0, x1 - w)
        if min(crop.shape) <= max(before_y, before_x, after_y, after_x):
            crop = np.pad(crop, ((before_y, after_y), (before_x, after_x)), mode="symmetric")
        else:
            crop = cv2.copyMakeBorder(crop, before_y, after_y, before_x, after_x, cv2.BORDER_REFLECT_101)
    blurred = cv2.GaussianBlur(crop, (0, 0), SMOOTH_SIGMA, borderType=cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(blurred[pad:pad + size, pad:pad + size])


def _noise_gain(channels: tuple[bool, bool, bool]) -> float:
    """Noise variance of :func:`grey` over ``channels`` relative to the full luma's (independent channel noise)."""
    kept = np.where(channels, LUMA, 0.0)
    return float(np.sum(kept**2) / np.sum(kept) ** 2 / np.sum(np.square(LUMA)))


def _flat_threshold(raw: np.ndarray, bright: float, channels: tuple[bool, bool, bool]) -> float:
    """The smaller structure-tensor eigenvalue (per px) below which the tile ``raw`` (grey, before smoothing) is
    flat, in a window whose bright level is ``bright``.

    :data:`MIN_EIGEN` scaled by the level squared (the same scene exposed lower has the same tiles), but not below
    :data:`NOISE_MARGIN` times what the tile's noise alone makes, nor above :data:`MIN_EIGEN` (a window at full
    scale keeps exactly the old threshold). Fewer channels, more noise: the threshold rises with it (a flat red
    patch measured on green and blue alone read as texture, and its noise as 28 mismatched tiles).
    """
    floor = MIN_EIGEN if all(channels) else MIN_EIGEN * _noise_gain(channels)
    if bright >= 1.0:
        return floor
    noise = NOISE_MARGIN * _smoothed_gradient_gain() * _noise_sigma(raw) ** 2
    return max(floor * bright**2, min(floor, noise))


def _noise_sigma(raw: np.ndarray) -> float:
    """Standard deviation of white noise in ``raw``: the median absolute response of Immerkaer's mask (it cancels
    planes and ramps; its response to noise has 6 sigma), so the few pixels on an edge do not count as noise. Dense
    texture still adds to it: it errs towards more noise, the safe side here."""
    import cv2

    if min(raw.shape) < 3:
        return 0.0
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = cv2.filter2D(np.asarray(raw, np.float32), -1, mask)[1:-1, 1:-1]
    return float(1.4826 / 6 * np.median(np.abs(response)))


@functools.cache
def _smoothed_gradient_gain() -> float:
    """Variance of ``np.gradient`` (per axis) of unit white noise smoothed as :func:`_smoothed` smooths: the
    structure tensor's eigenvalues of a noise-only tile per unit noise variance (the sum of the squared impulse
    response)."""
    import cv2

    impulse = np.zeros((33, 33), np.float32)
    impulse[16, 16] = 1.0
    _, gx = np.gradient(cv2.GaussianBlur(impulse, (0, 0), SMOOTH_SIGMA).astype(np.float64))
    return float(np.sum(gx**2))


def _structure(a: np.ndarray, min_eigen: float = MIN_EIGEN, keep: np.ndarray | None = None) -> str | None:
    """``"flat"``, ``"one-dimensional"`` or ``None`` (measurable) from the tile's structure tensor (over the
    ``keep`` pixels only, where given)."""
    gy, gx = np.gradient(a.astype(np.float64))
    if keep is not None:
        gx, gy = gx[keep], gy[keep]
    sxx, syy, sxy = np.mean(gx * gx), np.mean(gy * gy), np.mean(gx * gy)
    root = np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
    small, large = (sxx + syy) / 2 - root, (sxx + syy) / 2 + root
    if small < min_eigen:
        return "flat" if large < min_eigen / MIN_ISOTROPY else "one-dimensional"
    if small < MIN_ISOTROPY * large:
        return "one-dimensional"
    return None


def _lucas_kanade(a: np.ndarray, region: np.ndarray, grid_x: np.ndarray, grid_y: np.ndarray,
                  start: tuple[float, float], keep: np.ndarray | None = None,
                  ) -> tuple[tuple[float, float], float, float] | None:
    """Translation (with a gain and offset) moving ``region`` onto ``a``; ``None`` when it does not converge. Only
    the ``keep`` pixels of the tile are fitted, where given.

    Returns the translation, the correlation of the matched tiles and the translation's standard deviation.
    ``region`` is resampled with a cubic B-spline at exact positions: OpenCV's ``remap`` quantises positions to
    1/32 px and its cubic kernel moves a ramp by up to 0.05 px depending on the fraction, which would be a bias
    of the same size and stops the iterations from converging below it.
    """
    from scipy import ndimage

    coefficients = ndimage.spline_filter(region.astype(np.float64), order=3, mode="mirror")

    used = slice(None) if keep is None else keep.ravel()

    def moved_by(dx: float, dy: float) -> np.ndarray:
        return ndimage.map_coordinates(coefficients, (grid_y + dy, grid_x + dx), order=3, prefilter=False,
                                       mode="mirror").ravel()[used]

    gy, gx = np.gradient(a.astype(np.float64))
    gx, gy = gx.ravel()[used], gy.ravel()[used]
    hessian = np.array([[gx @ gx, gx @ gy], [gx @ gy, gy @ gy]])
    inverse = np.linalg.inv(hessian)
    target = a.astype(np.float64).ravel()[used]
    dx, dy = float(start[0]), float(start[1])
    if abs(dx) > a.shape[1] / 2 - 1 or abs(dy) > a.shape[0] / 2 - 1:
        return None
    converged = False
    for _ in range(MAX_ITERATIONS):
        moved = moved_by(dx, dy)
        centred = moved - moved.mean()
        variance = centred @ centred
        if variance <= 0:
            return None
        gain = (centred @ (target - target.mean())) / variance
        residual = gain * centred + target.mean() - target
        step = -inverse @ np.array([gx @ residual, gy @ residual])
        dx, dy = dx + step[0], dy + step[1]
        if abs(dx - start[0]) > MAX_DRIFT or abs(dy - start[1]) > MAX_DRIFT:
            return None
        if abs(step[0]) + abs(step[1]) < 1e-3:
            converged = True
            break
    if not converged and abs(step[0]) + abs(step[1]) > MAX_FINAL_STEP:
        return None
    moved = moved_by(dx, dy)
    match = float(np.corrcoef(moved, target)[0, 1])
    centred = moved - moved.mean()
    residual = (centred @ (target - target.mean())) / max(centred @ centred, 1e-12) * centred + target.mean() - target
    # Neighbouring residuals are correlated after the smoothing: about (2 sqrt(pi) sigma)^2 pixels per independent one.
    variance = residual @ residual / max(len(residual) - 4, 1) * 4 * np.pi * SMOOTH_SIGMA**2
    sigma = float(np.sqrt(variance * np.linalg.eigvalsh(inverse)[-1]))
    return (dx, dy), match, sigma


def _affine_fit(centres: np.ndarray, shifts: np.ndarray, origin: tuple[float, float],
                sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Affine field ``2 x 3`` about ``origin`` and its ``3 x 3`` covariance; ``None`` when the tiles cannot fix it.

    The covariance is that of either row's coefficients (both rows share the design and the weights):
    ``s2 (X^T W X)^-1`` with ``W`` the final weights and ``s2`` the reduced chi-square of the weighted residuals
    over both components, at least 1 (tiles scattering more than their sigmas say widen it; never narrowed below
    what the sigmas give). The field's variance at a point ``p`` (per component) is ``[p, 1] C [p, 1]^T``.

    Least squares weighted by each tile's precision (``sigmas``, with a floor of :data:`SIGMA_FLOOR`) and Huber
    weights on the residuals (a moving object or a repeated pattern does not bend the field). A tile's translation is
    the structure-weighted mean of the field over the tile, taken here as the field at the tile's centre: on tiles
    whose edges sit off-centre this can misplace the estimate (measured: 0.3 deg read as 0.29-0.30 deg on real x4
    pairs); modelling the lever of every tile made the fitted corners of sparse pairs noisier, so it was left out.
    """
    if len(centres) < MIN_AFFINE_TILES:
        return None
    rel = centres - origin
    design = np.column_stack([rel, np.ones(len(rel))])
    span = np.abs(rel).max(axis=0)
    if np.any(span <= 0) or np.linalg.matrix_rank(design / np.append(span, 1)) < 3:
        return None
    precision = 1.0 / (np.nan_to_num(sigmas, nan=1.0) ** 2 + SIGMA_FLOOR**2)
    weights = np.ones(len(rel))
    for _ in range(6):
        root = np.sqrt(weights * precision)[:, None]
        coef, *_ = np.linalg.lstsq(design * root, shifts * root, rcond=None)
        residual = np.hypot(*(shifts - design @ coef).T)
        spread = max(1.4826 * np.median(residual), SIGMA_FLOOR)
        weights = np.minimum(1.0, 1.5 * spread / np.maximum(residual, 1e-12))
    final = weights * precision
    chi_square = float(final @ np.sum((shifts - design @ coef) ** 2, axis=1)) / max(2 * len(rel) - 6, 1)
    covariance = np.linalg.inv((design * final[:, None]).T @ design) * max(chi_square, 1.0)
    return coef.T, covariance  # rows: dx = a11 (x - cx) + a12 (y - cy) + b1; dy likewise


def _translation_fit(shifts: np.ndarray, sigmas: np.ndarray) -> tuple[np.ndarray, float]:
    """Precision-weighted mean of the tile shifts and its variance per component (reduced chi-square >= 1)."""
    precision = 1.0 / (np.nan_to_num(sigmas, nan=1.0) ** 2 + SIGMA_FLOOR**2)
    mean = precision @ shifts / precision.sum()
    chi_square = float(precision @ np.sum((shifts - mean) ** 2, axis=1)) / max(2 * len(shifts) - 2, 1)
    return mean, max(chi_square, 1.0) / float(precision.sum())


def _coverage(centres: np.ndarray, tile: int, shape: tuple[int, int], *, cell: int = 4) -> float:
    """Fraction of the window covered by the measured tiles (on a grid of ``cell`` px)."""
    h, w = shape
    mask = np.zeros((-(-h // cell), -(-w // cell)), bool)
    half = (tile - 1) / 2
    for cx, cy in centres:
        x0, y0 = int(round(cx - half)) // cell, int(round(cy - half)) // cell
        mask[y0:y0 + -(-tile // cell), x0:x0 + -(-tile // cell)] = True
    return float(mask.mean())
