"""What the cycle test of the Gauss-Newton fit (``gauss_newton.CYCLE_MEMORY``) saves, on the published pairs.

Run by hand (not by pytest)::

    python benchmarks/bench_refine_cycles.py              # all 193 RealSR / DRealSR x4 pairs, 3 runs
    python benchmarks/bench_refine_cycles.py --pairs 40 --runs 5

Baseline, in the same process: the same registration with the cycle test switched off (``CYCLE_MEMORY = 0``), where
a fit that goes round a cycle runs to its step cap (150 steps at the coarsest level), as realsr did before. Each run
registers every pair both ways, one right after the other (alternating which goes first), with
``register_captures`` in one BLAS thread as align's workers run it (decoding not timed). It
prints the wall and CPU time of each way per run, their ratio (median and range over the runs), the fits that the
cycle test ended, and how far the two ways' mappings lie apart at the output window's corners (LR px).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realsr_tools import geometry  # noqa: E402
from realsr_tools.imaging import read_pixels  # noqa: E402
from realsr_tools.pipeline.runner import one_blas_thread  # noqa: E402
from realsr_tools.registration import gauss_newton, register_captures  # noqa: E402

PAIRS = ROOT.parent / "shared" / "data" / "pairs"


def published_pairs(limit: int | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs = []
    for dataset in ("realsr_x4", "drealsr_x4"):
        for lr_path in sorted((PAIRS / dataset / "LR").glob("*.png")):
            hr = read_pixels(PAIRS / dataset / "HR" / lr_path.name)
            pairs.append((f"{dataset}/{lr_path.name}", read_pixels(lr_path), hr))
    return pairs[:limit] if limit else pairs


def register(lr: np.ndarray, hr: np.ndarray, cycle_memory: int):
    """``(wall s, CPU s, registration or refusal text)`` with the cycle test set to ``cycle_memory``."""
    saved = gauss_newton.CYCLE_MEMORY
    gauss_newton.CYCLE_MEMORY = cycle_memory
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        with one_blas_thread():  # as align runs it: one BLAS thread per worker
            result = register_captures(lr, hr, ratio=4.0)[0]
    except Exception as exc:  # a refusal is a result too; both ways must agree on it
        result = str(exc)
    finally:
        gauss_newton.CYCLE_MEMORY = saved
    return time.perf_counter() - wall, time.process_time() - cpu, result


def corner_distance(a, b, lr: np.ndarray, hr: np.ndarray) -> float:
    x0, y0, w, h = geometry.output_window(a.lr_to_hr, lr.shape, hr.shape, distortion=a.distortion)
    corners = np.array([[x0, y0], [x0 + w - 1, y0], [x0 + w - 1, y0 + h - 1], [x0, y0 + h - 1]], np.float64)
    return float(np.max(np.linalg.norm(a.map(corners) - b.map(corners), axis=1)) / 4.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=None, help="the first N pairs only")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pairs = published_pairs(args.pairs)
    default = gauss_newton.CYCLE_MEMORY
    print(f"{len(pairs)} published x4 pairs; cycle test CYCLE_MEMORY = {default} against 0 (fits run to their caps)")
    ratios_wall, ratios_cpu = [], []
    old, new = {}, {}
    for run in range(args.runs):
        totals = np.zeros((2, 2))  # (to the cap, cycle test) x (wall, CPU)
        for index, (name, lr, hr) in enumerate(pairs):
            ways = [(1, default), (0, 0)]
            if (index + run) % 2:  # alternate which way goes first
                ways.reverse()
            for way, memory in ways:
                wall, cpu, result = register(lr, hr, memory)
                totals[way] += (wall, cpu)
                (new if way else old)[name] = result
        ratios_wall.append(totals[0, 0] / totals[1, 0])
        ratios_cpu.append(totals[0, 1] / totals[1, 1])
        print(f"run {run + 1}: to the cap {totals[0, 0]:.1f} s wall / {totals[0, 1]:.1f} s CPU, cycle test "
              f"{totals[1, 0]:.1f} s / {totals[1, 1]:.1f} s CPU: {ratios_wall[-1]:.2f}x wall, "
              f"{ratios_cpu[-1]:.2f}x CPU")
    print(f"ratio (to the cap / cycle test) over {args.runs} runs: wall median {np.median(ratios_wall):.2f}x "
          f"(range {min(ratios_wall):.2f}-{max(ratios_wall):.2f}), CPU median {np.median(ratios_cpu):.2f}x "
          f"(range {min(ratios_cpu):.2f}-{max(ratios_cpu):.2f})")
    ended, moved, models, refusals = 0, [], 0, 0
    for name, lr, hr in pairs:
        a, b = old[name], new[name]
        if isinstance(a, str) or isinstance(b, str):
            refusals += isinstance(a, str) != isinstance(b, str)
            continue
        ended += b.iterations < a.iterations
        models += a.model.name != b.model.name
        distance = corner_distance(a, b, lr, hr)
        if distance > 0:
            moved.append((distance, name, a.iterations, b.iterations))
    moved.sort(reverse=True)
    print(f"pairs whose fits the cycle test ended sooner: {ended} of {len(pairs)}; mappings that differ: {len(moved)} "
          f"(largest corner distance {moved[0][0] if moved else 0:.2e} LR px); model changed: {models}; refused one "
          f"way only: {refusals}")
    for distance, name, before, after in moved[:5]:
        print(f"  {name}: {distance:.2e} LR px, iterations {before} -> {after}")


if __name__ == "__main__":
    main()
