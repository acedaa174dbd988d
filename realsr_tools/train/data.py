"""Paired patches for training: decoded pairs cached in memory, random aligned LR/HR crops, dihedral augmentation.

Convention
----------
Images are cached in their native integer type (``uint8`` or ``uint16``), ``H x W x 3`` RGB, exactly as
:func:`realsr_tools.imaging.read_pixels` returns them. An LR patch at ``(y, x)`` (top-left corner, LR pixels) of size
``patch`` pairs with the HR patch at ``(scale * y, scale * x)`` of size ``scale * patch``: pixel ``i`` of the LR
covers HR pixels ``scale * i ... scale * i + scale - 1`` (the corner-aligned grid of RealSR/DRealSR and of every
realsr stage). The eight dihedral transforms (identity, three rotations by 90 degrees, and each followed by a
horizontal flip) are applied identically to both patches.

Every random choice of a batch is a pure function of ``(seed, step)``: :meth:`PatchSampler.batch` draws the whole
global batch from ``numpy.random.default_rng([seed, step])`` and a process of a distributed run takes its slice
of it. A resumed run therefore sees exactly the batches an uninterrupted run would have seen, and ``N`` processes
with ``batch / N`` patches each see the same patches as one process with ``batch``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..pipeline.pairs import PairRef, check_scale


@dataclass(frozen=True)
class CachedPair:
    """One decoded pair: ``lr`` is ``H x W x 3`` and ``hr`` exactly ``scale`` times larger, same integer dtype."""

    id: str
    lr: np.ndarray
    hr: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.lr.nbytes + self.hr.nbytes


def load_pair(pair: PairRef, *, scale: int) -> CachedPair:
    """Decode one pair with :func:`realsr_tools.imaging.read_pixels`, refusing a size or bit-depth mismatch."""
    from ..imaging import read_pixels

    lr, hr = read_pixels(pair.lr), read_pixels(pair.hr)
    check_scale(hr.shape, lr.shape, scale, hr=pair.hr, lr=pair.lr)
    if lr.dtype != hr.dtype:
        raise ConfigError(f"{pair.id}: LR is {lr.dtype} but HR {hr.dtype} ({pair.lr}, {pair.hr}); export both "
                          "with the same bit depth")
    return CachedPair(pair.id, lr, hr)


def split_validation(ids: Sequence[str], *, fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split of pair ids: ``(train, val)``.

    The ids are ordered by the SHA-1 of their text, and the first ``round(fraction * n)`` (at least 1, and at
    least one pair left for training) form the validation set. The split depends only on the ids, not on their
    order or on a random seed, so adding pairs to a dataset moves few of the old ones.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ConfigError("pair ids must be unique to split off a validation set")
    if len(ids) < 2:
        raise ConfigError(f"{len(ids)} pair(s) cannot be split into training and validation; pass --val SOURCE "
                          "with separate validation pairs")
    count = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    ranked = sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    val = set(ranked[:count])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """Transform ``k`` (0-7) of the dihedral group of the square on an ``H x W x C`` array (a view, not a copy).

    ``k % 4`` counter-clockwise quarter turns, then a horizontal flip when ``k >= 4``.
    """
    out = np.rot90(image, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


SHARPNESS_SIGMA = 1.0
SHARPNESS_MARGIN = 4


def sharpen_patch(image: np.ndarray, y: int, x: int, patch: int, amount: float) -> np.ndarray:
    """The ``patch`` x ``patch`` window at ``(y, x)`` of ``image`` as ``w + amount (w - G * w)`` (an unsharp mask
    for ``amount > 0``, a blur towards ``G * w`` for ``amount < 0``), ``G`` a Gaussian of :data:`SHARPNESS_SIGMA`
    pixels applied with up to :data:`SHARPNESS_MARGIN` pixels of the image around the window (reflected beyond
    the image), rounded and clipped to the image's integer type."""
    import cv2

    h, w = image.shape[:2]
    m = SHARPNESS_MARGIN
    y0, x0 = max(0, y - m), max(0, x - m)
    region = image[y0:min(h, y + patch + m), x0:min(w, x + patch + m)].astype(np.float32)
    blurred = cv2.GaussianBlur(region, (0, 0), SHARPNESS_SIGMA, borderType=cv2.BORDER_REFLECT_101)
    out = (region + amount * (region - blurred))[y - y0:y - y0 + patch, x - x0:x - x0 + patch]
    peak = np.iinfo(image.dtype).max
    return np.clip(np.rint(out), 0, peak).astype(image.dtype)


@dataclass(frozen=True)
class Batch:
    """A batch of aligned patches, ``N x 3 x p x p`` (LR) and ``N x 3 x sp x sp`` (HR), cached dtype (NCHW)."""

    lr: np.ndarray
    hr: np.ndarray


class PatchSampler:
    """Random aligned LR/HR patches from cached pairs.

    Parameters
    ----------
    pairs : decoded training pairs (:func:`load_pair`); each LR must be at least ``patch`` pixels on both sides.
    scale : HR/LR size ratio.
    patch : LR patch size in pixels (the HR patch is ``scale * patch``).
    augment : apply a random dihedral transform to each patch pair.
    sharpness : LR sharpness jitter ``j`` (0 disables): each LR patch (not its HR) becomes
        ``LR + a (LR - G * LR)`` with ``a`` uniform in ``[-j, j]`` per patch and ``G`` a Gaussian of sigma
        :data:`SHARPNESS_SIGMA` LR pixels (``a < 0`` blurs, ``a > 0`` sharpens, an unsharp mask), computed with
        :data:`SHARPNESS_MARGIN` pixels of image context and rounded back to the cached integer type. Cameras blur
        and sharpen differently; a model that sees several input sharpnesses for one target learns to read the
        input's blur instead of one camera's (``docs/train.md``).

    An image is chosen with probability proportional to its number of patch positions, so every LR patch
    position of the dataset is equally likely.
    """

    def __init__(self, pairs: Sequence[CachedPair], *, scale: int, patch: int, augment: bool = True,
                 sharpness: float = 0.0) -> None:
        if not pairs:
            raise ConfigError("no training pairs")
        small = [p.id for p in pairs if min(p.lr.shape[:2]) < patch]
        if small:
            raise ConfigError(f"{len(small)} training pair(s) have an LR side under the {patch}-pixel patch "
                              f"({', '.join(small[:5])}); pass a smaller --patch")
        dtypes = {p.lr.dtype for p in pairs}
        if len(dtypes) > 1:
            raise ConfigError(f"training pairs mix bit depths ({', '.join(sorted(map(str, dtypes)))}); export them all "
                              "as 8-bit or all as 16-bit")
        self.pairs = list(pairs)
        self.scale = scale
        self.patch = patch
        self.augment = augment
        if sharpness < 0:
            raise ConfigError(f"--lr-sharpness must be 0 (off) or positive, got {sharpness}")
        self.sharpness = sharpness
        positions = np.array([(p.lr.shape[0] - patch + 1) * (p.lr.shape[1] - patch + 1) for p in self.pairs],
                             dtype=np.float64)
        self._weights = positions / positions.sum()

    def batch(self, *, seed: int, step: int, size: int, rank: int = 0, world: int = 1) -> Batch:
        """The slice ``rank`` of ``world`` of the global batch of ``size`` patches drawn for ``step``."""
        if size % world:
            raise ConfigError(f"batch {size} does not split evenly over {world} processes")
        rng = np.random.default_rng([seed, step])
        which = rng.choice(len(self.pairs), size=size, p=self._weights)
        corner = rng.random((size, 2))
        transform = rng.integers(0, 8, size=size) if self.augment else np.zeros(size, dtype=np.int64)
        # Drawn last, and only when on: batches without the jitter are those of earlier realsr versions.
        amount = rng.uniform(-self.sharpness, self.sharpness, size=size) if self.sharpness else None
        local = size // world
        p, s = self.patch, self.scale
        dtype = self.pairs[0].lr.dtype
        lr_out = np.empty((local, p, p, 3), dtype=dtype)
        hr_out = np.empty((local, p * s, p * s, 3), dtype=dtype)
        for out_index, index in enumerate(range(rank * local, (rank + 1) * local)):
            pair = self.pairs[which[index]]
            h, w = pair.lr.shape[:2]
            y = int(corner[index, 0] * (h - p + 1))
            x = int(corner[index, 1] * (w - p + 1))
            k = int(transform[index])
            lr_patch = pair.lr[y:y + p, x:x + p] if amount is None else \
                sharpen_patch(pair.lr, y, x, p, float(amount[index]))
            lr_out[out_index] = dihedral(lr_patch, k)
            hr_out[out_index] = dihedral(pair.hr[s * y:s * (y + p), s * x:s * (x + p)], k)
        return Batch(lr_out.transpose(0, 3, 1, 2), hr_out.transpose(0, 3, 1, 2))
