"""Photometric correction of an LR capture towards its HR capture: per-channel gain and offset with a smooth gain
surface for vignetting.

Model (per channel ``c``, on the LR output grid)::

    corrected_c(x, y) = g_c(x, y) * lr_c(x, y) + o_c,    g_c(x, y) = sum_k a_ck * phi_k(u, v)

with ``phi = (1, u, v, u^2, u v, v^2)`` and ``u, v`` the pixel centre in ``[-1, 1]`` across the window
(``u = 2 x / (width - 1) - 1``). The quadratic gain surface absorbs the difference of the two captures' vignetting
over the overlap (radial fall-off is close to quadratic there) and any smooth exposure gradient; ``o_c`` absorbs
black-level and flare differences.

Direction: the LR is corrected towards the HR, never the other way round. The HR is the target a model is
trained and scored against, so its tones stay those of a real capture; the LR only changes by a smooth per-pixel
affine map, which keeps its degradation (blur, noise, demosaicing and compression artefacts) as the camera made
it, and the stored parameters make the correction reproducible. The fit uses the HR brought onto the LR grid
(area-downscaled), low-passed on both sides so that the blur difference between the captures does not enter
the fit, excludes clipped pixels, and is robust (Huber weights) to moving objects and residual misalignment.

Convention: images are ``H x W x 3`` float32 RGB in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TERMS = ("1", "u", "v", "u^2", "uv", "v^2")
FIT_SIZE = 256  # the fit runs on images area-downscaled to at most this many pixels on their longer side
CLIP_LOW, CLIP_HIGH = 0.01, 0.985
RIDGE = 1e-3  # small penalty on the spatial terms: a flat scene cannot make the surface wander
HUBER = 1.345
# Linear-light level added to the reference in a relative fit (``fit_photometric(..., relative=LINEAR_FLOOR)``):
# darker than about 2 % of white a pixel's residual is mostly noise, and it counts as an absolute one.
LINEAR_FLOOR = 0.02


@dataclass(frozen=True)
class PhotometricModel:
    """Fitted correction. ``gain``: 3 x 6 coefficients of :data:`TERMS` per channel; ``offset``: 3 values."""

    gain: np.ndarray
    offset: np.ndarray

    @classmethod
    def identity(cls) -> PhotometricModel:
        gain = np.zeros((3, len(TERMS)))
        gain[:, 0] = 1.0
        return cls(gain, np.zeros(3))

    def gain_map(self, shape: tuple[int, int], channel: int) -> np.ndarray:
        """``g_c`` on an ``H x W`` grid (float32)."""
        h, w = shape
        u = np.linspace(-1, 1, w, dtype=np.float32)[None, :] if w > 1 else np.zeros((1, 1), np.float32)
        v = np.linspace(-1, 1, h, dtype=np.float32)[:, None] if h > 1 else np.zeros((1, 1), np.float32)
        a = self.gain[channel].astype(np.float32)
        return a[0] + a[1] * u + a[2] * v + a[3] * u * u + a[4] * u * v + a[5] * v * v

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Corrected float32 image (not clipped; writing rounds and clips)."""
        out = np.empty(image.shape, np.float32)
        for c in range(3):
            out[..., c] = self.gain_map(image.shape[:2], c) * image[..., c] + np.float32(self.offset[c])
        return out

    def to_dict(self) -> dict:
        return {
            "model": "per-channel quadratic gain surface + offset, applied to the LR towards the HR",
            "terms": list(TERMS),
            "coords": "u, v in [-1, 1] across the output window (pixel centres)",
            "gain": np.round(self.gain, 6).tolist(),
            "offset": np.round(self.offset, 6).tolist(),
        }


def fit_photometric(source: np.ndarray, reference: np.ndarray, *, iterations: int = 4,
                    relative: float | None = None) -> PhotometricModel:
    """Fit the correction that maps ``source`` (LR) onto ``reference`` (HR on the LR grid), robustly.

    Parameters
    ----------
    source, reference : ``H x W x 3`` float32 in [0, 1] on the same grid.
    iterations : IRLS iterations (Huber weights, scale from the median absolute deviation).
    relative : ``None``: residuals in the images' units (encoded values: each pixel weighs by its tone). A level:
        each residual divided by the reference plus it, for linear light, where bright pixels would otherwise
        outweigh the dark ones by their light alone and be the first the Huber weights discount.
    """
    import cv2

    if source.shape != reference.shape:
        raise ValueError(f"images differ in shape: source {source.shape}, reference {reference.shape}")
    h, w = source.shape[:2]
    factor = max(1.0, max(h, w) / FIT_SIZE)
    size = (max(1, int(round(w / factor))), max(1, int(round(h / factor))))
    # Low-pass both: a blur difference between the captures must not look like a gain difference.
    src = cv2.GaussianBlur(cv2.resize(source, size, interpolation=cv2.INTER_AREA), (0, 0), 1.0)
    ref = cv2.GaussianBlur(cv2.resize(reference, size, interpolation=cv2.INTER_AREA), (0, 0), 1.0)
    u = np.linspace(-1, 1, size[0]) if size[0] > 1 else np.zeros(1)
    v = np.linspace(-1, 1, size[1]) if size[1] > 1 else np.zeros(1)
    uu, vv = np.meshgrid(u, v)
    phi = np.stack([np.ones_like(uu), uu, vv, uu * uu, uu * vv, vv * vv], axis=-1).reshape(-1, len(TERMS))
    # Black clipping is what CLIP_LOW excludes from encoded values; relative residuals weigh the dark pixels down
    # already, and only zeros (noise clipped at black) are left out.
    low = CLIP_LOW if relative is None else 0.0
    unclipped = np.all((src > low) & (src < CLIP_HIGH) & (ref > low) & (ref < CLIP_HIGH), axis=-1)
    unclipped = unclipped.reshape(-1)
    gain = np.zeros((3, len(TERMS)))
    gain[:, 0] = 1.0
    offset = np.zeros(3)
    if unclipped.sum() < 4 * (len(TERMS) + 1):
        return PhotometricModel(gain, offset)  # nothing left to fit on: leave the LR as it is
    spatial = np.diag([0.0] + [1.0] * (len(TERMS) - 1) + [0.0])
    for c in range(3):
        s = src[..., c].reshape(-1).astype(np.float64)[unclipped]
        r = ref[..., c].reshape(-1).astype(np.float64)[unclipped]
        design = np.concatenate([phi[unclipped] * s[:, None], np.ones((len(s), 1))], axis=1)
        if relative is not None:
            design, r = design / (r + relative)[:, None], r / (r + relative)
        weights = np.ones(len(s))
        for _ in range(iterations):
            a = design * weights[:, None]
            normal = a.T @ design
            # Relative rows are ratios, near the gain where the reference is bright and smaller where it is dark: the
            # penalty follows their information (normal[0, 0]), so a mostly dark window's surface is not held flat.
            strength = normal[0, 0] if relative is not None else len(s)
            params = np.linalg.solve(normal + RIDGE * strength * spatial, a.T @ r)
            residual = design @ params - r
            scale = 1.4826 * np.median(np.abs(residual)) + 1e-6
            z = np.abs(residual) / (HUBER * scale)
            weights = np.where(z <= 1, 1.0, 1.0 / np.maximum(z, 1e-12))
        gain[c] = params[:-1]
        offset[c] = params[-1]
    return PhotometricModel(gain, offset)
