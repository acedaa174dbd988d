"""The realsr Python API on one LR/HR capture pair: register, check, warp, and verify the result.

    python examples/one_pair_api.py LR_IMAGE HR_IMAGE --ratio 3.75 --scale 4 --out OUT_DIR
    python examples/one_pair_api.py --out OUT_DIR        # simulates a x2 pair from a bundled photograph

For people who build their own pipeline: everything here is a pure function on arrays (images H x W x 3 RGB
float32 in [0, 1]; points (x, y) with pixel centres at integer coordinates, see realsr_tools/geometry.py), and
the only files written are the two outputs. `realsr align` does the same per pair, plus photometric correction
and the manifest. The verifier (realsr_tools/verification.py) shares no code with the registration: it measures
the residual displacement field over the whole window from the two output images alone.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from realsr_tools.errors import RegistrationError
from realsr_tools.geometry import output_window, warp_hr
from realsr_tools.imaging import read_pixels, write_image
from realsr_tools.metrics import psnr
from realsr_tools.quality import residual_shift
from realsr_tools.registration import check_registration, register_captures
from realsr_tools.registration.luma import linear, linear_area_downscale
from realsr_tools.verification import verify

LIMIT = 0.5  # LR px: the largest residual displacement accepted anywhere (realsr align: MAX_FIELD_DISPLACEMENT)


def align_one_pair(lr_path: Path, hr_path: Path, *, ratio: float, scale: int, out: Path) -> dict:
    lr_pixels, hr_pixels = read_pixels(lr_path), read_pixels(hr_path)
    # 1. register: linear-light grey images of both captures (the HR's channels balanced to the LR's colour where the
    # white balance differs), then LR -> HR homography (+ radial distortion when needed)
    registration, _ = register_captures(lr_pixels, hr_pixels, ratio=ratio)
    # 2. the LR window whose HR footprint lies inside the HR frame, and the checks align applies
    window = output_window(registration.lr_to_hr, lr_pixels.shape, hr_pixels.shape,
                           distortion=registration.distortion)
    check_registration(registration, ratio=ratio, window=window, lr_shape=lr_pixels.shape[:2],
                       hr_shape=hr_pixels.shape[:2])
    # 3. warp the HR onto the LR window at exactly `scale` x
    x0, y0, w, h = window
    hr_out = warp_hr(hr_pixels, registration.lr_to_hr, window, scale, distortion=registration.distortion)
    lr_out = lr_pixels[y0:y0 + h, x0:x0 + w]
    # 4. verify independently: the displacement field between the LR and the area-downscaled warped HR, in linear
    # light as align does (the HR averaged as a larger sensor pixel would; on encoded values a bright edge on a dark
    # surround spreads differently at the two scales and reads as a shift)
    lr_light = linear(lr_out, "srgb")
    hr_light_on_lr = linear_area_downscale(hr_out, "srgb", scale)
    verification = verify(lr_light, hr_light_on_lr, limit=LIMIT, sigmas=0.0, p95_factor=2.5)  # align's gate
    if verification.verdict == "misaligned":
        raise RegistrationError(f"verified misalignment: {verification.reason}")
    shift = residual_shift(hr_light_on_lr, lr_light)
    write_image(out / "LR" / f"{lr_path.stem}.png", lr_out)
    write_image(out / "HR" / f"{lr_path.stem}.png", hr_out)
    return {"lr_window": window, "zoom": round(registration.zoom, 4), "correlation": round(registration.correlation, 4),
            "verdict": verification.verdict,
            "verified_p95_lr_px": None if verification.p95 is None else round(verification.p95, 3),
            "residual_shift_lr_px": None if shift.median is None else round(shift.median, 3),
            "psnr_lr_vs_hr_on_lr_linear": round(psnr(lr_light, hr_light_on_lr, data_range=1.0), 2),
            "hr_shape": hr_out.shape, "lr_shape": lr_out.shape}


def _simulated_pair(folder: Path) -> tuple[Path, Path, float, int]:
    from realsr_tools.simulate import make_capture_folder
    from realsr_tools.stages.demo import sample_photos

    photo = next(p for p in sample_photos() if p.name == "coffee.jpg")
    make_capture_folder([photo], folder, scales=(2,), seed=1)
    scene = folder / photo.stem  # LR captured at 50 mm, HR at 100 mm (captures.csv says so)
    return scene / "f50.png", scene / "f100.png", 2.0, 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lr", nargs="?", type=Path)
    parser.add_argument("hr", nargs="?", type=Path)
    parser.add_argument("--ratio", type=float, help="HR focal length / LR focal length")
    parser.add_argument("--scale", type=int, help="output scale (2, 3 or 4)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.lr is None:
            lr, hr, ratio, scale = _simulated_pair(Path(tmp))
        else:
            lr, hr, ratio, scale = args.lr, args.hr, args.ratio, args.scale
        try:
            result = align_one_pair(lr, hr, ratio=ratio, scale=scale, out=args.out)
        except RegistrationError as exc:
            raise SystemExit(f"{lr}: not aligned: {exc}")
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
