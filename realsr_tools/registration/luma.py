"""Grey images for registration: BT.601 luma, or the luma of the channels that are not saturated alone."""

from __future__ import annotations

import numpy as np

# Raw values at or beyond these are clipped (dark noise at zero, highlights at the top).
# Saturated pixels (raw values above CLIP_HIGH) have no known true value, and the edge of a plateau that only one
# capture clips pulls the fit (measured: 0.15 LR px on a simulated pair whose HR is 17 % saturated). After
# smoothing, a pixel is left out when saturated pixels make up more than CLIP_WEIGHT of its smoothing kernel's
# weight. Much smaller weights also remove the textured rim of every highlight, which can carry most of the
# geometry along one axis (measured: 1e-3 moved a headlight pair by 0.3 px); much larger ones let the plateau's
# edge back in. Dark pixels (below CLIP_LOW after smoothing) are left out one by one: dark noise clipped at zero
# biases a value slightly but moves no edge, and dark scenes (a star field) have their geometry next to them.
CLIP_LOW, CLIP_HIGH = 0.005, 0.99


def grey(image: np.ndarray) -> np.ndarray:
    """BT.601 luma as float32 in [0, 1] from uint8/uint16/float32 RGB."""
    import cv2

    if image.dtype == np.float32:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    peak = 255.0 if image.dtype == np.uint8 else 65535.0
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / peak)


LUMA = (0.299, 0.587, 0.114)  # BT.601 weights of R, G, B
# A channel saturated on its own (a red wall whose red channel clips while its luma stays below CLIP_HIGH) loses its
# texture in one capture only; that luma difference biased a simulated pair 0.5-0.9 px. Such a channel is left out
# of both images' grey when it is saturated alone on more than CHANNEL_SATURATION of either frame. Dropping a
# channel costs signal-to-noise everywhere: at 1-5 % it dropped channels on many simulated pairs and refused one
# registered to 0.08 px; the red wall was 74 % saturated.
CHANNEL_SATURATION = 0.15


def registration_grey(lr: np.ndarray, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Grey images of an LR/HR pair for :func:`register` and the channel weights used (R, G, B; sum 1).

    BT.601 luma (:func:`grey`) unless a channel is saturated alone (at the format's top value while the luma is
    below :data:`CLIP_HIGH`) on more than :data:`CHANNEL_SATURATION` of either frame: then the luma weights of
    the other channels, renormalised, for both images alike. The shares are measured on every 8th pixel.
    """
    import cv2

    keep = np.ones(3, bool)
    for image in (lr, hr):
        sample = np.ascontiguousarray(image[::8, ::8])
        peak = 1.0 if image.dtype == np.float32 else (255 if image.dtype == np.uint8 else 65535)
        unsaturated_luma = grey(sample) < CLIP_HIGH
        alone = (sample >= peak) & unsaturated_luma[..., None]
        keep &= alone.mean(axis=(0, 1)) <= CHANNEL_SATURATION
    if keep.all() or not keep.any():
        return grey(lr), grey(hr), LUMA
    weights = np.where(keep, LUMA, 0.0)
    weights /= weights.sum()

    def weighted(image: np.ndarray) -> np.ndarray:
        peak = 1.0 if image.dtype == np.float32 else (255.0 if image.dtype == np.uint8 else 65535.0)
        channels = [np.ascontiguousarray(image[..., c]) for c in np.flatnonzero(keep)]
        scales = [float(weights[c] / peak) for c in np.flatnonzero(keep)]
        if len(channels) == 1:
            return channels[0].astype(np.float32) * np.float32(scales[0])
        return cv2.addWeighted(channels[0], scales[0], channels[1], scales[1], 0.0, dtype=cv2.CV_32F)

    return weighted(lr), weighted(hr), tuple(float(w) for w in weights)
