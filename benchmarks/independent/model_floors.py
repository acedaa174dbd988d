"""Could the chosen model have reached the truth? The floor of each model family over each written pair's window.

For every pair a ``bench_generalise.py`` run wrote, the generator's exact LR -> HR mapping is sampled over the pair's
output window and fitted by least squares with a similarity, an affine map, a homography and the radial model (a
homography after two radial terms about realsr's documented centres, docs/align.md, written here from that text):
the fit's RMS residual (LR px) is the smallest error that family can have there, whatever the data. The generator's
lens centres are off the frame centres by up to 2 %; realsr's are not, and the radial floor says what that costs
(the ``decentred`` family: the HR lens's centre free and its fifth order, which realsr fits where the evidence asks). A
miss whose chosen family has a floor above the target is the model's limit (model selection chose too simple a
model); a miss whose floor is far below it is the fit's. Reads only the truth JSON, ``results.json`` and the align
manifest (no realsr code).

    python model_floors.py OUT [OUT ...] [--json FILE]     # OUT: bench_generalise.py --out folders
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import least_squares

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generator as G  # noqa: E402
from common import TARGET, read_manifest  # noqa: E402

CLOSED_FORM = ("similarity", "affine", "homography")  # family_floor's families; the radial one is radial_floor's
FAMILIES = CLOSED_FORM + ("radial",)
GRID = 2  # LR px between the window's sample points
RADIAL_STRIDE = 2  # the radial fit (iterative) uses every RADIAL_STRIDE-th sample point along each axis


def _project(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    out = np.column_stack([points, np.ones(len(points))]) @ matrix.T
    return out[:, :2] / out[:, 2:]


def radial_floor(points: np.ndarray, mapped: np.ndarray, lr_size: tuple[int, int], hr_size: tuple[int, int], *,
                 decentred: bool = False) -> float:
    """RMS residual (units of ``mapped``) of realsr's radial model fitted to ``points -> mapped`` (LR -> HR px).

    The model as docs/align.md states it: ``y = x + sum_i k_i (x - c_i)|x - c_i|^2 / R_i^2`` on LR px, then a
    homography; c_1 the LR frame's centre, R_1 its half diagonal; c_2 the HR frame's centre seen in the LR, R_2 the
    HR half diagonal over the magnification (both from the homography alone, held fixed while the terms are fitted).
    ``decentred``: with the HR lens's centre free (an offset from c_2) and its fifth order, a third term
    ``k_3 (x - c_2)(|x - c_2|^2 / R_2^2)^2`` about the same centre ("The HR lens's centre").
    """
    (lw, lh), (hw, hh) = lr_size, hr_size
    start, _ = cv2.findHomography(points, mapped, 0)
    start = start / start[2, 2]
    hr_centre = _project(np.linalg.inv(start), np.array([[(hw - 1) / 2, (hh - 1) / 2]]))[0]
    zoom = np.sqrt(abs(np.linalg.det(start[:2, :2])))
    frames = [((lw - 1) / 2, (lh - 1) / 2, np.hypot(lw, lh) / 2), (*hr_centre, np.hypot(hw, hh) / 2 / zoom)]

    def residual(v):
        bent = points.copy()
        centres = [frame[:2] for frame in frames]
        if decentred:
            centres[1] = centres[1] + v[11:13]
        for k, (cx, cy), (_, _, radius), power in zip(v[8:11], centres + centres[1:], frames + frames[1:], (1, 1, 2)):
            d = points - (cx, cy)
            bent += k * d * (np.sum(d * d, axis=1, keepdims=True) / radius ** 2) ** power
        return (_project(np.append(v[:8], 1.0).reshape(3, 3), bent) - mapped).ravel()

    extra = [0.0] * (5 if decentred else 2)  # k_1, k_2 (and k_3, the centre's offset)
    fit = least_squares(residual, np.concatenate([start.ravel()[:8], extra]), x_scale="jac", method="lm")
    return float(np.sqrt(np.mean(np.sum(fit.fun.reshape(-1, 2) ** 2, axis=1))))


def family_floor(points: np.ndarray, mapped: np.ndarray, family: str) -> float:
    """RMS residual (in the units of ``mapped``) of the least-squares ``family`` fit of ``points -> mapped``."""
    x, y = points[:, 0], points[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    if family == "similarity":  # (a, b, tx, ty): X = a x - b y + tx, Y = b x + a y + ty
        design = np.concatenate([np.column_stack([x, -y, one, zero]), np.column_stack([y, x, zero, one])])
        coef, *_ = np.linalg.lstsq(design, np.concatenate([mapped[:, 0], mapped[:, 1]]), rcond=None)
        fitted = (design @ coef).reshape(2, -1).T
    elif family == "affine":
        design = np.column_stack([x, y, one])
        coef, *_ = np.linalg.lstsq(design, mapped, rcond=None)
        fitted = design @ coef
    else:  # homography: OpenCV's least-squares fit over all points (normalised DLT, then Levenberg-Marquardt)
        matrix, _ = cv2.findHomography(points, mapped, 0)
        fitted = _project(matrix, points)
    return float(np.sqrt(np.mean(np.sum((fitted - mapped) ** 2, axis=1))))


def floors(out: Path) -> list[dict]:
    rows = []
    for condition in ("normal", "hard"):
        manifest = out / f"aligned_{condition}" / "manifest.jsonl"
        if not manifest.exists():
            continue
        truth = json.loads((out / f"captures_{condition}.truth.json").read_text())
        results = {r["lr"]: r for r in json.loads((out / "results.json").read_text())[condition]["pairs"]}
        _, records = read_manifest(manifest)
        latest = {r["lr_source"]: r for r in records if r.get("lr_source")}
        for key, result in results.items():
            record = latest.get(key)
            if result["status"] != "ok" or record is None:
                continue
            scene = G.scene_truth(truth, key.split("/")[0])
            x0, y0, w, h = record["lr_window"]
            gy, gx = np.mgrid[y0:y0 + h:GRID, x0:x0 + w:GRID].astype(np.float64)
            tx, ty = G.lr_to_hr(scene, key, gx, gy)
            points, mapped = np.column_stack([gx.ravel(), gy.ravel()]), np.column_stack([tx.ravel(), ty.ravel()])
            zoom = record["registration"]["zoom"]  # HR px per LR px: floors in LR px
            found = {f: family_floor(points, mapped, f) / zoom for f in CLOSED_FORM}
            lr_cap, hr_cap = scene["captures"][key], scene["captures"][scene["hr"]]
            sparse = (slice(None, None, RADIAL_STRIDE),) * 2
            for family in ("radial", "decentred"):
                found[family] = radial_floor(np.column_stack([gx[sparse].ravel(), gy[sparse].ravel()]),
                                             np.column_stack([tx[sparse].ravel(), ty[sparse].ravel()]),
                                             (lr_cap["W"], lr_cap["H"]), (hr_cap["W"], hr_cap["H"]),
                                             decentred=family == "decentred") / zoom
            rows.append({"set": str(out), "condition": condition, "lr": key, "model": record["registration"]["model"]["name"],
                         "error_rms": result["error_rms"], "miss": result["error_rms"] > TARGET[condition],
                         "floors": found})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outs", nargs="+", type=Path, help="bench_generalise.py --out folders")
    parser.add_argument("--json", type=Path, help="write every pair's row here")
    args = parser.parse_args(argv)
    rows = [row for out in args.outs for row in floors(out)]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    for condition, target in TARGET.items():
        chosen = [r for r in rows if r["condition"] == condition]
        if not chosen:
            continue
        misses = [r for r in chosen if r["miss"]]
        limited = [r for r in chosen if r["model"] in r["floors"] and r["floors"][r["model"]] > target]
        print(f"{condition}: {len(chosen)} written pairs, {len(misses)} over {target} LR px; chosen family's floor "
              f"over the target: {len(limited)} pairs ({sum(r['miss'] for r in limited)} of them misses)")
        for family in ("radial", "decentred"):
            floor = np.array([r["floors"][family] for r in chosen])
            print(f"  {family} family's floor over all {len(chosen)}: median {np.median(floor):.4f}, p95 "
                  f"{np.percentile(floor, 95):.4f}, max {floor.max():.4f} LR px")
        for r in misses:
            own = r["floors"].get(r["model"])
            print(f"  {Path(r['set']).name:12s} {r['lr']:22s} {r['model']:11s} error {r['error_rms']:.3f}  floor of "
                  f"its family {'-' if own is None else f'{own:.3f}'}  (similarity {r['floors']['similarity']:.3f}, "
                  f"affine {r['floors']['affine']:.3f}, homography {r['floors']['homography']:.3f}, "
                  f"radial {r['floors']['radial']:.3f}, decentred {r['floors']['decentred']:.3f})")


if __name__ == "__main__":
    main()
