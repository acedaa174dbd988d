"""Throughput of ``realsr align`` and ``realsr wash`` on 2 Dask workers against the local pool of 2 processes.

Run by hand (not by pytest), on a quiet machine where possible::

    python benchmarks/bench_dask.py                  # 12 align pairs, 40 wash pairs, 3 runs each
    python benchmarks/bench_dask.py --runs 5 --align-pairs 24 --wash-pairs 80
    python benchmarks/bench_dask.py --stages wash --runs 7

Both backends run the same stage function on the same data in turn (local, Dask, local, Dask, ...), each run into a
fresh output folder, so load from other processes falls on both alike. The Dask cluster is a ``LocalCluster`` of two
one-thread worker processes started explicitly here once (as a real cluster is up before a run); each Dask run
includes connecting to it and the version check, each local run starting its pool. Printed: every run's wall
time, the median, min and max per backend, and the overhead of Dask on the medians (target <= 10 %).

Data: align: simulated x2/x3/x4 captures (:func:`realsr_tools.simulate.make_capture_folder`) of the real photographs
in ``../shared/data/photos``, 640 x 480 px LR; wash: real RealSR/DRealSR x4 pairs of ``../shared/data/pairs``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realsr_tools.simulate import make_capture_folder  # noqa: E402
from realsr_tools.stages.align import run_align  # noqa: E402
from realsr_tools.stages.wash import run_wash  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
PHOTOS = ["skimage_UNIS_EV0.jpg", "skimage_eagle.png", "exif_samples_35-empty.jpg", "kodak_kodim03.png",
          "pypi_scikit-image_retina.jpg", "pypi_scikit-image_hubble_deep_field.jpg", "exif_samples_11-tests.jpg",
          "exif_samples_22-canon_tags.jpg"]


def wash_source(root: Path, count: int) -> Path:
    """``count`` real x4 pairs, half RealSR and half DRealSR, as an HR/+LR/ folder of symbolic links."""
    for side in ("HR", "LR"):
        (root / side).mkdir(parents=True)
    for dataset in ("realsr_x4", "drealsr_x4"):
        names = sorted(p.name for p in (DATA / "pairs" / dataset / "HR").iterdir())[: count // 2]
        for name in names:
            for side in ("HR", "LR"):
                (root / side / f"{dataset}_{name}").symlink_to(DATA / "pairs" / dataset / side / name)
    return root


def timed(run, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run(out)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--align-pairs", type=int, default=12, help="about; 3 scales per photograph")
    parser.add_argument("--wash-pairs", type=int, default=40)
    parser.add_argument("--stages", default="align,wash", help="comma-separated: align, wash")
    args = parser.parse_args()

    from distributed import LocalCluster

    work = Path(tempfile.mkdtemp(prefix="bench_dask_"))
    try:
        photos = [DATA / "photos" / name for name in PHOTOS[: max(1, args.align_pairs // 3)]]
        make_capture_folder(photos, work / "captures", scales=(2, 3, 4), seed=5, lr_size=(640, 480))
        washing = wash_source(work / "pairs", args.wash_pairs)
        stages = {
            "align": lambda out, **where: run_align(work / "captures", out, show_progress=False, **where),
            "wash": lambda out, **where: run_wash(washing, out, show_progress=False, **where),
        }
        sizes = {"align": 3 * len(photos), "wash": 2 * (args.wash_pairs // 2)}
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            address = cluster.scheduler_address
            for name, stage in stages.items():
                if name not in args.stages.split(","):
                    continue
                times: dict[str, list[float]] = {"local": [], "dask": []}
                stage(work / f"warm_{name}", workers=2)  # first-touch costs (imports, page cache) out of the comparison
                stage(work / f"warm_{name}", scheduler=address)
                for _ in range(args.runs):
                    times["local"].append(timed(lambda out: stage(out, workers=2), work / "out"))
                    times["dask"].append(timed(lambda out: stage(out, scheduler=address), work / "out"))
                print(f"{name}: {sizes[name]} pairs, {args.runs} runs per backend")
                for backend, values in times.items():
                    median = statistics.median(values)
                    print(f"  {backend:5s} median {median:6.2f} s ({sizes[name] / median:5.2f} pairs/s), min "
                          f"{min(values):6.2f}, max {max(values):6.2f}; runs "
                          + ", ".join(f"{v:.2f}" for v in values))
                overhead = statistics.median(times["dask"]) / statistics.median(times["local"]) - 1
                print(f"  Dask overhead on the medians: {overhead:+.1%}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
