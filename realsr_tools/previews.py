"""Pictures of an aligned pair that a person judges it by (``realsr align --preview``).

A preview has three panels under one labelled band, each :data:`PREVIEW_SIZE` px on its longer side (small windows
enlarged with nearest-neighbour, so single pixels stay visible):

1. a checkerboard of LR and HR-on-LR squares: edges run straight across the squares when the pair is aligned;
2. the absolute difference, amplified 4x;
3. what the independent verifier (:mod:`realsr_tools.verification`) measured, tile by tile, on a dimmed copy of the
   LR: an arrow per measured tile, its displacement magnified so that the verifier's limit is a third of the tiles'
   spacing, green up to half the limit, yellow up to the limit, red beyond; a dot where the content could not show a
   displacement (grey: flat or too noisy, blue: one edge direction), a magenta cross where the content did not match.
   Why: a verdict of ``aligned`` measured on 30 % of the window and one measured everywhere read alike in the
   manifest; the panel shows where the pair was checked and where nothing could be.

Images are float32 RGB in [0, 1]; the first two panels share one contrast stretch (the LR's 1st-99th percentile).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PREVIEW_SIZE = 384  # px on the longer side of each panel
CHECKER_SQUARE = 16  # px of the checkerboard's squares (on the panel; at least this many LR px on large windows)
GAP = 4  # px of white between panels
LINE_HEIGHT = 16  # px per line of the label band
GREEN, YELLOW, RED = (0.1, 0.8, 0.1), (0.95, 0.8, 0.0), (0.95, 0.05, 0.05)
GREY, BLUE, MAGENTA = (0.75, 0.75, 0.75), (0.25, 0.5, 1.0), (0.95, 0.1, 0.95)
MAX_ARROW = 3.0  # arrows are drawn at most this many times the limit's length (a pair refused by pixels, not tenths)


def preview_image(lr: np.ndarray, hr_on_lr: np.ndarray, *, tiles: Sequence | None = None,
                  verification=None, square: int = CHECKER_SQUARE) -> np.ndarray:
    """The preview of an aligned pair: ``lr`` (as written) and ``hr_on_lr`` (the HR output on the LR grid), both
    ``H x W x 3`` float in [0, 1]; with ``tiles`` (:class:`~realsr_tools.verification.TileMeasure` list) and
    ``verification`` (:class:`~realsr_tools.verification.Verification`) the verifier's panel is added."""
    import cv2

    h, w = lr.shape[:2]
    f = max(h, w) / PREVIEW_SIZE
    shape = (max(1, round(w / f)), max(1, round(h / f)))
    interpolation = cv2.INTER_AREA if f > 1 else cv2.INTER_NEAREST
    low, high = np.percentile(lr, [1, 99])
    stretch = np.float32(1.0 / max(float(high - low), 1e-3))
    a = np.clip((cv2.resize(lr, shape, interpolation=interpolation) - low) * stretch, 0, 1)
    b = np.clip((cv2.resize(hr_on_lr, shape, interpolation=interpolation) - low) * stretch, 0, 1)
    cell = max(square, round(square / f)) if f < 1 else square
    ys, xs = np.mgrid[0:shape[1], 0:shape[0]]
    board = ((ys // cell + xs // cell) % 2 == 0)[..., None]
    panels = [np.where(board, a, b), np.clip(4 * np.abs(a - b), 0, 1)]
    labels = [["LR | HR checkerboard"], ["4 x |LR - HR|"]]
    if tiles is not None and verification is not None:
        panels.append(verifier_panel(a, tiles, verification, scale=shape[0] / w))
        labels.append(verifier_labels(tiles, verification))
    gap = np.ones((shape[1], GAP, 3), np.float32)
    row = np.concatenate([part for panel in panels for part in (panel, gap)][:-1], axis=1).astype(np.float32)
    band = np.full((LINE_HEIGHT * max(map(len, labels)) + 6, row.shape[1], 3), 255, np.uint8)
    for i, lines in enumerate(labels):
        for j, text in enumerate(lines):
            cv2.putText(band, text, (4 + i * (shape[0] + GAP), LINE_HEIGHT * (j + 1)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band.astype(np.float32) / 255, row], axis=0)


def arrow_gain(tiles: Sequence, verification) -> float:
    """Magnification of the displacement arrows: the verifier's limit is drawn a third of the spacing of the tile
    centres (half a tile on small windows, more where large windows spread at most 16 tiles a side)."""
    spacings = [np.diff(np.unique([getattr(t, axis) for t in tiles])) for axis in ("x", "y")]
    spacing = min((float(np.median(d)) for d in spacings if d.size), default=verification.tile / 2)
    return spacing / 3 / verification.limit


def verifier_labels(tiles: Sequence, verification) -> list[str]:
    """The verifier panel's three label lines: verdict and field, the arrows' scale and colours, the dots."""
    v = verification
    # The judged point's estimate and standard error: a field refused one standard error above 0.45 reads as such,
    # not as a bare 0.45 under the limit.
    if v.field is None:
        field = "-" if v.corner is None else f"{v.corner:.2f}"
    else:
        field = f"{v.field_estimate:.2f} +- {v.field_sigma:.2f}"
    return [f"verifier: {v.verdict}, field {field} px (limit {v.limit:g}), {v.measurable:.0%} measured",
            f"shift x{arrow_gain(tiles, v):.0f}: green <={v.limit / 2:g}, yellow <={v.limit:g} px, red more",
            "grey flat/noisy/clipped, blue 1-D, magenta x no match"]


def verifier_panel(stretched_lr: np.ndarray, tiles: Sequence, verification, *, scale: float) -> np.ndarray:
    """The verifier's tiles drawn on a dimmed grey copy of ``stretched_lr`` (the panel-sized, stretched LR);
    ``scale``: panel px per LR px."""
    import cv2

    luma = stretched_lr @ np.array([0.299, 0.587, 0.114], np.float32)
    panel = np.repeat((0.12 + 0.4 * luma)[..., None], 3, axis=2).astype(np.float32)
    gain = arrow_gain(tiles, verification) * scale
    longest = MAX_ARROW * verification.limit * gain
    radius = 4
    for t in tiles:
        centre = np.array([(t.x + 0.5) * scale - 0.5, (t.y + 0.5) * scale - 0.5])
        at = tuple(int(round(c)) for c in centre)
        if t.kind == "measured":
            magnitude = float(np.hypot(t.dx, t.dy))
            colour = GREEN if magnitude <= verification.limit / 2 else YELLOW if magnitude <= verification.limit \
                else RED
            drawn = np.array([t.dx, t.dy]) * gain
            length = float(np.hypot(*drawn))
            if length > longest:
                drawn *= longest / length
            tip = tuple(int(round(c)) for c in centre + drawn)
            cv2.circle(panel, at, 2, colour, -1, cv2.LINE_AA)
            if tip != at:
                cv2.arrowedLine(panel, at, tip, colour, 2, cv2.LINE_AA, tipLength=0.3)
        elif t.kind == "mismatched":
            d = radius
            cv2.line(panel, (at[0] - d, at[1] - d), (at[0] + d, at[1] + d), MAGENTA, 1, cv2.LINE_AA)
            cv2.line(panel, (at[0] - d, at[1] + d), (at[0] + d, at[1] - d), MAGENTA, 1, cv2.LINE_AA)
        else:
            cv2.circle(panel, at, radius, BLUE if t.kind == "one-dimensional" else GREY, -1, cv2.LINE_AA)
    return panel
