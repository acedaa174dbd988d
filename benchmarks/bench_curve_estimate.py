"""What asking a pair's two exposures for its transfer curve costs (``registration.curves.exposure_curve``).

Run by hand (not by pytest)::

    python benchmarks/bench_curve_estimate.py                  # the 20-MP x2 pair of bench_align.py, 3 runs
    python benchmarks/bench_curve_estimate.py --captures DIR   # every pair of a captures folder (bench_generalise.py)

Baseline, in the same process: the pair aligned end to end (``stages.align_pair.align_pair``: read, register, check,
warp, correct, verify, write) with ``--raster-curve srgb``, where nothing is estimated (what align did for a file
that states no curve before session 35). Against it, right after it (alternating which goes first): the same pair
with ``--raster-curve auto``, which asks the exposures at the coarse match (the colour thumbnails decoded three
ways) and, where the curve changes, decodes the greys again before the refinement. One BLAS thread, as align's
workers run. Prints per pair the two times (median of the runs) and their ratio with its range, and whether the
estimate changed the curve.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from realsr_tools.captures import discover  # noqa: E402
from realsr_tools.pipeline.runner import one_blas_thread  # noqa: E402
from realsr_tools.stages.align_pair import AlignSettings, align_pair  # noqa: E402


def speed_pair(work: Path) -> Path:
    """bench_align.py's 20-MP x2 pair (5472 x 3648, quality-95 JPEGs that state no curve)."""
    import cv2

    from bench_align import SPEED_PHOTO, SPEED_SIZE
    from realsr_tools.simulate import make_capture_folder

    root = work / "speed"
    make_capture_folder([SPEED_PHOTO], root, scales=(2,), seed=5, lr_size=SPEED_SIZE)
    for png in sorted(root.rglob("*.png")):
        cv2.imwrite(str(png.with_suffix(".jpg")), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 95])
        png.unlink()
    (root / "captures.csv").write_text((root / "captures.csv").read_text().replace(".png", ".jpg"))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captures", type=Path, help="a captures folder (default: bench_align.py's 20-MP pair)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = args.captures or speed_pair(work)
        pairs = discover(root).pairs
        base = AlignSettings(root, work / "out", False, 8, True, raster_curve="srgb")
        ways = {"srgb": base, "auto": replace(base, raster_curve="auto")}
        print(f"{len(pairs)} pair(s) of {root}, {args.runs} runs each way\n")
        print("| pair | srgb s (baseline) | auto s | ratio median (range) | curve |\n|---|---|---|---|---|")
        totals = {name: [] for name in ways}
        for pair in pairs:
            seconds = {name: [] for name in ways}
            curve = None
            for run in range(args.runs):
                order = list(ways) if run % 2 == 0 else list(ways)[::-1]
                for name in order:
                    with one_blas_thread():
                        start = time.perf_counter()
                        record = align_pair(pair, ways[name])
                        seconds[name].append(time.perf_counter() - start)
                    if name == "auto" and record["registration"]:
                        curve = (record["registration"]["grey"]["curve_estimate"] or {}).get("curve")
            ratios = np.array(seconds["auto"]) / np.array(seconds["srgb"])
            for name in ways:
                totals[name].append(np.median(seconds[name]))
            print(f"| {pair.id} | {np.median(seconds['srgb']):.2f} | {np.median(seconds['auto']):.2f} | "
                  f"{np.median(ratios):.3f} ({ratios.min():.3f}-{ratios.max():.3f}) | {curve or 'sRGB stood'} |")
        if len(pairs) > 1:
            print(f"\nall pairs: {sum(totals['srgb']):.1f} s -> {sum(totals['auto']):.1f} s, ratio "
                  f"{sum(totals['auto']) / sum(totals['srgb']):.3f}")


if __name__ == "__main__":
    main()
