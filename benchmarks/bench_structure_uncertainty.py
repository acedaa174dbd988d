"""What recording the structure uncertainty (``registration.structure_uncertainty``) costs, on the published pairs.

Run by hand (not by pytest)::

    python benchmarks/bench_structure_uncertainty.py              # all 193 RealSR / DRealSR x4 pairs, 3 runs
    python benchmarks/bench_structure_uncertainty.py --pairs 60 --runs 5

Baseline, in the same process: the same registration without it (the linearisations skip the noise information,
the radial fits their extra final linearisation, and the corrected inverse gets a zero noise matrix). Each run
registers every pair both ways, one right after the other (alternating which goes first), with
``register_captures`` in one BLAS thread as align's workers run it (decoding not timed). It prints the wall and CPU
time of each way per run and their ratio (median and range over the runs), and checks that the mappings agree.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_refine_cycles import published_pairs  # noqa: E402

from realsr_tools.pipeline.runner import one_blas_thread  # noqa: E402
from realsr_tools.registration import gauss_newton, register_captures  # noqa: E402


@contextmanager
def without_structure():
    """The registration as it was before the structure uncertainty: no noise information anywhere."""
    linearize, model_noise, fit = gauss_newton._Problem.linearize, gauss_newton._model_noise, gauss_newton._gauss_newton

    def plain_linearize(self, h, ks, params, fit_k, noise=False):
        return linearize(self, h, ks, params, fit_k)

    def plain_fit(*args, noise=False, **kwargs):
        return fit(*args, **kwargs)

    gauss_newton._Problem.linearize = plain_linearize
    gauss_newton._model_noise = lambda lin, full: np.zeros((full.shape[1],) * 2)
    gauss_newton._gauss_newton = plain_fit
    try:
        yield
    finally:
        gauss_newton._Problem.linearize, gauss_newton._model_noise = linearize, model_noise
        gauss_newton._gauss_newton = fit


def register(lr: np.ndarray, hr: np.ndarray, structure: bool):
    """``(wall s, CPU s, registration or refusal text)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        with one_blas_thread():  # as align runs it: one BLAS thread per worker
            if structure:
                result = register_captures(lr, hr, ratio=4.0)[0]
            else:
                with without_structure():
                    result = register_captures(lr, hr, ratio=4.0)[0]
    except Exception as exc:  # a refusal is a result too; both ways must agree on it
        result = str(exc)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=None, help="the first N pairs only")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pairs = published_pairs(args.pairs)
    print(f"{len(pairs)} published x4 pairs; registration with the structure uncertainty against without it")
    ratios_wall, ratios_cpu, differ = [], [], set()
    for run in range(args.runs):
        totals = np.zeros((2, 2))  # (without, with) x (wall, CPU)
        for index, (name, lr, hr) in enumerate(pairs):
            ways = [True, False] if (index + run) % 2 else [False, True]  # alternate which way goes first
            results = {}
            for structure in ways:
                wall, cpu, results[structure] = register(lr, hr, structure)
                totals[int(structure)] += (wall, cpu)
            a, b = results[False], results[True]
            if isinstance(a, str) or isinstance(b, str):
                if a != b:
                    differ.add(name)
            elif not np.array_equal(a.lr_to_hr, b.lr_to_hr):
                differ.add(name)
        ratios_wall.append(totals[1, 0] / totals[0, 0])
        ratios_cpu.append(totals[1, 1] / totals[0, 1])
        print(f"run {run + 1}: without {totals[0, 0]:.1f} s wall / {totals[0, 1]:.1f} s CPU, with "
              f"{totals[1, 0]:.1f} s / {totals[1, 1]:.1f} s CPU: {ratios_wall[-1]:.3f}x wall, "
              f"{ratios_cpu[-1]:.3f}x CPU")
    print(f"ratio (with / without) over {args.runs} runs: wall median {np.median(ratios_wall):.3f}x (range "
          f"{min(ratios_wall):.3f}-{max(ratios_wall):.3f}), CPU median {np.median(ratios_cpu):.3f}x (range "
          f"{min(ratios_cpu):.3f}-{max(ratios_cpu):.3f}); mappings that differ: {len(differ)}")


if __name__ == "__main__":
    main()
