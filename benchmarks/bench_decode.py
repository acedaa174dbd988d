"""Benchmark the linear-light decoding registration and align use (run by hand: ``python benchmarks/bench_decode.py``).

``registration.luma.linear`` on an 8-bit 20-megapixel frame (5472 x 3648, made from a real 22-megapixel Canon 5D
Mark III JPEG; OpenCV's table lookup) against the same table through numpy's ``take`` (its implementation before
2026-12-02), in one process, ``--repeat`` runs each: the fastest, median and slowest wall time and the ratio of the
medians; the values must be identical. Also ``--strips``: ``linear_area_downscale`` on a 16-bit frame (the photo x
257 plus a seeded 0-256 dither, as many distinct values as a raw converter writes) with 256 output rows a strip
(its default) against about 256 input rows a strip, at factors 2, 4 and 8 (tried 2026-12-02: 1.0-1.6x on this
frame, within the spread of the runs, where random 16-bit data had suggested 2-5x; not adopted).

The float32 row decodes what align verifies in linear light: the photometrically corrected LR window of the 20-MP x2
pair (the frame area-downscaled by 2, float32, times 1.05 so that highlights run past 1 as a gain correction makes
them) with ``linear``, which decodes float images in row strips, against the curve over the whole array at once
(its implementation before 2026-12-03), with the peak of numpy's allocations during the call (tracemalloc).

The 16-bit row: ``linear`` on the 16-bit frame (a lookup table too, through numpy's ``take`` in row strips since
2026-12-06) against ``take`` on the whole frame, which converts every index to intp first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from realsr_tools.registration import luma  # noqa: E402

DATA = PROJECT.parent / "shared" / "data"
PHOTO = DATA / "exif_jpeg" / "digicam_corpus" / "canon_5dmk3_K6A7942_5760.JPG"
SIZE = (5472, 3648)


def timed(function, repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return times, result


def peak_mb(function) -> float:
    """Peak MB that numpy allocates during ``function()`` (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def row(name: str, baseline: list[float], new: list[float]) -> str:
    def spread(times: list[float]) -> str:
        return f"{min(times):.3f} / {statistics.median(times):.3f} / {max(times):.3f}"
    return (f"| {name} | {spread(baseline)} | {spread(new)} | "
            f"{statistics.median(baseline) / statistics.median(new):.1f}x |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--strips", action="store_true", help="also the 16-bit strip sizes of linear_area_downscale")
    args = parser.parse_args(argv)
    photo = cv2.imread(str(PHOTO))
    if photo is None:
        print(f"error: {PHOTO}: cannot read the benchmark photo; the project expects ../shared/data beside it")
        return 2
    frame8 = np.ascontiguousarray(cv2.resize(photo, SIZE, interpolation=cv2.INTER_AREA)[..., ::-1])
    dither = np.random.default_rng(1).integers(0, 257, frame8.shape, dtype=np.uint16)
    frame16 = frame8.astype(np.uint16) * 257 + np.minimum(dither, 65535 - frame8.astype(np.uint16) * 257)
    luma.linear(frame8[:1], "srgb"), luma.linear(frame16[:1], "srgb")  # the tables
    table8 = luma._TABLES["srgb", np.dtype(np.uint8)]
    print(f"{SIZE[0]} x {SIZE[1]} frame from {PHOTO.name}; wall s fastest / median / slowest of {args.repeat}\n")
    print("| operation | before (baseline) | now | ratio of medians |")
    print("|---|---|---|---|")
    before, reference = timed(lambda: np.take(table8, frame8), args.repeat)
    now, result = timed(lambda: luma.linear(frame8, "srgb"), args.repeat)
    assert np.array_equal(reference, result), "8-bit decode: values differ"
    print(row("8-bit decode, `linear` vs numpy `take`", before, now))
    table16 = luma._TABLES["srgb", np.dtype(np.uint16)]
    before, reference = timed(lambda: np.take(table16, frame16), args.repeat)
    now, result = timed(lambda: luma.linear(frame16, "srgb"), args.repeat)
    assert np.array_equal(reference, result), "16-bit decode: values differ"
    print(row(f"16-bit decode, `linear` (numpy `take` in row strips) vs `take` on the whole frame (numpy peak "
              f"{peak_mb(lambda: luma.linear(frame16, 'srgb')):.0f} vs {peak_mb(lambda: np.take(table16, frame16)):.0f}"
              " MB)", before, now))
    window = cv2.resize(frame8, (SIZE[0] // 2, SIZE[1] // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
    window *= np.float32(1.05 / 255)
    whole = lambda: luma.srgb_to_linear(np.clip(window, 0.0, 1.0)).astype(np.float32)  # noqa: E731
    before, reference = timed(whole, args.repeat)
    now, result = timed(lambda: luma.linear(window, "srgb"), args.repeat)
    assert np.array_equal(reference, result), "float32 decode: values differ"
    print(row(f"float32 decode of a {window.shape[1]} x {window.shape[0]} x 3 window, row strips vs whole array "
              f"(numpy peak {peak_mb(lambda: luma.linear(window, 'srgb')):.0f} vs {peak_mb(whole):.0f} MB)",
              before, now))
    for factor in (2, 4, 8) if args.strips else ():
        h, w = SIZE[1] // factor * factor, SIZE[0] // factor * factor
        image = frame16[:h, :w]
        before, reference = timed(lambda: luma.linear_area_downscale(image, "srgb", factor), args.repeat)
        now, result = timed(lambda: luma.linear_area_downscale(image, "srgb", factor, strip=max(1, 256 // factor)),
                            args.repeat)
        assert np.array_equal(reference, result), f"16-bit downscale x{factor}: values differ"
        print(row(f"16-bit `linear_area_downscale` x{factor}: 256 output rows vs ~256 input rows a strip",
                  before, now))
    return 0


if __name__ == "__main__":
    sys.exit(main())
