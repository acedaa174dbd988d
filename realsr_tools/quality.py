"""How well an LR image and an HR image brought onto its grid agree: residual misalignment from tile registration.

Convention: both images are ``H x W x 3`` (or ``H x W``) float32 in [0, 1] on the same pixel grid (the LR grid);
shifts are (dx, dy) in pixels of that grid, positive when ``test`` content sits right/below ``reference`` content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TILE = 64
MIN_TILE_STD = 0.02  # grey-level std below which a tile is too flat to show misalignment
MIN_RESPONSE = 0.1  # phase-correlation peak below which a tile's match is not trusted
REFINE_STEPS = 10
MIN_CORNERNESS = 2e-5  # smaller structure-tensor eigenvalue per pixel below which a tile has one edge direction only


@dataclass(frozen=True)
class ResidualShift:
    """Residual misalignment over textured tiles. ``median``/``worst`` are ``None`` when no tile is textured."""

    median: float | None
    worst: float | None
    tiles: int  # textured tiles measured
    total_tiles: int

    @property
    def flat(self) -> bool:
        return self.tiles == 0

    def to_dict(self) -> dict:
        return {"median": self.median, "worst": self.worst, "tiles": self.tiles, "total_tiles": self.total_tiles}


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return image


def tile_shifts(reference: np.ndarray, test: np.ndarray, *, tile: int = DEFAULT_TILE) -> tuple[np.ndarray, int]:
    """Sub-pixel (dx, dy) of ``test`` against ``reference`` for every textured tile, and the number of tiles.

    Phase correlation with a Hann window per non-overlapping tile; flat tiles and weak peaks are left out.
    """
    import cv2

    ref, tst = _grey(reference), _grey(test)
    if ref.shape != tst.shape:
        raise ValueError(f"images differ in shape: reference {ref.shape}, test {tst.shape}")
    h, w = ref.shape
    tile = min(tile, h, w)
    window = cv2.createHanningWindow((tile, tile), cv2.CV_32F)
    shifts = []
    total = 0
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            total += 1
            a = ref[y : y + tile, x : x + tile]
            b = tst[y : y + tile, x : x + tile]
            if a.std() < MIN_TILE_STD or b.std() < MIN_TILE_STD:
                continue
            # phaseCorrelate multiplies its inputs by the window in place: hand it copies.
            (dx, dy), response = cv2.phaseCorrelate(a.copy(), b.copy(), window)
            if response < MIN_RESPONSE:
                continue
            refined = _refine_lucas_kanade(a, tst, (x, y), (dx, dy))
            if refined is None:
                continue
            dx, dy = refined
            shifts.append((dx, dy))
    return np.asarray(shifts, dtype=np.float64).reshape(-1, 2), total


def _refine_lucas_kanade(reference_tile: np.ndarray, test: np.ndarray, corner: tuple[int, int],
                         start: tuple[float, float]) -> tuple[float, float] | None:
    """Gauss-Newton translation refinement of one tile from the phase-correlation start.

    Phase correlation alone is biased towards zero at sub-pixel shifts; the gradient-based refinement is not.
    Tiles whose structure tensor is near rank one (a single edge direction: the aperture problem) are refused.
    """
    import cv2

    tile = reference_tile.shape[0]
    gy, gx = np.gradient(reference_tile)
    inner = (slice(2, -2), slice(2, -2))
    gx, gy = gx[inner], gy[inner]
    tensor = np.array([[np.sum(gx * gx), np.sum(gx * gy)], [np.sum(gx * gy), np.sum(gy * gy)]], np.float64)
    if np.linalg.eigvalsh(tensor)[0] / gx.size < MIN_CORNERNESS:
        return None
    inverse = np.linalg.inv(tensor)
    # Bicubic resampling: bilinear would blur the moved tile and bias the estimate at fractional shifts.
    grid_y, grid_x = np.mgrid[corner[1] : corner[1] + tile, corner[0] : corner[0] + tile].astype(np.float32)
    dx, dy = start
    for _ in range(REFINE_STEPS):
        moved = cv2.remap(test, grid_x + np.float32(dx), grid_y + np.float32(dy), cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)
        diff = (moved - reference_tile)[inner]
        step = -inverse @ np.array([np.sum(gx * diff), np.sum(gy * diff)])
        dx, dy = dx + step[0], dy + step[1]
        if abs(step[0]) + abs(step[1]) < 1e-3:
            break
    if abs(dx - start[0]) > 1.5 or abs(dy - start[1]) > 1.5:
        return None  # diverged: the two tiles do not show the same content
    return float(dx), float(dy)


def residual_shift(reference: np.ndarray, test: np.ndarray, *, tile: int = DEFAULT_TILE) -> ResidualShift:
    """Median and worst residual shift magnitude over textured tiles (LR pixels)."""
    shifts, total = tile_shifts(reference, test, tile=tile)
    if len(shifts) == 0:
        return ResidualShift(None, None, 0, total)
    magnitude = np.hypot(shifts[:, 0], shifts[:, 1])
    return ResidualShift(float(np.median(magnitude)), float(magnitude.max()), len(shifts), total)
