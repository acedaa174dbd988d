"""Diagnosis: how much of realsr's error on generated captures comes from decoding them with the wrong curve?

The generator encodes its captures with a pure 1/2.2 power; realsr decodes every JPEG, PNG and TIFF with the sRGB
curve, as it must for captures whose curve it does not know. Where two captures differ in exposure or white balance,
the wrong curve leaves them no longer a gain apart (the relation bends at the dark end), and at a chart's black frame
that bends the fit's scale. Each pair of a ``bench_generalise.py`` folder is registered directly
(``register_captures``, no scene check) three ways, and each mapping measured against the generator's truth over its
output window (``bench_generalise.recorded_error``, LR px RMS):

* ``srgb``: as align decodes (the sRGB curve);
* ``own curve``: decoded with the generator's own 1/2.2 power (what a realsr that knew the curve would do);
* ``exact tone``: the sRGB decode, with the HR's channels first mapped by the exact relation of the two captures'
  exposure and white balance from the truth (``T(r_c T^-1(v))``, vignetting left out): the best any per-pair
  tone balance could do.

A diagnosis, not a measure of realsr: the last two use what realsr cannot know.

    python diag_decode_curve.py OUT [--pairs scene_00/lr_x2.tif ...]    # OUT: a bench_generalise.py --out folder
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_generalise as B  # noqa: E402
import generator as G  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--pairs", nargs="*", help="LR captures (scene_NN/lr_xS.ext); default: every pair")
    a = ap.parse_args(argv)
    from realsr_tools.geometry import RadialDistortion, output_window
    from realsr_tools.imaging import read_pixels
    from realsr_tools.registration import estimate, luma

    def decoded(v):  # realsr's sRGB-decoded value of a generator capture's true linear value v
        return luma.srgb_to_linear(np.clip(v, 0, 1) ** (1 / G.GAMMA))

    luma.DECODE["generator"] = lambda value: np.asarray(value, np.float64) ** G.GAMMA
    exact = {}
    plain_greys = estimate._balanced_greys

    def exact_greys(lr, hr, hr_grey, coarse, weights, curves):  # the HR tone-mapped by the truth, one grey
        if not exact:
            return plain_greys(lr, hr, hr_grey, coarse, weights, curves)
        grey = sum(decoded(exact["r"][c] * luma.linear(hr[..., c], "generator").astype(np.float64))
                   * weights[c] for c in range(3) if weights[c] > 0).astype(np.float32)
        return {None: grey}, [None] * len(coarse.starts)

    estimate._balanced_greys = exact_greys
    cond = next(c for c in ("hard", "normal") if (a.out / f"captures_{c}").exists())
    captures = a.out / f"captures_{cond}"
    truth = json.loads((a.out / f"captures_{cond}.truth.json").read_text())
    keys = a.pairs or sorted(k for s in truth["scenes"].values() for k, c in s["captures"].items() if c["scale"] > 1)
    rows = {name: [] for name in ("srgb", "own curve", "exact tone")}
    for key in keys:
        scene = truth["scenes"][key.split("/")[0]]
        cap, hr_cap = scene["captures"][key], scene["captures"][scene["hr"]]
        lr, hr = read_pixels(captures / key), read_pixels(captures / scene["hr"])
        pl, ph = cap["photometric"], hr_cap["photometric"]
        ratio = G.FOCAL[1] / G.FOCAL[cap["scale"]]  # the focal ratio align reads from captures.csv
        line = []
        for name, curves, r in (("srgb", ("srgb", "srgb"), None), ("own curve", ("generator", "generator"), None),
                                ("exact tone", ("srgb", "srgb"),
                                 [2 ** (pl["ev"] - ph["ev"]) * pl["wb"][c] / ph["wb"][c] for c in range(3)])):
            exact.clear()
            if r is not None:
                exact["r"] = r
            try:
                reg, _ = estimate.register_captures(lr, hr, ratio=ratio, curves=curves)
            except Exception as exc:  # a refusal is a miss here, as in the bench
                rows[name].append(None)
                line.append(f"{name} failed ({str(exc)[:40]})")
                continue
            x0, y0, w, h = output_window(reg.lr_to_hr, lr.shape, hr.shape, distortion=reg.distortion)
            xs, ys = np.meshgrid(np.linspace(x0, x0 + w - 1, 15), np.linspace(y0, y0 + h - 1, 15))
            record = {"lr_to_hr": reg.lr_to_hr.tolist(),
                      "distortion": reg.distortion.to_dict() if isinstance(reg.distortion, RadialDistortion) else None}
            error = float(np.sqrt(np.mean(np.sum(B.recorded_error(record, scene, key, cap, xs, ys) ** 2, axis=1))))
            rows[name].append(error)
            line.append(f"{name} {error:.3f}")
        print(f"{key:22s} EV {pl['ev'] - ph['ev']:+.2f}  {Path(scene['photo']).name[:24]:24s}  " + " | ".join(line),
              flush=True)
    limit = 0.25 if cond == "hard" else 0.1
    print(f"\n{len(keys)} pairs ({cond}; a failure counts as a miss)")
    for name, errors in rows.items():
        values = np.array([e if e is not None else np.inf for e in errors])
        print(f"  {name:10s} median {np.median(values):.3f}  within 0.1 px {np.sum(values <= 0.1)}  "
              f"within {limit} px {np.sum(values <= limit)}")


if __name__ == "__main__":
    main()
