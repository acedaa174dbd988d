"""What the pyramid search's whole-frame check costs (``registration.coarse``), on the independent generator's captures.

Run by hand (not by pytest)::

    python benchmarks/bench_coarse.py                       # generator hard seed 79 (12 scenes, 36 pairs), 5 runs
    python benchmarks/bench_coarse.py --captures DIR --runs 7   # a captures folder bench_generalise.py wrote

Baseline, in the same process: the grey search as it was before it checked the HR frame's margin, the central
template alone (``_margin_contradicts`` answering no). Against it, each run times per pair, one right after the
other (rotating which goes first): the search as realsr runs it (the central template, the whole frame correlated
at its match, and the whole grid searched again where the margin contradicts it), and the whole-frame search from
the start (``search_coarse(..., whole_frame=True)``), which registration runs only where every start of the first
search diverged. One BLAS thread, as align's workers run; decoding and the grey images are not timed. It prints
each way's total per run, the ratios to the baseline (median and range over the runs), the pairs the check searched
again with their own ratio, and how often the three ways put the HR frame more than the coarse agreement apart.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "independent"))

from realsr_tools.imaging import read_pixels  # noqa: E402
from realsr_tools.pipeline.runner import one_blas_thread  # noqa: E402
from realsr_tools.registration import coarse  # noqa: E402
from realsr_tools.registration.estimate import _coarse_tolerance  # noqa: E402
from realsr_tools.registration.luma import registration_grey  # noqa: E402

WAYS = ("central template", "with the check", "whole frame")


def capture_pairs(root: Path) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """``(name, LR grey, HR grey, focal ratio)`` of every LR capture of a generator captures folder."""
    truth = json.loads((root.parent / f"{root.name}.truth.json").read_text())
    focal = {row["path"]: float(row["focal_mm"]) for row in csv.DictReader(open(root / "captures.csv"))}
    pairs = []
    for scene in sorted(truth["scenes"].values(), key=lambda s: s["hr"]):
        hr_key = scene["hr"]
        for key in sorted(k for k in focal if k.startswith(hr_key.split("/")[0] + "/") and k != hr_key):
            lr_grey, hr_grey, _ = registration_grey(read_pixels(root / key), read_pixels(root / hr_key))
            pairs.append((key, lr_grey, hr_grey, focal[hr_key] / focal[key]))
    return pairs


def search(way: str, lr: np.ndarray, hr: np.ndarray, ratio: float):
    """``(wall s, CPU s, result, searched again)`` of one way of the grey search."""
    checked = coarse._margin_contradicts
    verdicts = []

    def recorded(*args, **kwargs):
        verdicts.append(checked(*args, **kwargs))
        return verdicts[-1]

    coarse._margin_contradicts = (lambda *args, **kwargs: False) if way == WAYS[0] else recorded
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        with one_blas_thread():
            result = coarse.search_coarse(lr, hr, ratio, whole_frame=way == WAYS[2])
    finally:
        coarse._margin_contradicts = checked
    return time.perf_counter() - wall, time.process_time() - cpu, result, any(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captures", type=Path, default=None,
                        help="a generator captures folder (with its .truth.json beside it); default: draw --seed")
    parser.add_argument("--seed", type=int, default=79, help="generator hard seed to draw when no --captures")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = args.captures
    if root is None:
        import generator

        generator.DATA = ROOT.parent / "shared" / "data"
        out = Path(tempfile.mkdtemp(prefix="bench_coarse_"))
        root = out / "captures_hard"
        generator.generate(root, seed=args.seed, hard=True, verbose=False)  # its truth lies beside it
    pairs = capture_pairs(root)
    print(f"{len(pairs)} pairs of {root}; baseline: {WAYS[0]} alone")
    totals = np.zeros((args.runs, 3, 2))  # run x way x (wall, CPU)
    per_pair = {name: np.zeros((3,)) for name, *_ in pairs}
    results, again = {}, set()
    for run in range(args.runs):
        for index, (name, lr, hr, ratio) in enumerate(pairs):
            order = np.roll(np.arange(3), index + run)
            for way in order:
                wall, cpu, result, searched_again = search(WAYS[way], lr, hr, ratio)
                totals[run, way] += (wall, cpu)
                per_pair[name][way] += wall
                results[name, way] = result
                if searched_again:
                    again.add(name)
        print(f"run {run + 1}: " + ", ".join(f"{WAYS[w]} {totals[run, w, 0]:.2f} s wall / {totals[run, w, 1]:.2f} s CPU"
                                             for w in range(3)))
    for way in (1, 2):
        for column, unit in ((0, "wall"), (1, "CPU")):
            ratios = totals[:, way, column] / totals[:, 0, column]
            print(f"{WAYS[way]} / {WAYS[0]}, {unit}: median {np.median(ratios):.3f}x "
                  f"(range {ratios.min():.3f}-{ratios.max():.3f}, {args.runs} runs)")
    print(f"searched again by the check: {len(again)} of {len(pairs)} pairs")
    for name in sorted(again):
        print(f"  {name}: {per_pair[name][1] / per_pair[name][0]:.2f}x the central template's time")
    for way in (1, 2):
        moved = 0
        for name, lr, hr, _ in pairs:
            a, b = results[name, 0], results[name, way]
            if (a is None) != (b is None) or (a is not None and coarse._disagreement(
                    a.lr_to_hr, b.lr_to_hr, hr.shape) > _coarse_tolerance(lr.shape)):
                moved += 1
        print(f"{WAYS[way]} puts the HR frame elsewhere than {WAYS[0]} (beyond the coarse agreement): "
              f"{moved} of {len(pairs)} pairs")


if __name__ == "__main__":
    main()
