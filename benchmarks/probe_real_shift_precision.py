"""Probe: registration precision on real content with exact truth, by the shift's fractional position.

A published HR (``../shared/data/pairs``) is shifted by a known sub-pixel amount in linear light (cubic spline, exact
positions), area-averaged 4 x 4 to an LR, re-encoded (sRGB, 16 bit) with sensor noise, and registered against the
unshifted HR with :func:`realsr_tools.registration.register_captures` at the focal ratio 4. The two captures then
differ only by sampling and noise, so the error at the window centre is the registration's own: its precision on
128-px real windows, and any locking to whole pixels of its resampling (which would show as an error that follows
the fractional position). It separates that from what real captures add (other optics, processing, a non-rigid
field): on the published pairs realsr's correction and the independent estimator's reading differ by a median
0.034 LR px (``benchmarks/independent/real_pairs_uncertainty.py``).

    python benchmarks/probe_real_shift_precision.py [--pairs 10] [--noise 0.002]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from realsr_tools.geometry import apply_homography
from realsr_tools.imaging.files import read_pixels
from realsr_tools.registration import register_captures
from realsr_tools.registration.luma import srgb_to_linear

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pairs"
FRACTIONS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
SCALE = 4


def srgb_encode(a: np.ndarray) -> np.ndarray:
    return np.where(a <= 0.0031308, 12.92 * a, 1.055 * np.clip(a, 0, None) ** (1 / 2.4) - 0.055)


def shifted_lr(hr_linear: np.ndarray, dx: float, dy: float, noise: float, rng) -> np.ndarray:
    """The LR of ``hr_linear`` moved by (dx, dy) LR px: its pixel x shows the HR at s x + (s - 1) / 2 - s d."""
    moved = np.stack([ndimage.shift(hr_linear[..., c], (SCALE * dy, SCALE * dx), order=3, mode="nearest")
                      for c in range(3)], -1)
    h, w = moved.shape[0] // SCALE * SCALE, moved.shape[1] // SCALE * SCALE
    lr = moved[:h, :w].reshape(h // SCALE, SCALE, w // SCALE, SCALE, 3).mean((1, 3))
    lr = srgb_encode(np.clip(lr + rng.normal(0, noise, lr.shape), 0, 1))
    return np.round(np.clip(lr, 0, 1) * 65535).astype(np.uint16)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=10, help="published HRs, half RealSR, half DRealSR, evenly spaced")
    ap.add_argument("--noise", type=float, default=0.002, help="sensor noise, linear light, full scale 1")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    files = []
    for name in ("realsr_x4", "drealsr_x4"):
        hrs = sorted((DATA / name / "HR").iterdir())
        files += [hrs[i] for i in np.linspace(0, len(hrs) - 1, args.pairs // 2).round().astype(int)]
    errors = {f: [] for f in FRACTIONS}
    for path in files:
        pixels = read_pixels(path)
        hr = pixels.astype(np.float64) / np.iinfo(pixels.dtype).max
        hr16 = np.round(hr * 65535).astype(np.uint16)
        for f in FRACTIONS:
            dx, dy = f, 0.3
            lr = shifted_lr(srgb_to_linear(hr), dx, dy, args.noise, rng)
            try:
                registration, _ = register_captures(lr, hr16, ratio=float(SCALE))
            except Exception as error:  # a refusal is reported, not hidden
                print(f"{path.name} shift {f}: refused: {error}")
                continue
            cx, cy = (lr.shape[1] - 1) / 2, (lr.shape[0] - 1) / 2
            mapped = apply_homography(registration.lr_to_hr, np.array([[cx, cy]]))[0]
            truth = np.array([SCALE * (cx - dx) + (SCALE - 1) / 2, SCALE * (cy - dy) + (SCALE - 1) / 2])
            errors[f].append((mapped - truth) / SCALE)
    print(f"{len(files)} published HRs, LR {SCALE}x smaller, noise {args.noise}; error at the window centre, LR px")
    print("| x shift (LR px) | pairs | median x error | median y error (y shift 0.3) | median |error| | max |error| |")
    print("|---|---|---|---|---|---|")
    for f in FRACTIONS:
        e = np.array(errors[f]).reshape(-1, 2)
        if len(e):
            mag = np.hypot(e[:, 0], e[:, 1])
            print(f"| {f:.3f} | {len(e)} | {np.median(e[:, 0]):+.4f} | {np.median(e[:, 1]):+.4f} | "
                  f"{np.median(mag):.4f} | {mag.max():.4f} |")


if __name__ == "__main__":
    main()
