"""Grey images for registration: linear-light luma (BT.601 weights of the sRGB-decoded channels), or that of the
channels that are not saturated alone.

Optics and pixel integration act on linear light, so two captures of one scene through different blurs differ by a
geometric warp plus a blur (and a gain) only in linear light. After the transfer curve (gamma ~1/2.2) bright detail
on a dark surround spreads differently at the two scales, and an intensity fit on encoded values is pulled towards
that difference.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from ..geometry import hr_field_in_lr, local_zoom, scaling, translation


def srgb_to_linear(value):
    """The inverse sRGB transfer curve (IEC 61966-2-1) on values in [0, 1], float64."""
    value = np.asarray(value, dtype=np.float64)
    return np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4)


# Raw values at or beyond these are clipped (dark noise at zero, highlights at the top); stated on the encoded
# scale (0.005 and 0.99 of full scale) through the sRGB curve, and applied to the linear-light grey that
# registration_grey returns whatever curve decoded it (under a pure 2.2 power the low limit is an encoded 0.028).
# Saturated pixels (raw values above CLIP_HIGH) have no known true value, and the edge of a plateau that only one
# capture clips pulls the fit (measured: 0.15 LR px on a simulated pair whose HR is 17 % saturated). After
# smoothing, a pixel is left out when saturated pixels make up more than CLIP_WEIGHT of its smoothing kernel's
# weight. Much smaller weights also remove the textured rim of every highlight, which can carry most of the
# geometry along one axis (measured: 1e-3 moved a headlight pair by 0.3 px); much larger ones let the plateau's
# edge back in. Dark pixels (below CLIP_LOW after smoothing) are left out one by one, not with their surroundings:
# dark scenes (a star field) have their geometry next to them. What dark noise clipped at zero does to the values
# above CLIP_LOW is taken out where it is measurable (DARK_SMOOTHING).
ENCODED_CLIP_LOW, ENCODED_CLIP_HIGH = 0.005, 0.99
CLIP_LOW, CLIP_HIGH = float(srgb_to_linear(ENCODED_CLIP_LOW)), float(srgb_to_linear(ENCODED_CLIP_HIGH))


def bt709_to_linear(value):
    """The inverse BT.709 transfer curve (power 0.45 with a linear toe of slope 4.5; LibRaw's gamma (2.222, 4.5),
    realsr's default RAW rendering) on values in [0, 1], float64."""
    value = np.asarray(value, dtype=np.float64)
    return np.where(value < 0.081, value / 4.5, ((value + 0.099) / 1.099) ** (1 / 0.45))


def power_to_linear(value, exponent: float):
    """A pure power curve (Adobe RGB (1998): 563/256; ProPhoto: 1.8; a PNG gAMA chunk: 1 / its value), float64."""
    return np.asarray(value, dtype=np.float64) ** exponent


def parametric_to_linear(value, g: float, a: float, b: float, c: float, d: float, e: float, f: float):
    """ICC parametric curve type 4 (ICC.1:2010, 10.18; types 0-3 are its special cases): ``(a E + b)^g + e`` from
    ``E >= d``, ``c E + f`` below; float64."""
    value = np.asarray(value, dtype=np.float64)
    return np.where(value >= d, np.maximum(a * value + b, 0.0) ** g + e, c * value + f)


# The transfer curves realsr decodes, named as the manifest records them: "srgb" (a raster capture that states no
# other curve), "bt709" (RAW files in realsr's default rendering; the sRGB inverse would leave BT.709 values 10-40 %
# off linear between 5 % and 50 % grey), "linear" (already linear light: RAW rendered with --raw-gamma linear),
# "power:G" (value = encoded^G) and "para:g,a,b,c,d,e,f" (an ICC parametric curve that is none of the others).
# imaging.transfer reads which one a raster file states.
DECODE = {"srgb": srgb_to_linear, "bt709": bt709_to_linear, "linear": lambda value: np.asarray(value, np.float64)}


def decoder(curve: str):
    """The function from encoded values in [0, 1] to linear light for a curve name (see :data:`DECODE`)."""
    if curve in DECODE:
        return DECODE[curve]
    kind, _, numbers = curve.partition(":")
    try:
        values = [float(number) for number in numbers.split(",")] if numbers else []
    except ValueError:
        values = []
    if kind == "power" and len(values) == 1 and 0.1 <= values[0] <= 10:
        return functools.partial(power_to_linear, exponent=values[0])
    if kind == "para" and len(values) == 7 and 0.1 <= values[0] <= 10 and all(np.isfinite(values)):
        return functools.partial(parametric_to_linear, **dict(zip("gabcdef", values)))
    raise ValueError(f"unknown transfer curve {curve!r}; expected srgb, bt709, linear, power:G (G in 0.1-10, "
                     "e.g. power:2.2) or para:g,a,b,c,d,e,f")


def _peak(dtype: np.dtype) -> float:
    """The format's top value: 1.0 for float32 images, 255 / 65535 for uint8 / uint16."""
    return 1.0 if dtype.kind == "f" else float(np.iinfo(dtype).max)


def grey(image: np.ndarray) -> np.ndarray:
    """BT.601 luma as float32 in [0, 1] from uint8/uint16/float32 RGB (encoded values, no decoding)."""
    import cv2

    if image.dtype == np.float32:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / _peak(image.dtype))


_TABLES: dict = {}
# Float and 16-bit images are decoded (and other whole-frame passes run) this many values at a time. The curve runs
# in float64, and over a 20-MP x2 pair's LR window whole (15 M values) its temporaries took about 0.6 GB and 1.2 s of
# the pair's 5.8 s in align; strips of a few MB give the same values (benchmarks/bench_decode.py).
STRIP_VALUES = 1 << 19


def row_strips(image: np.ndarray) -> Iterator[slice]:
    """Slices of ``image``'s rows holding about :data:`STRIP_VALUES` values each (at least one row)."""
    rows = max(1, STRIP_VALUES // max(1, image[0].size))
    for top in range(0, image.shape[0], rows):
        yield slice(top, top + rows)


def linear(image: np.ndarray, curve: str = "srgb") -> np.ndarray:
    """Linear-light float32 copy in [0, 1] of an uint8/uint16/float32 image encoded with ``curve`` (a key of
    :func:`decoder`; a lookup table for integer formats, in row strips beyond 8 bit, the curve itself in row strips for
    float32)."""
    decode = decoder(curve)
    if image.dtype == np.float32:
        if image.ndim == 0:
            return decode(np.clip(image, 0.0, 1.0)).astype(np.float32)
        out = np.empty(image.shape, np.float32)
        for rows in row_strips(image):
            out[rows] = decode(np.clip(image[rows], 0.0, 1.0))
        return out
    if (curve, image.dtype) not in _TABLES:
        peak = int(_peak(image.dtype))
        _TABLES[curve, image.dtype] = decode(np.arange(peak + 1) / peak).astype(np.float32)
    table = _TABLES[curve, image.dtype]
    if image.dtype == np.uint8 and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] <= 4)):
        import cv2

        # The same table through OpenCV: the same values, 5-6x faster than numpy's take on a 20-MP frame
        # (benchmarks/bench_decode.py).
        return cv2.LUT(np.ascontiguousarray(image), table.reshape(1, 256))
    if image.ndim == 0:
        return np.take(table, image)
    # In row strips: numpy's take converts the whole index array to intp first (8 bytes a value, fresh pages the
    # kernel must clear); on a 16-bit 20-MP frame 1.7x faster, numpy's peak 0.72 -> 0.24 GB (bench_decode.py).
    out = np.empty(image.shape, np.float32)
    for rows in row_strips(image):
        np.take(table, image[rows], out=out[rows], mode="clip")
    return out


# The inverse of a curve is read from a table of this many + 1 decoded values, evenly spaced in the encoded value:
# within one table step (1.5e-5) of the exact inverse wherever the curve rises, under a 16-bit quantisation step.
ENCODE_TABLE_STEPS = 1 << 16


@functools.lru_cache(maxsize=8)
def _inverse_table(curve: str) -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(0.0, 1.0, ENCODE_TABLE_STEPS + 1)
    return np.maximum.accumulate(decoder(curve)(grid)), grid


def encoded(light: np.ndarray, curve: str) -> np.ndarray:
    """float32 values encoded with ``curve`` from linear light (clipped to [0, 1]): the inverse of :func:`linear`,
    in row strips of a few MB, so a 24-MP window has no float64 copy."""
    decoded, grid = _inverse_table(curve)
    light = np.asarray(light, np.float32)
    if light.ndim == 0:
        return np.float32(np.interp(np.clip(light, 0.0, 1.0), decoded, grid))
    out = np.empty(light.shape, np.float32)
    for rows in row_strips(light):
        out[rows] = np.interp(np.clip(light[rows], 0.0, 1.0), decoded, grid)
    return out


def linear_area_downscale(image: np.ndarray, curve: str, factor: int, *, strip: int = 256) -> np.ndarray:
    """Linear light of ``image`` (:func:`linear`) averaged over ``factor x factor`` blocks, as a sensor with
    ``factor`` times larger pixels integrates it; float32. Decoded ``strip`` output rows at a time, so a 24-MP
    frame never has a float copy in memory (its shape must be a multiple of ``factor``)."""
    import cv2

    h, w = image.shape[0] // factor, image.shape[1] // factor
    if (h * factor, w * factor) != image.shape[:2]:
        raise ValueError(f"image shape {image.shape[:2]} is not a multiple of {factor}")
    out = np.empty((h, w) + image.shape[2:], np.float32)
    for top in range(0, h, strip):
        rows = linear(image[top * factor:min(top + strip, h) * factor], curve)
        out[top:top + strip] = cv2.resize(rows, (w, rows.shape[0] // factor), interpolation=cv2.INTER_AREA)
    return out


def linear_thumbnail(image: np.ndarray, curve: str, factor: float) -> tuple[np.ndarray, tuple[float, float]]:
    """``image`` in linear light averaged over blocks of ``int(factor)`` px (:func:`linear_area_downscale`; the
    last rows and columns that do not fill a block are left out), and the image's pixels per thumbnail pixel
    (x, y): colour for the coarse search, with bounded memory on 24-MP frames. Averaged in linear light: an
    average of encoded values darkens the rims of bright patches, which moved a chart's best match (measured)."""
    f = max(1, int(factor))
    h, w = image.shape[0] // f * f, image.shape[1] // f * f
    return linear_area_downscale(image[:h, :w], curve, f), (float(f), float(f))


LUMA = (0.299, 0.587, 0.114)  # BT.601 weights of R, G, B
# A channel saturated on its own (a red wall whose red channel clips while its luma stays below CLIP_HIGH) loses its
# texture in one capture only; that luma difference biased a simulated pair 0.5-0.9 px. Such a channel is left out
# of both images' grey when it is saturated alone on more than CHANNEL_SATURATION of either frame. Dropping a
# channel costs signal-to-noise everywhere: at 1-5 % it dropped channels on many simulated pairs and refused one
# registered to 0.08 px; the red wall was 74 % saturated.
CHANNEL_SATURATION = 0.15


def registration_grey(lr: np.ndarray, hr: np.ndarray, curves: tuple[str, str] = ("srgb", "srgb"),
                      ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Linear-light grey images of an LR/HR pair for :func:`register` and the channel weights used (R, G, B; sum 1).

    Each channel is decoded to linear light with its image's transfer curve (``curves``: LR, HR; :func:`linear`),
    the bias of its dark noise clipped at zero taken out, and weighted with :func:`grey_weights`
    (:func:`grey_and_dark_noise`).
    """
    weights = grey_weights(lr, hr)
    return weighted_grey(lr, curves[0], weights), weighted_grey(hr, curves[1], weights), weights


def grey_weights(lr: np.ndarray, hr: np.ndarray) -> tuple[float, ...]:
    """The channel weights of a pair's registration grey (R, G, B; sum 1): the BT.601 luma weights unless a channel
    is saturated alone (at the format's top value while the encoded luma is below :data:`ENCODED_CLIP_HIGH`) on more
    than :data:`CHANNEL_SATURATION` of either frame: then the luma weights of the other channels, renormalised, for
    both images alike. The shares are measured on every 8th pixel."""
    keep = np.ones(3, bool)
    for image in (lr, hr):
        sample = np.ascontiguousarray(image[::8, ::8])
        unsaturated_luma = grey(sample) < ENCODED_CLIP_HIGH
        alone = (sample >= _peak(image.dtype)) & unsaturated_luma[..., None]
        keep &= alone.mean(axis=(0, 1)) <= CHANNEL_SATURATION
    every = keep.all() or not keep.any()
    if every:
        return LUMA
    return tuple(float(w) for w in np.where(keep, LUMA, 0.0) / np.sum(np.where(keep, LUMA, 0.0)))


def saturated_channels(image: np.ndarray, weights) -> np.ndarray | None:
    """Pixels where a channel the grey uses (``weights`` > 0) is at or above :data:`ENCODED_CLIP_HIGH` of the
    format's range (``None`` where there is none).

    Why: a grey whose channels clip in one capture and not in the other has the wrong value there while the grey
    itself stays far below the clipping threshold (a blue chart patch with its blue channel clipped), and the fit
    moves the geometry to explain it; the refinement treats these pixels as clipped.
    """
    level = ENCODED_CLIP_HIGH * _peak(image.dtype)
    out = None
    for c in np.flatnonzero(np.asarray(weights) > 0):
        clipped = image[..., c] >= level
        out = clipped if out is None else np.logical_or(out, clipped, out=out)
    return out if out is not None and out.any() else None


# Dark noise clipped at zero. A sensor's noise is symmetric about the true value, but an encoded file holds no value
# below black, so where the scene lies within a few noise sigmas of black the written values average above it (by
# 0.4 sigma at black). Two captures of one scene carry different noise (another exposure, another sensor area per
# scene point), so their dark regions are lifted differently; no gain and offset matches that, and the fit bent the
# window to explain it at the edges of a chart's black frame (measured: a 4620-px generator chart x3 registered as
# its curve, 0.20 LR px off the truth; re-rendered with the scene's black lifted 0.01 above zero, everything else
# alike, 0.06; with this correction 0.11). Each channel's clipped noise is measured where it clips (pixels at zero),
# and the bias taken out of its local mean: for noise N(0, sigma) about a true value mu, the clipped mean is
# sigma F(mu / sigma), F(t) = phi(t) + t Phi(t), and the share at zero Phi(-mu / sigma). Both are measured on
# DARK_SMOOTHING px Gaussians of a half-resolution copy; sigma is the median over pixels whose share at zero lies
# within DARK_SHARES (well measured, and dark enough to be mostly one level), from at least DARK_MIN_PIXELS of them;
# no correction otherwise. The mean corrected is the full-resolution one over a DARK_MEAN_SMOOTHING px Gaussian:
# the half-resolution one mixes a black bar with the patch beside it, whose mean no longer tells the bias (that x3
# rendered without exposure differences or shake: 0.22 LR px uncorrected, 0.096 with the half-resolution mean, 0.063
# with 1 px, 0.081 with 2). A mean below F(0) sigma is taken for black (t >= 0): read as below black, the
# correction's slope 1 / Phi(t) lifted the noise of the darkest pixels (an x4 of the same set refused for its
# uncertainty, 0.89 LR px); with that, the same x3 is 0.097 with 1 px, 0.082 with 2, 0.136 with 0.7 (1 px chosen
# before, and measured on the sets; docs/align.md, "Dark noise clipped at zero").
# Only flat pixels measure sigma: where the mean changes across the kernel (its gradient times DARK_SMOOTHING) by
# more than DARK_FLATNESS of itself, the kernel mixes black with the patch beside it, and the share at zero (the
# black side's) and the mean (the patch's) no longer belong to one level: on a colour chart's thin black bars most
# pixels with a share in DARK_SHARES are such edges, and sigma read 2.5 times the generator's (0.0069 for 0.0027);
# corrected with it, the black bars sank and their edges moved the fit (docs/align.md, "Sigma read on flat pixels").
# Noise alone moves a flat region's mean by about 0.06 sigma across the kernel, against a mean of at least 0.47
# sigma where the share is within DARK_SHARES, so 0.5 keeps every flat pixel.
DARK_SMOOTHING = 2.0
DARK_MEAN_SMOOTHING = 1.0
DARK_SHARES = (0.05, 0.45)
DARK_FLATNESS = 0.5
DARK_MIN_PIXELS = 2_000
# The correction as a function of the local mean, tabulated in steps of DARK_TABLE_STEP sigma up to the mean
# F(DARK_TABLE_T) sigma beyond which the clip takes out less than 1e-9 sigma.
DARK_TABLE_STEP = 1 / 512
DARK_TABLE_T = 6.0


def _clipped_mean(t: np.ndarray) -> np.ndarray:
    """F(t) = phi(t) + t Phi(t): the mean of max(0, t + n), n ~ N(0, 1)."""
    from scipy.special import ndtr

    return np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi) + t * ndtr(t)


def _dark_table() -> np.ndarray:
    """mu - m (units of sigma) at clipped means m = 0, DARK_TABLE_STEP, ...: a mean below F(0) is black (mu = 0)."""
    t = np.linspace(0.0, DARK_TABLE_T, 6001)
    means = np.arange(0.0, float(_clipped_mean(np.array(DARK_TABLE_T))), DARK_TABLE_STEP)
    table = (np.interp(means, _clipped_mean(t), t) - means).astype(np.float32)
    table[-1] = 0.0  # beyond the table nothing moves
    return table


_DARK_TABLE = _dark_table()


def dark_noise(channel: np.ndarray) -> float | None:
    """The standard deviation of the noise clipped at zero in a linear-light channel (``None``: too little clipped
    to tell; see :data:`DARK_SMOOTHING`)."""
    import cv2
    from scipy.special import ndtri

    zeros = channel <= 0
    # DARK_MIN_PIXELS measured pixels, each with DARK_SHARES[0] of its 4 full-resolution pixels' neighbourhood at
    # zero, need about 400 zeros: far fewer cannot be enough, and the frame costs one count
    if np.count_nonzero(zeros) < DARK_MIN_PIXELS // 10:
        return None
    h, w = channel.shape[0] // 2 * 2, channel.shape[1] // 2 * 2
    half = (w // 2, h // 2)
    mean = cv2.GaussianBlur(cv2.resize(channel[:h, :w], half, interpolation=cv2.INTER_AREA), (0, 0), DARK_SMOOTHING)
    zeros = zeros[:h, :w].view(np.uint8) * np.uint8(255)
    share = cv2.resize(zeros, half, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1 / 255)
    share = cv2.GaussianBlur(share, (0, 0), DARK_SMOOTHING)
    change = cv2.magnitude(cv2.Sobel(mean, cv2.CV_32F, 1, 0, ksize=1, scale=0.5),
                           cv2.Sobel(mean, cv2.CV_32F, 0, 1, ksize=1, scale=0.5))
    measured = (share >= DARK_SHARES[0]) & (share <= DARK_SHARES[1]) & (change * DARK_SMOOTHING <= DARK_FLATNESS * mean)
    if np.count_nonzero(measured) < DARK_MIN_PIXELS:
        return None
    t = -ndtri(share[measured].astype(np.float64))
    sigma = float(np.median(mean[measured] / _clipped_mean(t)))
    return sigma if sigma > 0 else None


def remove_dark_bias(channel: np.ndarray, sigma: float | None) -> np.ndarray:
    """Take the bias of noise of ``sigma`` clipped at zero (:func:`dark_noise`) out of ``channel``'s local mean over a
    :data:`DARK_MEAN_SMOOTHING` px Gaussian, in place (linear light, float32; see :data:`DARK_SMOOTHING`); nothing
    where ``sigma`` is ``None``. Returns ``channel``."""
    import cv2

    if sigma is None:
        return channel
    index = cv2.GaussianBlur(channel, (0, 0), DARK_MEAN_SMOOTHING)  # the local mean, turned into the table's index
    index *= np.float32(1 / (sigma * DARK_TABLE_STEP))
    index += np.float32(0.5)
    np.clip(index, 0, len(_DARK_TABLE) - 1, out=index)
    for rows in row_strips(channel):  # a 24-MP frame holds one copy of the channel
        channel[rows] += np.take(_DARK_TABLE, index[rows].astype(np.int32)) * np.float32(sigma)
    return channel


def grey_and_dark_noise(image: np.ndarray, curve: str, weights, *, dark_noise_sigma=None,
                        ) -> tuple[np.ndarray, tuple[float | None, ...]]:
    """Linear-light grey of ``image``: each channel decoded with ``curve`` (:func:`linear`), the bias of its dark
    noise clipped at zero taken out (:func:`remove_dark_bias`), weighted by ``weights`` (R, G, B; a channel of weight
    0 is not decoded); and each channel's clipped noise sigma (:func:`dark_noise`; ``None``: not measured, or the
    channel not used). ``dark_noise_sigma``: those sigmas, measured before on the same image and curve."""
    import cv2

    # One decoded channel at a time: a 24-MP frame holds the sum, one channel and, where its dark noise clips, one
    # more copy of it (its local mean); never all three channels.
    out = None
    sigmas = [None, None, None]
    for c in np.flatnonzero(np.asarray(weights) > 0):
        channel = linear(image[..., c], curve)
        sigmas[c] = dark_noise(channel) if dark_noise_sigma is None else dark_noise_sigma[c]
        remove_dark_bias(channel, sigmas[c])
        w = float(weights[c])
        out = channel * np.float32(w) if out is None else cv2.scaleAdd(channel, w, out)
    return out, tuple(sigmas)


def weighted_grey(image: np.ndarray, curve: str, weights, *, dark_noise_sigma=None) -> np.ndarray:
    """The grey of :func:`grey_and_dark_noise` alone."""
    return grey_and_dark_noise(image, curve, weights, dark_noise_sigma=dark_noise_sigma)[0]


# Channel balance (:func:`channel_balance`), measured on a grid of at most BALANCE_SIZE px over the overlap, on pixels
# whose every channel (both captures, linear light, after a Gaussian of BALANCE_BLUR grid px) lies within
# BALANCE_DARK-BALANCE_BRIGHT and which are flat: green gradient per grid px below BALANCE_FLAT x (green value +
# BALANCE_NOISE) in both captures, one pixel away from any that is not. Flat because the coarse estimate it rests on
# is up to a grid pixel off, and at an edge that mixes two colours. The noise term keeps dark noise from counting as
# gradient: a purely relative test left a dark, red-dominated generator scene 601 usable pixels instead of 13,543,
# and a dark floor of 0.02 left it none. More blur (2 or 3 grid px) did not bring the gains closer to the truth.
BALANCE_SIZE = 256
BALANCE_BLUR = 1.0
BALANCE_DARK, BALANCE_BRIGHT = 0.005, 0.9
BALANCE_FLAT = 0.05
BALANCE_NOISE = 0.02
BALANCE_MIN_PIXELS = 50  # fewer usable pixels than this: no balance (gains 1)


def channel_balance(lr: np.ndarray, hr: np.ndarray, lr_to_hr: np.ndarray, curves: tuple[str, str] = ("srgb", "srgb"),
                    ) -> tuple[np.ndarray, int]:
    """Per-channel gains (R, G, B; G = 1) that bring the HR's colour balance to the LR's over the overlap where
    ``lr_to_hr`` (a coarse estimate is enough) puts it, and the number of pixels they rest on.

    Why: the captures' white balance differs (auto white balance, a +-15 % change is common), so their luma ratio
    depends on each object's colour; a single gain cannot match a red patch and a blue one at once, and the fit
    moves their edges instead. The ratio (LR_c / LR_G) / (HR_c / HR_G) in linear light is independent of exposure
    and vignetting (both achromatic); its median over flat, unclipped pixels is the balance.
    """
    import cv2

    corners = hr_field_in_lr(lr_to_hr, hr.shape)
    if not np.all(np.isfinite(corners)):
        return np.ones(3), 0  # a degenerate coarse estimate: no overlap to measure on
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)), 0)
    x1 = min(float(np.ceil(corners[:, 0].max())), lr.shape[1] - 1)
    y1 = min(float(np.ceil(corners[:, 1].max())), lr.shape[0] - 1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return np.ones(3), 0
    crop = linear(lr[int(y0):int(y1) + 1, int(x0):int(x1) + 1], curves[0])
    step = max(1.0, max(crop.shape[:2]) / BALANCE_SIZE)
    size = (max(8, round(crop.shape[1] / step)), max(8, round(crop.shape[0] / step)))
    lr_small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    del crop
    sx, sy = (x1 - x0 + 1) / size[0], (y1 - y0 + 1) / size[1]
    grid_to_lr = translation(x0, y0) @ scaling(sx, sy)
    # The HR at about the grid's scale, decoded in strips by an integer factor first (bounded memory on 24 MP).
    zoom = local_zoom(lr_to_hr, ((x0 + x1) / 2, (y0 + y1) / 2)) * max(sx, sy)
    hr_small, (factor, _) = linear_thumbnail(hr, curves[1], zoom)
    hh, hw = (side * int(factor) for side in hr_small.shape[:2])
    small_to_hr = scaling(factor)
    if zoom / factor > 1.05:
        size_small = (max(8, round(hw / zoom)), max(8, round(hh / zoom)))
        small_to_hr = small_to_hr @ scaling(hr_small.shape[1] / size_small[0], hr_small.shape[0] / size_small[1])
        hr_small = cv2.resize(hr_small, size_small, interpolation=cv2.INTER_AREA)
    mapping = np.linalg.inv(small_to_hr) @ lr_to_hr @ grid_to_lr
    hr_on_grid = cv2.warpPerspective(hr_small, mapping, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=(-1.0, -1.0, -1.0))
    lr_small = cv2.GaussianBlur(lr_small, (0, 0), BALANCE_BLUR)
    hr_on_grid = cv2.GaussianBlur(hr_on_grid, (0, 0), BALANCE_BLUR)
    # Flat, unclipped pixels only: at an edge the coarse estimate's error (up to a grid pixel) mixes two colours.
    both = np.concatenate([lr_small, hr_on_grid], axis=-1)
    ok = np.all((both > BALANCE_DARK) & (both < BALANCE_BRIGHT), axis=-1)
    for image in (lr_small, hr_on_grid):
        gy, gx = np.gradient(image[..., 1])
        ok &= np.hypot(gx, gy) < BALANCE_FLAT * (image[..., 1] + BALANCE_NOISE)
    ok = cv2.erode(ok.view(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if ok.sum() < BALANCE_MIN_PIXELS:
        return np.ones(3), int(ok.sum())
    log_lr, log_hr = np.log(lr_small[ok]), np.log(hr_on_grid[ok])
    chroma = (log_lr - log_lr[:, 1:2]) - (log_hr - log_hr[:, 1:2])
    return np.exp(np.median(chroma, axis=0)), int(ok.sum())
