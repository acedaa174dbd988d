"""RGB primaries, and an image moved from one colour encoding (transfer curve and primaries) to another.

A scene whose captures state different encodings (an Adobe RGB camera JPEG beside an sRGB one) is written in one:
the LR is re-encoded into the HR's before its colour correction, whose per-channel gains and offsets can map neither
one curve nor one set of primaries onto another (docs/align.md, "Photometric correction"). Primaries are held as the
3 x 3 matrix from linear RGB to ICC's profile connection space (XYZ, D50), white points adapted with Bradford's
transform as ICC v4 profiles do, so that an ICC profile's colorant tags compare with the named spaces directly and a
neutral grey stays neutral in every conversion.

Primaries are named as the manifest records them: a key of :data:`PRIMARIES`, ``xyz:`` and the nine matrix entries
(row-major) for a profile's colorants that are none of them, or ``unknown`` (a RAW file rendered in camera RGB).
"""

from __future__ import annotations

import functools

import numpy as np

D65 = (0.3127, 0.3290)
D50 = (0.3457, 0.3585)
# CIE xy of red, green, blue and white (IEC 61966-2-1; Adobe RGB (1998); SMPTE EG 432-1; ITU-R BT.2020; ROMM RGB).
PRIMARIES = {
    "srgb": ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06), D65),
    "adobe-rgb": ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06), D65),
    "display-p3": ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), D65),
    "bt2020": ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), D65),
    "prophoto": ((0.7347, 0.2653), (0.1596, 0.8404), (0.0366, 0.0001), D50),
}
PCS_WHITE = np.array([0.9642, 1.0, 0.8249])  # ICC.1:2010, 7.2.16: the D50 of the connection space
BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
# A profile's colorants are taken as a named space's when no entry differs by more than this: the ICC sRGB profiles
# in circulation round to 4 decimals (1e-4) and s15Fixed16 to 1.5e-5; Adobe RGB and sRGB differ by 0.18.
MATRIX_TOLERANCE = 2e-3


def _xyz(xy) -> np.ndarray:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _pcs_matrix(red, green, blue, white) -> np.ndarray:
    """Linear RGB to XYZ (D50) for primaries and white given as CIE xy: R = G = B = 1 is the white, adapted to D50."""
    columns = np.stack([_xyz(xy) for xy in (red, green, blue)], axis=1)
    white_xyz = _xyz(white)
    matrix = columns * np.linalg.solve(columns, white_xyz)
    cone = BRADFORD @ white_xyz, BRADFORD @ PCS_WHITE
    return np.linalg.solve(BRADFORD, np.diag(cone[1] / cone[0]) @ BRADFORD) @ matrix


@functools.lru_cache(maxsize=None)
def _named_matrix(name: str) -> np.ndarray:
    return _pcs_matrix(*PRIMARIES[name])


def rgb_to_pcs(primaries: str) -> np.ndarray | None:
    """Linear RGB with ``primaries`` to XYZ (D50), 3 x 3; None where they are unknown or degenerate."""
    if primaries in PRIMARIES:
        return _named_matrix(primaries)
    kind, _, numbers = primaries.partition(":")
    if kind == "xyz":
        try:
            values = [float(number) for number in numbers.split(",")]
        except ValueError:
            return None
        matrix = np.array(values).reshape(3, 3) if len(values) == 9 else None
        # colorants that collapse the colours (a damaged profile) convert nothing
        if matrix is not None and np.isfinite(matrix).all() and abs(np.linalg.det(matrix)) > 1e-6:
            return matrix
    return None


def primaries_name(matrix: np.ndarray) -> str:
    """The name of the named space whose matrix ``matrix`` (RGB to XYZ D50, e.g. an ICC profile's colorants) is, else
    its ``xyz:`` name."""
    for name in PRIMARIES:
        if np.max(np.abs(_named_matrix(name) - matrix)) <= MATRIX_TOLERANCE:
            return name
    return "xyz:" + ",".join(f"{value:.5g}" for value in np.asarray(matrix, np.float64).ravel())


def primaries_from_chromaticities(red, green, blue, white) -> str:
    """The name of the primaries given by CIE xy chromaticities (a PNG cHRM chunk)."""
    return primaries_name(_pcs_matrix(red, green, blue, white))


def conversion(source: str, target: str) -> np.ndarray | None:
    """The 3 x 3 matrix from linear RGB with ``source`` primaries to linear RGB with ``target``'s; None where they are
    the same or either is unknown (nothing to convert, or nothing to convert with)."""
    if source == target:
        return None
    from_pcs, to_pcs = rgb_to_pcs(source), rgb_to_pcs(target)
    if from_pcs is None or to_pcs is None:
        return None
    matrix = np.linalg.solve(to_pcs, from_pcs)
    return None if np.allclose(matrix, np.eye(3), atol=1e-6) else matrix


def convert_encoding(image: np.ndarray, source: tuple[str, str], target: tuple[str, str], *,
                     dtype: type = np.float32) -> np.ndarray:
    """``image`` (uint8 / uint16 / float32 RGB, encoded with the transfer curve and primaries ``source``) encoded with
    ``target``'s: the same light, another encoding, as float32 in [0, 1] or rounded ``uint16``. Values out of the
    target's gamut (a saturated Adobe RGB green in sRGB) are clipped in linear light. Converted in row strips of a few
    MB, so a 24-MP frame never has a float copy whole."""
    import cv2

    from .registration.luma import encoded, linear, row_strips

    matrix = conversion(source[1], target[1])
    out = np.empty(image.shape, dtype)
    for rows in row_strips(image):
        light = linear(image[rows], source[0])
        if matrix is not None:
            light = cv2.transform(light, matrix.astype(np.float32))
        strip = encoded(light, target[0])
        out[rows] = strip if dtype == np.float32 else np.rint(strip * np.float32(np.iinfo(dtype).max))
    return out
