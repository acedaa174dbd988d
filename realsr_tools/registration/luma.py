"""Grey images for registration: linear-light luma (BT.601 weights of the sRGB-decoded channels), or that of the
channels that are not saturated alone.

Optics and pixel integration act on linear light, so two captures of one scene through different blurs differ by a
geometric warp plus a blur (and a gain) only in linear light. After the transfer curve (gamma ~1/2.2) bright detail
on a dark surround spreads differently at the two scales, and an intensity fit on encoded values is pulled towards
that difference.
"""

from __future__ import annotations

import numpy as np


def srgb_to_linear(value):
    """The inverse sRGB transfer curve (IEC 61966-2-1) on values in [0, 1], float64."""
    value = np.asarray(value, dtype=np.float64)
    return np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4)


# Raw values at or beyond these are clipped (dark noise at zero, highlights at the top); stated on the encoded
# scale (0.005 and 0.99 of full scale) and applied to the linear-light grey that registration_grey returns.
# Saturated pixels (raw values above CLIP_HIGH) have no known true value, and the edge of a plateau that only one
# capture clips pulls the fit (measured: 0.15 LR px on a simulated pair whose HR is 17 % saturated). After
# smoothing, a pixel is left out when saturated pixels make up more than CLIP_WEIGHT of its smoothing kernel's
# weight. Much smaller weights also remove the textured rim of every highlight, which can carry most of the
# geometry along one axis (measured: 1e-3 moved a headlight pair by 0.3 px); much larger ones let the plateau's
# edge back in. Dark pixels (below CLIP_LOW after smoothing) are left out one by one: dark noise clipped at zero
# biases a value slightly but moves no edge, and dark scenes (a star field) have their geometry next to them.
ENCODED_CLIP_LOW, ENCODED_CLIP_HIGH = 0.005, 0.99
CLIP_LOW, CLIP_HIGH = float(srgb_to_linear(ENCODED_CLIP_LOW)), float(srgb_to_linear(ENCODED_CLIP_HIGH))


def bt709_to_linear(value):
    """The inverse BT.709 transfer curve (power 0.45 with a linear toe of slope 4.5; LibRaw's gamma (2.222, 4.5),
    realsr's default RAW rendering) on values in [0, 1], float64."""
    value = np.asarray(value, dtype=np.float64)
    return np.where(value < 0.081, value / 4.5, ((value + 0.099) / 1.099) ** (1 / 0.45))


# The transfer curves registration_grey decodes: "srgb" (JPEG/PNG/TIFF captures), "bt709" (RAW files in realsr's
# default rendering; the sRGB inverse would leave BT.709 values 10-40 % off linear between 5 % and 50 % grey) or
# "linear" (already linear light: RAW rendered with --raw-gamma linear, taken as it is).
DECODE = {"srgb": srgb_to_linear, "bt709": bt709_to_linear, "linear": lambda value: np.asarray(value, np.float64)}


def grey(image: np.ndarray) -> np.ndarray:
    """BT.601 luma as float32 in [0, 1] from uint8/uint16/float32 RGB (encoded values, no decoding)."""
    import cv2

    if image.dtype == np.float32:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    peak = 255.0 if image.dtype == np.uint8 else 65535.0
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / peak)


_TABLES: dict = {}


def linear(image: np.ndarray, curve: str = "srgb") -> np.ndarray:
    """Linear-light float32 copy in [0, 1] of an uint8/uint16/float32 image encoded with ``curve`` (a key of
    :data:`DECODE`; a lookup table for integer formats)."""
    if curve not in DECODE:
        raise ValueError(f"unknown transfer curve {curve!r}; expected one of {sorted(DECODE)}")
    if image.dtype == np.float32:
        return DECODE[curve](np.clip(image, 0.0, 1.0)).astype(np.float32)
    if (curve, image.dtype) not in _TABLES:
        peak = 255 if image.dtype == np.uint8 else 65535
        _TABLES[curve, image.dtype] = DECODE[curve](np.arange(peak + 1) / peak).astype(np.float32)
    return np.take(_TABLES[curve, image.dtype], image)


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

    Each channel is decoded to linear light with its image's transfer curve (``curves``: LR, HR; :func:`linear`)
    and weighted with the BT.601 luma weights
    unless a channel is saturated alone (at the format's top value while the encoded luma is below
    :data:`ENCODED_CLIP_HIGH`) on more than :data:`CHANNEL_SATURATION` of either frame: then the luma weights of
    the other channels, renormalised, for both images alike. The shares are measured on every 8th pixel.
    """
    import cv2

    keep = np.ones(3, bool)
    for image in (lr, hr):
        sample = np.ascontiguousarray(image[::8, ::8])
        peak = 1.0 if image.dtype == np.float32 else (255 if image.dtype == np.uint8 else 65535)
        unsaturated_luma = grey(sample) < ENCODED_CLIP_HIGH
        alone = (sample >= peak) & unsaturated_luma[..., None]
        keep &= alone.mean(axis=(0, 1)) <= CHANNEL_SATURATION
    every = keep.all() or not keep.any()
    weights = np.asarray(LUMA) if every else np.where(keep, LUMA, 0.0) / np.sum(np.where(keep, LUMA, 0.0))
    used = np.flatnonzero(weights > 0)

    def weighted(image: np.ndarray, curve: str) -> np.ndarray:
        # One decoded channel at a time: a 24-MP frame holds the sum and one channel, never all three.
        out = None
        for c in used:
            channel = linear(image[..., c], curve)
            out = channel * np.float32(weights[c]) if out is None else cv2.scaleAdd(channel, float(weights[c]), out)
        return out

    return weighted(lr, curves[0]), weighted(hr, curves[1]), LUMA if every else tuple(float(w) for w in weights)
