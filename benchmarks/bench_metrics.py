"""Benchmark realsr's PSNR/SSIM against scikit-image (run by hand: ``python benchmarks/bench_metrics.py``).

1. Speed on a 24-megapixel RGB pair built from a real 22-megapixel Canon 5D Mark III JPEG (resized to 6000x4000;
   the test image is its x4 area-downscale upscaled back with bicubic interpolation): realsr's SSIM and PSNR
   against the matched ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
   use_sample_covariance=False, data_range=255, channel_axis=2)`` call, in the same process, best of ``--repeat``,
   with the difference of values and (``--memory``) the peak of numpy allocations traced by tracemalloc;
   ``--torch`` adds the torch backend (float64 ``conv2d``; on CUDA when available: the GPU check).
2. ``--pairs``: agreement on all 193 real RealSR/DRealSR x4 pairs in ../shared/data/pairs (HR against the
   bicubic-upscaled LR), RGB and Y, crop borders 0, 4 and 10: the largest difference from scikit-image's SSIM and
   a float64 MSE PSNR.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
from skimage.metrics import structural_similarity

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from realsr_tools import metrics  # noqa: E402
from realsr_tools.imaging import read_pixels  # noqa: E402

DATA = PROJECT.parent / "shared" / "data"
PHOTO = DATA / "exif_jpeg" / "digicam_corpus" / "canon_5dmk3_K6A7942_5760.JPG"


def skimage_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    channel_axis = 2 if reference.ndim == 3 else None
    return float(structural_similarity(reference, test, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=255, channel_axis=channel_axis))


def reference_psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def timed(fn, repeat: int) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def peak_mb(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def speed(repeat: int, memory: bool, torch_backend: bool) -> None:
    photo = read_pixels(PHOTO)
    hr = cv2.resize(photo, (6000, 4000), interpolation=cv2.INTER_CUBIC)
    sr = cv2.resize(cv2.resize(hr, (1500, 1000), interpolation=cv2.INTER_AREA), (6000, 4000),
                    interpolation=cv2.INTER_CUBIC)
    print(f"24-MP pair: {hr.shape[1]}x{hr.shape[0]} RGB uint8 from {PHOTO.name}")
    t_ref, ref = timed(lambda: skimage_ssim(hr, sr), repeat)
    t_ssim, value = timed(lambda: metrics.ssim(hr, sr, backend="numpy"), repeat)
    t_both, both = timed(lambda: metrics.measure(hr, sr, backend="numpy"), repeat)
    t_psnr_ref, psnr_ref = timed(lambda: reference_psnr(hr, sr), repeat)
    t_psnr, psnr_value = timed(lambda: metrics.psnr(hr, sr), repeat)
    print(f"scikit-image SSIM            {t_ref:7.2f} s  {ref:.12f}")
    print(f"realsr ssim (numpy backend)  {t_ssim:7.2f} s  {value:.12f}  x{t_ref / t_ssim:.1f} faster, "
          f"|diff| {abs(value - ref):.1e}")
    print(f"realsr measure (PSNR+SSIM)   {t_both:7.2f} s  {both.ssim:.12f}  x{t_ref / t_both:.1f} faster than the "
          f"SSIM call alone, |diff| {abs(both.ssim - ref):.1e}")
    print(f"float64 numpy PSNR           {t_psnr_ref:7.2f} s  {psnr_ref:.12f}")
    print(f"realsr psnr                  {t_psnr:7.2f} s  {psnr_value:.12f}  x{t_psnr_ref / t_psnr:.1f} faster, "
          f"|diff| {abs(psnr_value - psnr_ref):.1e} (measure: {abs(both.psnr - psnr_ref):.1e})")
    if torch_backend:
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (no CUDA)"
        metrics.measure(hr[:512], sr[:512], backend="torch")  # warm-up: CUDA context and kernels
        t_torch, result = timed(lambda: metrics.measure(hr, sr, backend="torch"), repeat)
        print(f"realsr measure, torch backend on {device}: {t_torch:.2f} s, x{t_ref / t_torch:.1f} faster than "
              f"scikit-image, |SSIM diff| {abs(result.ssim - ref):.1e}, |PSNR diff| {abs(result.psnr - psnr_ref):.1e}")
    if memory:
        print(f"peak traced memory: scikit-image {peak_mb(lambda: skimage_ssim(hr, sr)):.0f} MB, realsr measure "
              f"{peak_mb(lambda: metrics.measure(hr, sr, backend='numpy')):.0f} MB (inputs excluded)")


def all_pairs() -> None:
    folders = [DATA / "pairs" / "realsr_x4", DATA / "pairs" / "drealsr_x4"]
    names = [(folder, p.name) for folder in folders for p in sorted((folder / "HR").glob("*.png"))]
    worst = {"ssim": 0.0, "psnr": 0.0}
    for folder, name in names:
        hr = read_pixels(folder / "HR" / name)
        lr = read_pixels(folder / "LR" / name)
        sr = cv2.resize(lr, (hr.shape[1], hr.shape[0]), interpolation=cv2.INTER_CUBIC)
        for channels in ("rgb", "y"):
            for border in (0, 4, 10):
                got = metrics.measure(hr, sr, crop_border=border, channels=channels, backend="numpy")
                a, b = (hr, sr) if not border else (hr[border:-border, border:-border],
                                                    sr[border:-border, border:-border])
                if channels == "y":
                    a, b = metrics.rgb_to_y(a.astype(np.float64)), metrics.rgb_to_y(b.astype(np.float64))
                worst["ssim"] = max(worst["ssim"], abs(got.ssim - skimage_ssim(a, b)))
                worst["psnr"] = max(worst["psnr"], abs(got.psnr - reference_psnr(a, b)))
    print(f"{len(names)} real pairs x (RGB, Y) x crop borders (0, 4, 10): largest |SSIM - scikit-image| "
          f"{worst['ssim']:.1e}, largest |PSNR - float64 MSE PSNR| {worst['psnr']:.1e} dB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--memory", action="store_true", help="also trace peak memory (one more run of each)")
    parser.add_argument("--pairs", action="store_true", help="check agreement on all 193 real pairs")
    parser.add_argument("--no-speed", action="store_true", help="skip the 24-MP timing")
    parser.add_argument("--torch", action="store_true", help="also time the torch backend (CUDA when available)")
    args = parser.parse_args()
    if not args.no_speed:
        speed(args.repeat, args.memory, args.torch)
    if args.pairs:
        all_pairs()
