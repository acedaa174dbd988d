"""Where AIM 2020 patches are cut: start positions that cover a frame exactly, the patch plan, patch names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# LR patch side of the AIM 2020 Real Image SR tracks (HR patch = scale x this).
AIM_PATCH = {2: 380, 3: 272, 4: 192}


@dataclass(frozen=True)
class PatchPlan:
    """Where to cut one pair, on the LR grid.

    Attributes
    ----------
    boxes : ``(x, y)`` top-left LR pixel of each kept patch, row by row (y, then x), in numbering order.
    size : patch side in LR pixels.
    skipped_invalid : patches of the grid that touch an invalid pixel and were left out.
    """

    boxes: tuple[tuple[int, int], ...]
    size: int
    skipped_invalid: int = 0


def patch_starts(length: int, size: int, step: int) -> np.ndarray:
    """Starts of the patches along one axis: every ``step`` while a patch fits, the last one flush with the end.

    Returns an empty array when ``length < size``.
    """
    if size < 1 or step < 1:
        raise ValueError(f"size and step must be positive, got size={size}, step={step}")
    if length < size:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, length - size + 1, step, dtype=np.int64)
    if starts[-1] + size < length:
        starts = np.append(starts, length - size)
    return starts


def plan_patches(height: int, width: int, *, size: int, step: int, valid: np.ndarray | None = None) -> PatchPlan:
    """The patch grid of an ``height x width`` LR image (see the module's placement rule).

    ``valid`` is an optional ``height x width`` boolean mask (True = valid pixel). The grid then covers the bounding
    box of the valid pixels and patches touching an invalid pixel are skipped (counted in ``skipped_invalid``).
    """
    if valid is None:
        ys, xs = patch_starts(height, size, step), patch_starts(width, size, step)
        return PatchPlan(tuple((int(x), int(y)) for y in ys for x in xs), size)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != (height, width):
        raise ValueError(f"mask is {valid.shape[1]}x{valid.shape[0]}, image {width}x{height}")
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    if len(rows) == 0:
        return PatchPlan((), size)
    top, left = int(rows[0]), int(cols[0])
    ys = top + patch_starts(int(rows[-1]) + 1 - top, size, step)
    xs = left + patch_starts(int(cols[-1]) + 1 - left, size, step)
    # Summed-area table of invalid pixels: a box is usable when it holds none.
    invalid = np.zeros((height + 1, width + 1), dtype=np.int64)
    invalid[1:, 1:] = np.cumsum(np.cumsum(~valid, axis=0, dtype=np.int64), axis=1)
    boxes, skipped = [], 0
    for y in ys:
        for x in xs:
            bad = invalid[y + size, x + size] - invalid[y, x + size] - invalid[y + size, x] + invalid[y, x]
            if bad:
                skipped += 1
            else:
                boxes.append((int(x), int(y)))
    return PatchPlan(tuple(boxes), size, skipped)


def patch_name(pair_id: str, index: int) -> str:
    """File name of a pair's ``index``-th patch (1-based), the same in ``HR/`` and ``LR/``."""
    return f"{pair_id}_s{index:03d}.png"
