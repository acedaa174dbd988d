"""Accuracy and speed of ``realsr align`` against OpenCV ECC (the SR-RAW way) and SIFT + RANSAC, same process.

Run by hand (not by pytest)::

    python benchmarks/bench_align.py                 # normal + hard accuracy, 20-MP speed
    python benchmarks/bench_align.py --skip-speed    # accuracy only
    python benchmarks/bench_align.py --photos 4      # quick look on the first 4 photographs
    python benchmarks/bench_align.py --skip-speed --seed 2   # the accuracy sets drawn with another seed

Data: simulated multi-focal capture folders (:func:`realsr_tools.simulate.make_capture_folder`) of the real
photographs in ``../shared/data/photos`` (12 photographs x scales 2, 3, 4 = 36 pairs per variant), captures of
640 x 480 px. Error of a pair: RMS over the output LR window (or, for a method that gives none, the window the
true homography gives) of the distance between the estimated and the true LR -> HR mapping, in LR pixels
(:func:`realsr_tools.simulate.registration_error`). A pair that a method refuses counts as failed; a pair that it
returns with an error above 1 px is *silently wrong*.

Methods:
- realsr: ``run_align`` end to end (registration, checks, warp, photometric correction, quality, writing).
- ECC (SR-RAW way): pre-zoom by the focal ratio (centre crop of the LR, HR area-downscaled to that scale), then
  ``cv2.findTransformECC`` with a homography motion model on both images downscaled a further 8x (at least 96 px
  across), Gaussian filter 5, 200 iterations; the result is scaled back up.
- SIFT + RANSAC: SIFT (OpenCV) on the full-resolution grey images, Lowe ratio 0.75, ``cv2.findHomography`` RANSAC
  with a 3 HR px threshold; fewer than 10 inliers = failed.

The speed part aligns one pair of 20-MP frames (5472 x 3648, x2) simulated from the 22-MP Canon 5D Mk III JPEG,
end to end in a child process (wall time and peak resident memory), and times the ECC baseline end to end (read,
register, warp, write) in the same way.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realsr_tools import geometry, registration  # noqa: E402
from realsr_tools.stages import align  # noqa: E402
from realsr_tools.imaging import read_pixels, write_image  # noqa: E402
from realsr_tools.pipeline.manifest import read_manifest  # noqa: E402
from realsr_tools.simulate import make_capture_folder, registration_error  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
PHOTOS = [
    "skimage_UNIS_EV0.jpg", "skimage_eagle.png", "exif_samples_HMD_Nokia_8.3_5G.jpg", "exif_samples_35-empty.jpg",
    "exif_samples_28-hex_value.jpg", "exif_samples_87_OSError.jpg", "exif_samples_22-canon_tags.jpg",
    "exif_samples_36-memory_error.jpg", "exif_samples_11-tests.jpg", "pypi_scikit-image_retina.jpg",
    "pypi_scikit-image_hubble_deep_field.jpg", "kodak_kodim03.png",
]
SPEED_PHOTO = DATA / "exif_jpeg" / "digicam_corpus" / "canon_5dmk3_K6A7942_5760.JPG"
CAPTURE = (640, 480)
SPEED_SIZE = (5472, 3648)


def ecc_srraw(lr: np.ndarray, hr: np.ndarray, ratio: float) -> np.ndarray | None:
    """The SR-RAW recipe: pre-zoom by the focal ratio, ECC homography on an image downscaled 8x."""
    import cv2

    lh, lw = lr.shape
    hh, hw = hr.shape
    cw, ch = hw / ratio, hh / ratio
    x0, y0 = (lw - cw) / 2, (lh - ch) / 2
    size = (max(96, round(cw / 8)), max(int(96 * ch / cw), round(ch / 8)))
    # The LR's central crop and the HR at one small size: both grids cover the same nominal field.
    lr_small = cv2.resize(lr[int(y0):int(y0 + ch), int(x0):int(x0 + cw)], size, interpolation=cv2.INTER_AREA)
    hr_small = cv2.resize(hr, size, interpolation=cv2.INTER_AREA)
    warp = np.eye(3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(hr_small, lr_small, warp, cv2.MOTION_HOMOGRAPHY,
                                       (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6), None, 5)
    except cv2.error:
        return None
    # warp maps hr_small px -> lr_small px (template = hr_small); lr_small px <-> LR crop via the resize scaling.
    lr_small_to_lr = geometry.translation(int(x0), int(y0)) @ geometry.scaling(
        (int(x0 + cw) - int(x0)) / size[0], (int(y0 + ch) - int(y0)) / size[1])
    hr_small_to_hr = geometry.scaling(hw / size[0], hh / size[1])
    hr_to_lr = lr_small_to_lr @ warp.astype(np.float64) @ np.linalg.inv(hr_small_to_hr)
    lr_to_hr = np.linalg.inv(hr_to_lr)
    return lr_to_hr / lr_to_hr[2, 2]


def sift_ransac(lr: np.ndarray, hr: np.ndarray) -> np.ndarray | None:
    import cv2

    to8 = lambda a: np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    sift = cv2.SIFT_create()
    kp_l, des_l = sift.detectAndCompute(to8(lr), None)
    kp_h, des_h = sift.detectAndCompute(to8(hr), None)
    if des_l is None or des_h is None or len(kp_l) < 10 or len(kp_h) < 10:
        return None
    matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_l, des_h, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.75 * m[1].distance]
    if len(good) < 10:
        return None
    src = np.float32([kp_l[m.queryIdx].pt for m in good])
    dst = np.float32([kp_h[m.trainIdx].pt for m in good])
    matrix, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
    if matrix is None or inliers is None or inliers.sum() < 10:
        return None
    return matrix / matrix[2, 2]


def evaluate(root: Path, out: Path) -> dict[str, dict]:
    """Run the three methods on one simulated folder; per method a list of (error or None, seconds)."""
    truth = json.loads((root / "truth.json").read_text())["pairs"]
    results: dict[str, list] = {"realsr": [], "ECC (SR-RAW)": [], "SIFT+RANSAC": []}
    start = time.perf_counter()
    summary = align.run_align(root, out, show_progress=False)
    realsr_seconds = (time.perf_counter() - start) / max(1, summary.ok + summary.failed)
    records = {r["lr_source"]: r for r in read_manifest(out, stage="align").records}
    for name, entry in truth.items():
        record = records[name]
        lr = registration.grey(read_pixels(root / name))
        hr = registration.grey(read_pixels(root / entry["hr"]))
        window = geometry.output_window(np.asarray(entry["lr_to_hr"]), lr.shape, hr.shape)
        if record["status"] == "ok":
            results["realsr"].append((registration_error(entry, record["lr_to_hr"], record["lr_window"],
                                                         lr_distortion=record["distortion"]),
                                      realsr_seconds, record))
        else:
            results["realsr"].append((None, realsr_seconds, record))
        ratio = record["focal_ratio"]
        t = time.perf_counter()
        matrix = ecc_srraw(lr, hr, ratio)
        results["ECC (SR-RAW)"].append((None if matrix is None else registration_error(entry, matrix, window),
                                        time.perf_counter() - t, None))
        t = time.perf_counter()
        matrix = sift_ransac(lr, hr)
        results["SIFT+RANSAC"].append((None if matrix is None else registration_error(entry, matrix, window),
                                       time.perf_counter() - t, None))
    return results


def table(title: str, results: dict[str, list]) -> None:
    print(f"\n### {title}\n")
    print("| method | pairs | failed | median err (LR px) | <= 0.1 px | <= 0.25 px | worst | silently wrong (> 1 px) "
          "| s/pair |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, rows in results.items():
        errors = np.array([e for e, _, _ in rows if e is not None])
        n = len(rows)
        failed = n - len(errors)
        median = np.median(errors) if len(errors) else float("nan")
        within1 = np.sum(errors <= 0.1) / n  # of all pairs: a failure is a miss (the README's denominator)
        within25 = np.sum(errors <= 0.25) / n
        worst = errors.max() if len(errors) else float("nan")
        wrong = int(np.sum(errors > 1.0))
        seconds = np.median([s for _, s, _ in rows])
        print(f"| {method} | {n} | {failed} | {median:.3f} | {within1:.0%} ({np.sum(errors <= 0.1)}) | "
              f"{within25:.0%} ({np.sum(errors <= 0.25)}) | {worst:.3f} | {wrong} | {seconds:.2f} |")
    ours = np.array([e for e, _, _ in results["realsr"] if e is not None])
    for method in ("ECC (SR-RAW)", "SIFT+RANSAC"):
        theirs = np.array([e for e, _, _ in results[method] if e is not None])
        if len(ours) and len(theirs):
            print(f"\nmedian error ratio {method} / realsr: {np.median(theirs) / np.median(ours):.1f}x")
    failures = [(r["id"], r["error"]) for e, _, r in results["realsr"] if e is None]
    for pair_id, reason in failures:
        print(f"- realsr failed {pair_id}: {reason}")
    worst_rows = sorted(((e, r["id"]) for e, _, r in results["realsr"] if e is not None), reverse=True)[:3]
    print("- realsr worst pairs: " + ", ".join(f"{i} {e:.3f}" for e, i in worst_rows))
    # The targets count every pair: a refused pair is a miss.
    n = len(results["realsr"])
    for limit in (0.1, 0.25):
        hits = int(np.sum(ours <= limit))
        above = ", ".join(f"{r['id']} {e:.3f}" for e, _, r in results["realsr"] if e is not None and e > limit)
        print(f"- realsr of all {n} pairs within {limit} px: {hits} ({hits / n:.0%}); registered above: "
              f"{above or 'none'}")


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the parent's peak before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _speed_truth(root: str) -> tuple[str, dict]:
    """The speed folder's one pair: its LR file name and ``truth.json`` entry."""
    return next(iter(json.loads((Path(root) / "truth.json").read_text())["pairs"].items()))


def _speed_child(root: str, out: str, queue) -> None:
    start, cpu = time.perf_counter(), _cpu_seconds()
    align.run_align(root, out, show_progress=False)
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu
    _, entry = _speed_truth(root)
    record = next(iter(read_manifest(out, stage="align").records))
    error = (registration_error(entry, record["lr_to_hr"], record["lr_window"], lr_distortion=record["distortion"])
             if record["status"] == "ok" else float("nan"))
    queue.put((seconds, cpu_seconds, error, _peak_mb()))


def _ecc_child(root: str, out: str, queue) -> None:
    import cv2

    start, cpu = time.perf_counter(), _cpu_seconds()
    name, entry = _speed_truth(root)
    lr_pixels = read_pixels(Path(root) / name)
    hr_pixels = read_pixels(Path(root) / entry["hr"])
    matrix = ecc_srraw(registration.grey(lr_pixels), registration.grey(hr_pixels), 2.0)
    window = geometry.output_window(matrix, lr_pixels.shape, hr_pixels.shape)
    x0, y0, w, h = window
    hr_out = cv2.warpPerspective(hr_pixels, geometry.window_to_hr_output(matrix, window, 2), (2 * w, 2 * h),
                                 flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
    write_image(Path(out) / "lr.png", lr_pixels[y0:y0 + h, x0:x0 + w])
    write_image(Path(out) / "hr.png", hr_out)
    queue.put((time.perf_counter() - start, _cpu_seconds() - cpu, registration_error(entry, matrix, window),
               _peak_mb()))


def speed(work: Path) -> None:
    root = work / "speed"
    make_capture_folder([SPEED_PHOTO], root, scales=(2,), seed=5, lr_size=SPEED_SIZE)
    # Camera frames arrive as JPEG (or RAW): re-encode the two simulated PNGs as quality-95 JPEGs.
    import cv2

    csv = (root / "captures.csv").read_text()
    truth = (root / "truth.json").read_text()
    for png in sorted(root.rglob("*.png")):
        cv2.imwrite(str(png.with_suffix(".jpg")), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 95])
        png.unlink()
    (root / "captures.csv").write_text(csv.replace(".png", ".jpg"))
    (root / "truth.json").write_text(truth.replace(".png", ".jpg"))
    context = multiprocessing.get_context("spawn")
    figures = {}
    for name, target in (("realsr", _speed_child), ("ECC (SR-RAW)", _ecc_child)):
        queue = context.Queue()
        process = context.Process(target=target, args=(str(root), str(work / f"speed_{name[:3]}"), queue))
        process.start()
        figures[name] = queue.get()
        process.join()
    seconds, cpu, error, memory = figures["realsr"]
    ecc_seconds, ecc_cpu, ecc_error, ecc_memory = figures["ECC (SR-RAW)"]
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"\n### 20-MP pair ({SPEED_SIZE[0]}x{SPEED_SIZE[1]} JPEG, x2), end to end (read, register, warp, write); "
          f"load average {load} on {multiprocessing.cpu_count()} cores\n")
    print("| method | wall s | CPU s (user+sys) | peak RSS (MB) |\n|---|---|---|---|")
    print(f"| realsr align, error {error:.3f} LR px (nan: failed) | {seconds:.1f} | {cpu:.1f} | {memory:.0f} |")
    print(f"| ECC (SR-RAW), error {ecc_error:.2f} LR px | {ecc_seconds:.1f} | {ecc_cpu:.1f} | {ecc_memory:.0f} |")
    print(f"\ntime ratio realsr / ECC: {seconds / ecc_seconds:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=len(PHOTOS))
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--variants", default="normal,hard", help="comma-separated: normal, hard")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed of the accuracy sets (poses, zoom "
                        "errors, photometric changes, noise); confirm a result on a second seed")
    args = parser.parse_args()
    import cv2

    print(f"OpenCV {cv2.__version__}, {multiprocessing.cpu_count()} cores (shared machine: timings are noisy)")
    with tempfile.TemporaryDirectory(prefix="bench_align_") as tmp:
        work = Path(tmp)
        if not args.skip_accuracy:
            photos = [DATA / "photos" / name for name in PHOTOS[: args.photos]]
            for variant in args.variants.split(","):
                hard = variant == "hard"
                root = work / variant
                make_capture_folder(photos, root, seed=args.seed, hard=hard, lr_size=CAPTURE,
                                    bit_depth=16 if hard else 8)
                results = evaluate(root, work / f"{variant}_out")
                table(f"{variant} conditions ({len(photos)} photographs x 3 scales, "
                      f"{16 if hard else 8}-bit, seed {args.seed})", results)
        if not args.skip_speed:
            speed(work)


if __name__ == "__main__":
    main()
