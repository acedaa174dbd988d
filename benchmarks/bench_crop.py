"""Crop speed: ``realsr crop`` against BasicSR's ``extract_subimages`` way and against the decode+encode floor.

Run by hand (not by pytest)::

    nice python benchmarks/bench_crop.py [--pairs 8] [--workers 2] [--repeat 5]

Inputs: ``--pairs`` x4 pairs made from the real photos in ../shared/data/photos (HR cropped to 2048x1536, LR its
INTER_AREA /4 reduction, 512x384, written as PNG level 3 in a temporary folder), AIM 2020 x4 patches (LR 192, HR 768,
step = size).

Both ways run in this one process, alternating, ``--repeat`` times (at least 5); the table gives the median and the
range (min-max) of each and of the per-run ratio, so neither pays an interpreter start-up the other does not:

* BasicSR: a faithful re-implementation of ``scripts/data_preparation/extract_subimages.py`` (``worker``: cv2.imread
  IMREAD_UNCHANGED, np.arange starts plus the flush last start when ``thresh_size=0``, ``cv2.imwrite`` with
  ``IMWRITE_PNG_COMPRESSION``; ``extract_subimages``: ``multiprocessing.Pool(n_thread)`` with ``apply_async``),
  imported as a module and called for the HR folder, then the LR folder, as its ``main()`` does.
* realsr: :func:`realsr_tools.stages.crop.run_crop` with ``workers`` threads, HR and LR together, same PNG level.
* floor: decode every input and PNG-encode every patch (``cv2.imencode``), nothing written, single thread, with
  realsr's encoder settings (:func:`realsr_tools.imaging.png_params`: same zlib level, Paeth row filter) and with
  BasicSR's (libpng's adaptive row filter); compared with ``run_crop(workers=1)``.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
PHOTOS = PROJECT.parent / "shared" / "data" / "photos"
sys.path.insert(0, str(PROJECT))

from realsr_tools.patches import patch_starts  # noqa: E402
from realsr_tools.stages.crop import run_crop  # noqa: E402
from realsr_tools.imaging import png_params  # noqa: E402

BASICSR = r'''
import os, os.path as osp, sys, cv2, numpy as np
from multiprocessing import Pool

def worker(path, opt):
    crop_size, step, thresh_size = opt["crop_size"], opt["step"], opt["thresh_size"]
    img_name, extension = osp.splitext(osp.basename(path))
    img_name = img_name.replace("x2", "").replace("x3", "").replace("x4", "").replace("x8", "")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    h, w = img.shape[0:2]
    h_space = np.arange(0, h - crop_size + 1, step)
    if h - (h_space[-1] + crop_size) > thresh_size:
        h_space = np.append(h_space, h - crop_size)
    w_space = np.arange(0, w - crop_size + 1, step)
    if w - (w_space[-1] + crop_size) > thresh_size:
        w_space = np.append(w_space, w - crop_size)
    index = 0
    for x in h_space:
        for y in w_space:
            index += 1
            cropped_img = np.ascontiguousarray(img[x:x + crop_size, y:y + crop_size, ...])
            cv2.imwrite(osp.join(opt["save_folder"], f"{img_name}_s{index:03d}{extension}"), cropped_img,
                        [cv2.IMWRITE_PNG_COMPRESSION, opt["compression_level"]])
    return f"Processing {img_name} ..."

def extract_subimages(opt):
    os.makedirs(opt["save_folder"])
    img_list = sorted(osp.join(opt["input_folder"], f) for f in os.listdir(opt["input_folder"]))
    pool = Pool(opt["n_thread"])
    for path in img_list:
        pool.apply_async(worker, args=(path, opt))
    pool.close()
    pool.join()

if __name__ == "__main__":
    i, o, size, step, level, threads = sys.argv[1:]
    extract_subimages({"input_folder": i, "save_folder": o, "crop_size": int(size), "step": int(step),
                       "thresh_size": 0, "compression_level": int(level), "n_thread": int(threads)})
'''


def make_inputs(root: Path, pairs: int) -> Path:
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    photos = [p for p in photos if min(cv2.imread(str(p)).shape[:2]) >= 760]
    for sub in ("HR", "LR"):
        (root / sub).mkdir(parents=True)
    for index in range(pairs):
        image = cv2.imread(str(photos[index % len(photos)]))
        image = cv2.resize(image, (2048, 1536), interpolation=cv2.INTER_AREA if image.shape[1] > 2048
                           else cv2.INTER_CUBIC)
        if index >= len(photos):
            image = image[:, ::-1]
        name = f"pair_{index:03d}.png"
        cv2.imwrite(str(root / "HR" / name), image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        cv2.imwrite(str(root / "LR" / name), cv2.resize(image, (512, 384), interpolation=cv2.INTER_AREA),
                    [cv2.IMWRITE_PNG_COMPRESSION, 3])
    return root


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def floor(source: Path, size: int, scale: int, params: list[int]) -> int:
    """Decode every input and PNG-encode every patch with OpenCV ``params``; return the bytes encoded."""
    total = 0
    for name in sorted(p.name for p in (source / "HR").iterdir()):
        for sub, n in (("LR", size), ("HR", size * scale)):
            image = cv2.imread(str(source / sub / name), cv2.IMREAD_UNCHANGED)
            h, w = image.shape[:2]
            for y in patch_starts(h, n, n):
                for x in patch_starts(w, n, n):
                    total += len(cv2.imencode(".png", np.ascontiguousarray(image[y : y + n, x : x + n]), params)[1])
    return total


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--basicsr-threads", type=int, default=20, help="BasicSR's default n_thread is 20")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--level", type=int, default=3)
    args = parser.parse_args()
    if args.repeat < 5:
        parser.error("--repeat must be at least 5 (the table reports the spread)")
    load = Path("/proc/loadavg").read_text().split()[0]
    size, scale = 192, 4
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = make_inputs(tmp / "src", args.pairs)
        (tmp / "extract_subimages.py").write_text(BASICSR)
        sys.path.insert(0, str(tmp))
        basicsr_module = importlib.import_module("extract_subimages")  # workers pickle its functions by name
        runs = iter(range(10**6))
        expected = 2 * args.pairs * len(patch_starts(384, size, size)) * len(patch_starts(512, size, size))

        def basicsr() -> None:
            out = tmp / f"b{next(runs)}"
            for sub, n in (("HR", size * scale), ("LR", size)):
                basicsr_module.extract_subimages({
                    "input_folder": str(source / sub), "save_folder": str(out / sub), "crop_size": n, "step": n,
                    "thresh_size": 0, "compression_level": args.level, "n_thread": args.basicsr_threads})
            written = sum(1 for _ in out.glob("*R/*.png"))
            if written != expected:  # apply_async swallows worker errors: check the work was done
                raise SystemExit(f"BasicSR way wrote {written} patches, expected {expected}")

        def realsr() -> None:
            run_crop(source, tmp / f"r{next(runs)}", scale=scale, workers=args.workers, png_compression=args.level,
                     show_progress=False)

        times: dict[str, list[float]] = {"basicsr": [], "realsr": []}
        for _ in range(args.repeat):  # alternating, so a change of machine load hits both ways alike
            times["basicsr"].append(timed(basicsr))
            times["realsr"].append(timed(realsr))
        ratios = [b / r for b, r in zip(times["basicsr"], times["realsr"])]
        adaptive = [cv2.IMWRITE_PNG_COMPRESSION, args.level]  # BasicSR's settings: libpng's adaptive row filter
        best = {name: min(timed(function) for _ in range(2)) for name, function in (
            ("floor", lambda: floor(source, size, scale, png_params(args.level))),
            ("floor_adaptive", lambda: floor(source, size, scale, adaptive)),
            ("realsr_inline_1", lambda: run_crop(source, tmp / f"i{next(runs)}", scale=scale, workers=1,
                                                 png_compression=args.level, show_progress=False)))}
        paeth_bytes = floor(source, size, scale, png_params(args.level))
        adaptive_bytes = floor(source, size, scale, adaptive)
        print(f"{args.pairs} pairs (HR 2048x1536, LR 512x384), {expected // 2} patch pairs of LR 192 / HR 768, PNG "
              f"level {args.level}, {args.repeat} alternating runs in one process, median (min-max); load average "
              f"before: {load}, after: {Path('/proc/loadavg').read_text().split()[0]}")
        print("| way | seconds | BasicSR / realsr |\n|---|---|---|")
        print(f"| BasicSR extract_subimages, HR run + LR run, Pool({args.basicsr_threads}) | "
              f"{spread(times['basicsr'])} | {spread(ratios)} |")
        print(f"| realsr run_crop, {args.workers} threads, HR+LR together | {spread(times['realsr'])} | |")
        print(f"| floor: decode + encode only, 1 thread, realsr's encoder settings (best of 2) | {best['floor']:.2f} "
              "| |")
        print(f"| run_crop(workers=1) (best of 2) | {best['realsr_inline_1']:.2f} | "
              f"{best['realsr_inline_1'] / best['floor']:.2f}x floor |")
        print(f"\nRow filter at level {args.level} (the floor): libpng adaptive (BasicSR) "
              f"{best['floor_adaptive']:.2f} s, "
              f"{adaptive_bytes / 1e6:.1f} MB; Paeth (realsr) {best['floor']:.2f} s, {paeth_bytes / 1e6:.1f} MB "
              f"(time {best['floor'] / best['floor_adaptive']:.2f}x, size {paeth_bytes / adaptive_bytes:.3f}x)")

if __name__ == "__main__":
    main()
