"""City100's real zoom pairs as an x4 set for ``bench_real_pairs.py --data OUT --sets city100_x4``.

City100 (`../shared/data/pairs/city100`, github:ngchc/CameraSR, MIT) holds a long-focal capture H and the short-focal
capture L of the same scene, registered by the dataset to the same size. Here H (cropped to a multiple of 4) is the
HR and L area-downscaled by 4 the LR, so the LR's geometry is the dataset's registration, its optics and vignetting
the short lens's, and part of its degradation (the 4x area downscaling) synthetic.

    python prepare_city100.py OUT
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA  # noqa: E402

CITY100 = DATA / "pairs" / "city100"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    a = ap.parse_args(argv)
    hr_dir, lr_dir = a.out / "city100_x4" / "HR", a.out / "city100_x4" / "LR"
    hr_dir.mkdir(parents=True, exist_ok=True)
    lr_dir.mkdir(parents=True, exist_ok=True)
    for long_focal in sorted(CITY100.glob("*/*H.png")):
        short_focal = long_focal.with_name(long_focal.name[:-5] + "L.png")
        hr, lr = cv2.imread(str(long_focal), cv2.IMREAD_UNCHANGED), cv2.imread(str(short_focal), cv2.IMREAD_UNCHANGED)
        h, w = hr.shape[0] // 4 * 4, hr.shape[1] // 4 * 4
        name = f"{long_focal.parent.name}_{long_focal.name[:-5]}.png"
        cv2.imwrite(str(hr_dir / name), hr[:h, :w])
        cv2.imwrite(str(lr_dir / name), cv2.resize(lr[:h, :w], (w // 4, h // 4), interpolation=cv2.INTER_AREA))
        print(name, f"HR {w}x{h}, LR {w // 4}x{h // 4}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
