"""Adaptor: captures from realsr's OWN simulator (``realsr_tools/simulate.py``), judged by this harness's code.

``bench_align.py`` measures realsr on its simulator with the simulator's truth *and* realsr's recorded mapping
(``registration_error``); this adaptor lets ``bench_generalise.py --source realsr-simulate`` measure the same captures
the way it measures the independent generator's: from realsr's written HR pixels against the HR source warped by the
true mapping, plus the estimator's LR-vs-HR residual. So every row of the accuracy table has one measure.

Generation calls ``realsr_tools.simulate.make_capture_folder`` in a *subprocess* (``PYTHONPATH`` = this checkout),
with ``bench_align.py``'s photographs (``PHOTOS``, from ``../shared/data/photos``), capture size (``CAPTURE``
640 x 480), seed semantics (the same seed for normal and hard) and bit depth (8 normal, 16 hard): the capture folders
are exactly those ``bench_align.py --seed N`` aligns. This process never imports realsr_tools.

Truth: the simulator's ``truth.json`` (in the capture folder) has, per LR file, ``lr_to_hr`` (3x3), ``true_zoom``,
``lr_distortion`` / ``hr_distortion`` ``{k1, centre, radius}``. simulate.py's module docstring: "Distortion acts
before the homography: u' = c + (u - c)(1 + k1 |u - c|^2 / R^2)", i.e. the observed (distorted) capture pixel u maps
to the ideal pixel u' by that formula, then ``lr_to_hr`` maps ideal LR to ideal HR, and the HR observed pixel is the
inverse of the formula (checked against ``true_lr_to_hr``'s source: undistort LR, homography, distort HR). That is
the generator's own model with ``M_lr = lr_to_hr``, ``M_hr = I`` and ``k = k1``, so :func:`convert` writes the truth
in the generator's format and :func:`generator.lr_to_hr` (harness code: ideal = c + (x - c)(1 + k |x - c|^2 / R^2),
inverse by Newton on the radius) evaluates it.

Validation (``python realsr_sim.py --validate OUT``): (a) the converted truth against ``simulate.true_lr_to_hr``
evaluated in a subprocess on a grid of points (a cross-check of the format reading only); (b) from pixels, as the
generator was validated: LR vs the truth-warped HR (area-downscaled to the LR grid) by the estimator's tile phase
correlation, bias = median displacement vector (LR px).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generator as G  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

_GENERATE = """
import json, sys
from pathlib import Path
sys.path.insert(0, str(Path('benchmarks').resolve()))
from bench_align import CAPTURE, DATA, PHOTOS
from realsr_tools.simulate import make_capture_folder
out, seed, hard, n = sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1', int(sys.argv[4])
photos = [Path(p) for p in sys.argv[5:]] or [DATA / 'photos' / name for name in PHOTOS[:n]]
make_capture_folder(photos, Path(out), seed=seed, hard=hard, lr_size=CAPTURE, bit_depth=16 if hard else 8)
print(json.dumps([p.name for p in photos]))
"""

_TRUE_MAP = """
import json, sys
import numpy as np
from realsr_tools.simulate import true_lr_to_hr
truth = json.load(open(sys.argv[1]))['pairs']
pts = np.array(json.loads(sys.stdin.read()), float)
print(json.dumps({k: true_lr_to_hr(e, pts).tolist() for k, e in truth.items()}))
"""


def _python(code: str, *args, stdin: str | None = None) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    p = subprocess.run(["nice", "-n", "10", sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env,
                       input=stdin, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"realsr simulator subprocess failed:\n{p.stderr[-3000:]}")
    return p.stdout


def _dist(d: dict | None) -> dict | None:
    if not d or not d.get("k1"):
        return None
    return dict(k=float(d["k1"]), centre=[float(c) for c in d["centre"]], radius=float(d["radius"]))


def convert(sim_truth: dict, photos: list[str]) -> dict:
    """The simulator's truth.json -> the generator's truth format (``scenes`` -> ``captures`` with M, distortion)."""
    by_stem = {Path(p).stem: p for p in photos}
    scenes: dict[str, dict] = {}
    for lr_key, e in sorted(sim_truth["pairs"].items()):
        name = lr_key.split("/")[0]
        sc = scenes.setdefault(name, dict(photo="photos/" + by_stem.get(name, name), held_out=False, captures={},
                                          hr=e["hr"]))
        if sc["hr"] != e["hr"]:
            raise ValueError(f"{lr_key}: two HR captures in scene {name}")
        sc["captures"].setdefault(e["hr"], dict(scale=1, M=np.eye(3).tolist(), distortion=_dist(e["hr_distortion"]),
                                                file=e["hr"]))
        if _dist(e["hr_distortion"]) != sc["captures"][e["hr"]]["distortion"]:
            raise ValueError(f"{lr_key}: HR distortion differs between the pairs of scene {name}")
        sc["captures"][lr_key] = dict(scale=int(e["scale"]), true_zoom=float(e["true_zoom"]), M=e["lr_to_hr"],
                                      distortion=_dist(e["lr_distortion"]), file=lr_key)
    return dict(format="independent-generator truth v1 (converted from realsr_tools.simulate truth.json)",
                source="realsr-simulate", seed=sim_truth["seed"], hard=sim_truth["hard"], scenes=scenes,
                convention="as generator.py; M of the HR capture = identity, M of an LR capture = simulate's "
                           "lr_to_hr; distortion k = simulate's k1")


def generate(out: Path, seed: int = 1, hard: bool = False, n_photos: int = 12, photo_paths=()) -> Path:
    """Simulate bench_align's capture folder into ``out``; write ``out.truth.json`` (converted) beside it.

    ``photo_paths``: other photographs instead of bench_align's (validation only)."""
    out = Path(out)
    photos = json.loads(_python(_GENERATE, out.resolve(), seed, int(hard), n_photos,
                                *[Path(p).resolve() for p in photo_paths]).strip().splitlines()[-1])
    sim = json.loads((out / "truth.json").read_text())
    truth_path = out.parent / (out.name + ".truth.json")
    truth_path.write_text(json.dumps(convert(sim, photos), indent=1))
    return truth_path


# ---------------------------------------------------------------------------------------------------------------
# validation

def check_against_simulator(cap_dir: Path, truth: dict, n: int = 15) -> float:
    """Max |harness mapping - simulate.true_lr_to_hr| (HR px) on an n x n grid of each LR frame (subprocess)."""
    import cv2
    worst = 0.0
    sizes = {}
    for sc in truth["scenes"].values():
        for key in sc["captures"]:
            if key != sc["hr"]:
                img = cv2.imread(str(cap_dir / key), cv2.IMREAD_UNCHANGED)
                sizes[key] = img.shape[:2]
    h, w = next(iter(sizes.values()))
    if any(s != (h, w) for s in sizes.values()):
        raise ValueError("simulated LR captures of different sizes")
    gx, gy = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n))
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    ref = json.loads(_python(_TRUE_MAP, cap_dir.resolve() / "truth.json", stdin=json.dumps(pts.tolist())))
    for sc in truth["scenes"].values():
        for key in sc["captures"]:
            if key == sc["hr"]:
                continue
            hx, hy = G.lr_to_hr(sc, key, pts[:, 0], pts[:, 1])
            r = np.asarray(ref[key])
            worst = max(worst, float(np.hypot(hx - r[:, 0], hy - r[:, 1]).max()))
    return worst


def pixel_bias(cap_dir: Path, truth: dict, verbose=True) -> list[dict]:
    """LR vs the truth-warped HR (area-downscaled to the LR grid): median tile displacement vector and |d|."""
    import bench_generalise as B
    import estimator as E
    rows = []
    for sname, sc in truth["scenes"].items():
        hr = E.load_rgb(cap_dir / sc["hr"])
        for key, cap in sc["captures"].items():
            if key == sc["hr"]:
                continue
            s = cap["scale"]
            lr = E.load_rgb(cap_dir / key)
            H, W = lr.shape[:2]
            gy, gx = np.mgrid[0:H:4, 0:W:4].astype(float)
            hx, hy = G.lr_to_hr(sc, key, gx, gy)
            inside = (hx > 8) & (hy > 8) & (hx < hr.shape[1] - 9) & (hy < hr.shape[0] - 9)
            ys, xs = gy[inside], gx[inside]
            x0, x1, y0, y1 = int(xs.min()) + 4 * s, int(xs.max()) - 4 * s, int(ys.min()) + 4 * s, int(ys.max()) - 4 * s
            ht = B.truth_hr(hr, sc, key, x0, y0, x1 - x0, y1 - y0, s)
            f = E.displacement_field(E.luma(lr[y0:y1, x0:x1]), E.area_down(E.luma(ht), s))
            m = f["measurable"]
            d = f["d"][m]
            row = dict(lr=key, scale=s, tiles=int(m.sum()),
                       k_lr=(cap["distortion"] or {}).get("k", 0.0),
                       k_hr=(sc["captures"][sc["hr"]]["distortion"] or {}).get("k", 0.0))
            if len(d):
                row.update(bias=np.median(d, 0).round(4).tolist(), median_abs=float(np.median(np.hypot(*d.T))),
                           p95_abs=float(np.percentile(np.hypot(*d.T), 95)))
            rows.append(row)
            if verbose:
                print(json.dumps(row), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description="realsr simulator captures + converted truth; --validate")
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hard", action="store_true")
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--texture", action="store_true",
                    help="validation on a synthetic random texture (measurable everywhere) instead of the photographs")
    a = ap.parse_args(argv)
    paths = []
    if a.texture:
        import cv2
        rng = np.random.default_rng(a.seed)
        a.out.mkdir(parents=True, exist_ok=True)
        for i in range(a.photos):
            t = cv2.GaussianBlur(rng.random((1800, 2400, 3)).astype(np.float32), (0, 0), 2.5)
            t = (t - t.min()) / (t.max() - t.min())
            paths.append(a.out.parent / f"{a.out.name}_texture{i}.png")
            cv2.imwrite(str(paths[-1]), (t * 255 + 0.5).astype(np.uint8))
    tp = generate(a.out, a.seed, a.hard, a.photos, paths)
    print("truth:", tp)
    if a.validate:
        truth = json.loads(tp.read_text())
        print(f"max |harness mapping - simulate.true_lr_to_hr| = {check_against_simulator(a.out, truth):.2e} HR px")
        rows = [r for r in pixel_bias(a.out, truth) if "bias" in r]
        b = np.array([r["bias"] for r in rows])
        med_abs = np.median([r["median_abs"] for r in rows])
        print(f"pairs {len(rows)}: bias |median vector| max {np.hypot(*b.T).max():.4f}, median "
              f"{np.median(np.hypot(*b.T)):.4f} LR px; median |d| median {med_abs:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
