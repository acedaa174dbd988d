"""Diagnosis: how far from the geometric truth does an intensity match of LR vs HR put a generated pair?

Re-renders one LR capture and its HR from a generator truth file with noise, shake and photometric differences off,
then fits an affine field (same dense Gauss-Newton as bench_generalise) between the LR and the truth-warped,
area-downscaled HR, once in linear light and once after the 1/2.2 gamma encoding the written captures get. With a
correct truth the linear fit is ~0; whatever the gamma fit shows is the bias any intensity-based registration in
encoded values inherits on that scene (differently blurred high-contrast edges do not survive a nonlinear tone curve
as a pure geometric change).

    python diag_encoding.py CAPTURES_DIR SCENE LR_FILE X0 Y0 W H
    e.g. python diag_encoding.py /tmp/g/captures_normal scene_00 scene_00/lr_x2.png 286 135 362 238
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_generalise as B  # noqa: E402
import estimator as E  # noqa: E402
import generator as G  # noqa: E402


def main(argv=None):
    argv = argv if argv is not None else sys.argv[1:]
    cd, scene, key = Path(argv[0]), argv[1], argv[2]
    x0, y0, w, h = map(int, argv[3:7])
    truth = json.loads(Path(str(cd) + ".truth.json").read_text())
    sc = truth["scenes"][scene]
    photo = G.read_photo(G.DATA / sc["photo"])
    sur = np.array(sc["surround"], np.float32)
    world = cv2.copyMakeBorder(photo ** G.GAMMA, 64, 64, 64, 64, cv2.BORDER_CONSTANT,
                               value=tuple(float(v) for v in sur))
    rng = np.random.default_rng(0)
    neutral = dict(noise=[0, 0], shake=[0, 0], photometric=dict(ev=0.0, wb=[1.0, 1.0, 1.0], vignetting=0.0))
    hrc = dict(sc["captures"][sc["hr"]], **neutral)
    lrc = dict(sc["captures"][key], **neutral)
    s = lrc["scale"]
    hr = G.render(world, sur, hrc, rng, 3)
    lr = G.render(world, sur, lrc, rng, 3)
    for name, gam in (("linear", 1.0), ("gamma 1/2.2", 1 / G.GAMMA)):
        ht = B.truth_hr(hr ** gam, sc, key, x0, y0, w, h, s)
        _, fn, info = E.parametric_field(E.luma(lr[y0:y0 + h, x0:x0 + w] ** gam), E.area_down(E.luma(ht), s), order=1)
        gy, gx = np.mgrid[0:h:4, 0:w:4]
        d = fn(gx.ravel(), gy.ravel())
        m = np.hypot(d[:, 0], d[:, 1])
        print(f"{name:12s} intensity-optimal field vs geometric truth: RMS {np.sqrt((m ** 2).mean()):.4f} "
              f"max {m.max():.4f} LR px (converged {info['converged']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
