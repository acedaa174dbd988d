"""How well could any registration pin each generator pair? A Cramér-Rao bound from the truth, beside realsr's error.

For every LR capture of a ``bench_generalise.py`` run, the capture is rendered again from the generator's truth
without noise, and the Fisher information its pixels carry about the LR -> HR mapping is summed over the pair's
window (realsr's output window where it wrote the pair, else the largest rectangle of LR px whose true mapping lies
in the HR frame):

* the mapping's error is a displacement field in LR px spanned by the family the truth lives in: a linearised
  homography (8 terms) and one radial term for each lens (about the generator's own lens centres, or the frame
  centres where a lens has none; the centres are taken as known, which only lowers the bound);
* each of the three colour channels is an independent measurement with the generator's noise (its Poisson-Gaussian
  sigma of the LR, plus the HR's averaged over the zoom^2 HR px under one LR px, plus the files' quantisation);
* nuisance terms that any method must estimate: a gain and an offset per channel and a vignetting term for each
  frame (``rho^2`` about its centre);
* the generator's draw distributions as priors (their variances as Gaussians): the magnification about the focal
  ratio, the roll, each lens's radial term. Everything else is unknown.

The covariance of the 10 geometric terms, marginal over the nuisance, is carried to the window: ``bound`` is the
RMS over the window of the displacement's standard deviation, in LR px, the error an efficient estimator would have
on average. It leaves out what makes real registration worse (aliasing, the HR seen through other optics, blur and
shake that differ, photometry beyond gain and vignetting, unknown lens centres), so it is a lower bound: a pair whose
``bound`` exceeds the issue's tolerance (0.1 LR px normal, 0.25 hard) cannot be expected within it by any method,
and refusing it is the honest answer. A miss whose bound is far below the tolerance is realsr's to win.

Reads only the truth JSON, ``results.json`` and the photographs in ../shared/data; shares no code with realsr.
``--validate`` checks the information sum against a Monte Carlo of an efficient estimator (Lucas-Kanade on a
noise-free template) on a random texture: the estimates' spread must match the bound.

    python identifiability.py OUT [OUT ...] [--json FILE]     # OUT: bench_generalise.py --out folders
    python identifiability.py --validate
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generator as G  # noqa: E402
from common import TARGET, dump, fmt, table  # noqa: E402

GEOMETRY = 10  # a pair's geometric terms: linearised homography (8) + a radial term per lens (2)
ROWS_PER_CHUNK = 256  # window rows summed at once (bounded memory on 4000-6000 px frames)
FLAT_PRIOR_PX = 100.0  # LR px: sigma of a prior on every geometric term, so a flat window gives a finite, huge bound


def prior_sigmas(hard: bool) -> dict:
    """The generator's draw distributions (generator.draw_scene) as standard deviations: the LR's magnification
    about the focal ratio (``1 +- U(2, 5) %``), its roll about the HR's (``U(-1, 1)`` degrees), each lens's ``k``
    (hard: ``U(-3, 3) %`` on every lens; normal: ``U(-1, 1) %`` on 40 % of them)."""
    magnification = math.sqrt((0.05 ** 3 - 0.02 ** 3) / (3 * 0.03))
    lens = 0.03 / math.sqrt(3) if hard else math.sqrt(0.4 / 3) * 0.01
    return {"magnification": magnification, "roll": math.radians(1) / math.sqrt(3), "k": lens}


def noise_free(truth: dict, scene: str, key: str, photo_cache: dict) -> np.ndarray:
    """The capture ``key`` rendered exactly as the generator rendered it, without its noise (linear RGB)."""
    sc = truth["scenes"][scene]
    rel = sc["photo"]
    if rel not in photo_cache:
        photo_cache.clear()
        photo_cache[rel] = G.read_photo(G.DATA / rel) ** G.GAMMA
    surround = np.asarray(sc["surround"], np.float32)
    cap = dict(sc["captures"][key], noise=[0.0, 0.0])
    return G.render(G.make_world(photo_cache[rel], surround), surround, cap, np.random.default_rng(0),
                    G.supersampling(cap["W"]))


def truth_window(truth: dict, scene: str, lr_key: str, step: int = 4) -> list[int]:
    """The largest axis-aligned rectangle (x0, y0, w, h) of LR px whose true mapping lies inside the HR frame (a
    grid of ``step`` px, shrunk side by side until every grid point inside maps into the frame)."""
    lr = truth["scenes"][scene]["captures"][lr_key]
    hr = truth["scenes"][scene]["captures"][truth["scenes"][scene]["hr"]]
    ys, xs = np.mgrid[0:lr["H"]:step, 0:lr["W"]:step]
    hx, hy = G.lr_to_hr(truth["scenes"][scene], lr_key, xs.ravel(), ys.ravel())
    inside = ((hx >= 0) & (hx <= hr["W"] - 1) & (hy >= 0) & (hy <= hr["H"] - 1)).reshape(xs.shape)
    # Far outside the HR frame its lens model folds back and maps stray LR points inside: keep the largest region.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inside.astype(np.uint8), connectivity=4)
    if count > 2:
        inside = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    rows, cols = np.nonzero(inside)
    if not len(rows):
        return [0, 0, 0, 0]
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    while r0 <= r1 and c0 <= c1 and not inside[r0:r1 + 1, c0:c1 + 1].all():
        block = inside[r0:r1 + 1, c0:c1 + 1]
        misses = {"top": (~block[0]).sum(), "bottom": (~block[-1]).sum(), "left": (~block[:, 0]).sum(),
                  "right": (~block[:, -1]).sum()}
        side = max(misses, key=misses.get)
        r0, r1, c0, c1 = (r0 + (side == "top"), r1 - (side == "bottom"), c0 + (side == "left"),
                          c1 - (side == "right"))
    return [int(c0 * step), int(r0 * step), int((c1 - c0) * step + 1), int((r1 - r0) * step + 1)]


def displacement_basis(x: np.ndarray, y: np.ndarray, window, lenses) -> np.ndarray:
    """(N, 2, GEOMETRY): the LR-px displacement each geometric term makes at the points: translation, the four
    linear terms and two perspective terms of a homography about the window's centre (coordinates in units of the
    window's half width), then ``k (x - c) |x - c|^2 / R^2`` for each lens ``(cx, cy, R)`` given in LR px."""
    x0, y0, w, h = window
    half = max(w, h) / 2
    u, v = (x - (x0 + (w - 1) / 2)) / half, (y - (y0 + (h - 1) / 2)) / half
    zero, one = np.zeros_like(u), np.ones_like(u)
    columns = [(one, zero), (zero, one), (u, zero), (v, zero), (zero, u), (zero, v), (u * u, u * v), (u * v, v * v)]
    for cx, cy, radius in lenses:
        dx, dy = x - cx, y - cy
        r2 = (dx * dx + dy * dy) / radius ** 2
        columns.append((dx * r2, dy * r2))
    return np.stack([np.stack(c, -1) for c in columns], -1)


def prior_precision(window, sigmas: dict, n_nuisance: int) -> np.ndarray:
    """Prior precision over (geometry, nuisance): magnification and roll of the linear terms, each lens's ``k``, and
    a flat prior of :data:`FLAT_PRIOR_PX` on every geometric term."""
    half = max(window[2], window[3]) / 2
    p = np.zeros((GEOMETRY + n_nuisance,) * 2)
    p[:GEOMETRY, :GEOMETRY] += np.eye(GEOMETRY) / FLAT_PRIOR_PX ** 2
    magnification = np.zeros(GEOMETRY + n_nuisance)
    magnification[[2, 5]] = 1 / (2 * half)  # (du/du + dv/dv) / 2, per LR px of the half width
    roll = np.zeros(GEOMETRY + n_nuisance)
    roll[[4, 3]] = 1 / (2 * half), -1 / (2 * half)
    p += np.outer(magnification, magnification) / sigmas["magnification"] ** 2
    p += np.outer(roll, roll) / sigmas["roll"] ** 2
    for i in (8, 9):
        p[i, i] += 1 / sigmas["k"] ** 2
    return p


def channel_variance(value: np.ndarray, noise, bits: int) -> np.ndarray:
    """Per-pixel variance (linear light) of a capture of noise ``(a, b)`` (``a * value + b``) written with ``bits``
    per channel after the generator's 1/2.2 curve (quantisation: step^2 / 12, carried to linear light)."""
    a, b = noise
    encoded = np.clip(value, 0, 1) ** (1 / G.GAMMA)
    step = G.GAMMA * np.maximum(encoded, 1e-4) ** (G.GAMMA - 1) / (2 ** bits - 1)
    return a * value + b + step ** 2 / 12


def information(image: np.ndarray, window, lenses, vignetting_centres, variance) -> np.ndarray:
    """Fisher information over the window of ``image`` (linear RGB, noise-free) about (geometry, gains, offsets,
    vignetting): sum over pixels and channels of ``J' J / variance``. ``variance(channel_values)`` gives each pixel's
    noise variance; ``vignetting_centres``: ``(cx, cy, R)`` per frame, LR px."""
    x0, y0, w, h = window
    n_geometry, n_nuisance = 8 + len(lenses), 6 + len(vignetting_centres)
    total = np.zeros((n_geometry + n_nuisance,) * 2)
    for r0 in range(y0, y0 + h, ROWS_PER_CHUNK):
        r1 = min(r0 + ROWS_PER_CHUNK, y0 + h)
        ys, xs = np.mgrid[r0:r1, x0:x0 + w]
        x, y = xs.ravel().astype(float), ys.ravel().astype(float)
        basis = displacement_basis(x, y, window, lenses)
        vig = [((x - cx) ** 2 + (y - cy) ** 2) / radius ** 2 for cx, cy, radius in vignetting_centres]
        # central differences need one row / column either side
        pad0, pad1 = max(r0 - 1, 0), min(r1 + 1, image.shape[0])
        c0, c1 = max(x0 - 1, 0), min(x0 + w + 1, image.shape[1])
        for c in range(3):
            block = image[pad0:pad1, c0:c1, c].astype(np.float64)
            gy, gx = np.gradient(block)
            sl = (slice(r0 - pad0, r0 - pad0 + (r1 - r0)), slice(x0 - c0, x0 - c0 + w))
            value = block[sl].ravel()
            jac = np.zeros((value.size, n_geometry + n_nuisance))
            jac[:, :n_geometry] = gx[sl].ravel()[:, None] * basis[:, 0] + gy[sl].ravel()[:, None] * basis[:, 1]
            jac[:, n_geometry + c] = value  # this channel's gain
            jac[:, n_geometry + 3 + c] = 1.0  # its offset
            for j, rho2 in enumerate(vig):
                jac[:, n_geometry + 6 + j] = value * rho2
            weight = 1.0 / variance(value)
            total += jac.T @ (jac * weight[:, None])
    return total


def window_bound(covariance: np.ndarray, window, lenses, grid: int = 24) -> tuple[float, float]:
    """RMS over the window of the displacement's standard deviation, and its largest value at the four corners."""
    x0, y0, w, h = window
    gy, gx = np.mgrid[y0:y0 + h - 1:grid * 1j, x0:x0 + w - 1:grid * 1j]
    basis = displacement_basis(gx.ravel(), gy.ravel(), window, lenses)
    var = np.einsum("nip,pq,niq->n", basis, covariance, basis)
    corners = np.array([0, grid - 1, grid * (grid - 1), grid * grid - 1])
    return float(np.sqrt(var.mean())), float(np.sqrt(var[corners].max()))


def pair_bound(truth: dict, scene: str, lr_key: str, window, hard: bool, photo_cache: dict) -> dict:
    """The bound of one pair over ``window`` (LR px)."""
    sc = truth["scenes"][scene]
    lr, hr = sc["captures"][lr_key], sc["captures"][sc["hr"]]
    zoom = lr["true_zoom"]
    image = noise_free(truth, scene, lr_key, photo_cache)

    # the HR lens's centre and radius seen in the LR (through the inverse of the true mapping near the window)
    x0, y0, w, h = window
    gy, gx = np.mgrid[y0:y0 + h - 1:12j, x0:x0 + w - 1:12j]
    hx, hy = G.lr_to_hr(sc, lr_key, gx.ravel(), gy.ravel())
    to_lr, _ = cv2.findHomography(np.column_stack([hx, hy]), np.column_stack([gx.ravel(), gy.ravel()]), 0)

    def frame(cap, in_lr: bool):
        centre = cap["distortion"]["centre"] if cap["distortion"] else [(cap["W"] - 1) / 2, (cap["H"] - 1) / 2]
        radius = math.hypot((cap["W"] - 1) / 2, (cap["H"] - 1) / 2)
        if in_lr:
            return (*centre, radius)
        p = to_lr @ np.array([centre[0], centre[1], 1.0])
        return (p[0] / p[2], p[1] / p[2], radius / zoom)
    lenses = [frame(lr, True), frame(hr, False)]
    bits = 16 if hard else 8
    # Vignetting about each frame's centre (generator.render: about the frame centre, not the lens's)
    vignetting = [((lr["W"] - 1) / 2, (lr["H"] - 1) / 2, math.hypot((lr["W"] - 1) / 2, (lr["H"] - 1) / 2))]
    c = to_lr @ np.array([(hr["W"] - 1) / 2, (hr["H"] - 1) / 2, 1.0])
    vignetting.append((c[0] / c[2], c[1] / c[2], math.hypot((hr["W"] - 1) / 2, (hr["H"] - 1) / 2) / zoom))

    def variance(value):
        return (channel_variance(value, lr["noise"], bits)
                + channel_variance(value, hr["noise"], bits) / zoom ** 2)
    fisher = information(image, window, lenses, vignetting, variance)
    n_nuisance = fisher.shape[0] - GEOMETRY
    posterior = fisher + prior_precision(window, prior_sigmas(hard), n_nuisance)
    covariance = np.linalg.inv(posterior)[:GEOMETRY, :GEOMETRY]
    rms, corner = window_bound(covariance, window, lenses)
    return {"bound": rms, "bound_corner": corner}


def evaluate(folder: Path, photo_cache: dict) -> list[dict]:
    """Every pair of one ``bench_generalise.py`` folder: realsr's status and error beside the bound."""
    results = json.loads((folder / "results.json").read_text())
    rows = []
    for condition, run in results.items():
        if not isinstance(run, dict) or "pairs" not in run:
            continue
        truth = json.loads((folder / f"captures_{condition}.truth.json").read_text())
        hard = condition == "hard"
        for p in run["pairs"]:
            window = p.get("window")
            source = "realsr"
            if not window:
                window, source = truth_window(truth, p["scene"], p["lr"]), "truth"
            row = {"set": folder.name, "condition": condition, "scene": p["scene"], "scale": p["scale"],
                   "photo": Path(p["photo"]).name, "status": p["status"], "error": p.get("error_rms"),
                   "window": window, "window_from": source}
            if window[2] < 8 or window[3] < 8:
                row.update(bound=math.inf, bound_corner=math.inf)
            else:
                row.update(pair_bound(truth, p["scene"], p["lr"], window, hard, photo_cache))
            rows.append(row)
            print(f"{folder.name} {p['scene']} x{p['scale']} {p['status']:6s} error {fmt(row['error'])} "
                  f"bound {fmt(row['bound'])} (corner {fmt(row['bound_corner'])})", flush=True)
    return rows


def summary(rows: list[dict]) -> list[list]:
    """Per set: pairs, attainable (bound within the tolerance), realsr's hits, hits among the attainable, misses
    among the attainable (realsr's to win), hits among the unattainable (lucky, or the bound is wrong)."""
    out = []
    for name in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == name]
        tol = TARGET[mine[0]["condition"]]
        hit = [r["status"] == "ok" and r["error"] is not None and r["error"] <= tol for r in mine]
        can = [r["bound"] <= tol for r in mine]
        out.append([name, mine[0]["condition"], len(mine), sum(can), sum(hit),
                    sum(h and c for h, c in zip(hit, can)), sum(c and not h for h, c in zip(hit, can)),
                    sum(h and not c for h, c in zip(hit, can)),
                    fmt(float(np.median([r["bound"] for r in mine])))])
    return out


def validate(seed: int = 0, draws: int = 200) -> dict:
    """Monte Carlo check of :func:`information`: a random texture shifted by a known sub-pixel amount, noise
    added, the shift estimated by Lucas-Kanade against the noise-free template; the estimates' spread must match
    the bound the information gives (translation, gains and offsets estimated; everything else fixed)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    rng = np.random.default_rng(seed)
    size, sigma_noise, shift = 96, 0.02, np.array([0.3, -0.2])
    texture = gaussian_filter(rng.random((size + 16, size + 16, 3)), (2.0, 2.0, 0)) * 2 - 0.5
    texture = np.clip(texture, 0.05, 0.95)
    ys, xs = np.mgrid[0:size + 16, 0:size + 16].astype(float)
    moved = np.stack([map_coordinates(texture[..., c], [ys + shift[1], xs + shift[0]], order=3, mode="nearest")
                      for c in range(3)], -1)
    window = [8, 8, size, size]
    fisher = information(moved, window, [], [], lambda v: np.full(v.shape, sigma_noise ** 2))
    keep = [0, 1, *range(8, 8 + 6)]  # translation, gains, offsets (no lenses: 8 homography terms first)
    bound_xy = np.sqrt(np.diag(np.linalg.inv(fisher[np.ix_(keep, keep)]))[:2])
    sl = (slice(8, 8 + size), slice(8, 8 + size))
    estimates = []
    for _ in range(draws):
        noisy = moved + rng.normal(0, sigma_noise, moved.shape)
        d = np.zeros(2)
        for _ in range(10):  # Gauss-Newton on (shift, gain, offset per channel) against the noise-free template
            warped = np.stack([map_coordinates(texture[..., c], [ys + d[1], xs + d[0]], order=3, mode="nearest")
                               for c in range(3)], -1)
            gy, gx = np.gradient(warped, axis=(0, 1))
            rows_j, rows_r = [], []
            for c in range(3):
                j = np.zeros((size * size, 8))
                j[:, 0], j[:, 1] = gx[sl + (c,)].ravel(), gy[sl + (c,)].ravel()
                j[:, 2 + c], j[:, 5 + c] = warped[sl + (c,)].ravel(), 1.0
                rows_j.append(j)
                rows_r.append((noisy[sl + (c,)] - warped[sl + (c,)]).ravel())
            j, r = np.concatenate(rows_j), np.concatenate(rows_r)
            step = np.linalg.lstsq(j, r, rcond=None)[0]
            d += step[:2]
            if np.abs(step[:2]).max() < 1e-6:
                break
        estimates.append(d)
    estimates = np.array(estimates)
    spread = estimates.std(0)
    return {"shift": shift.tolist(), "mean_estimate": estimates.mean(0).round(4).tolist(),
            "spread_xy": spread.round(5).tolist(), "bound_xy": bound_xy.round(5).tolist(),
            "ratio": (spread / bound_xy).round(3).tolist(), "draws": draws}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", type=Path, help="bench_generalise.py --out folders")
    ap.add_argument("--json", type=Path, help="write every pair's row here")
    ap.add_argument("--validate", action="store_true", help="Monte Carlo check of the information sum")
    a = ap.parse_args(argv)
    if a.validate:
        report = validate()
        print(json.dumps(report, indent=1))
        ok = all(0.8 <= r <= 1.25 for r in report["ratio"])
        print("validation", "passed" if ok else "FAILED: the spread does not match the bound")
        return 0 if ok else 1
    if not a.folders:
        ap.error("give bench_generalise.py --out folders, or --validate")
    rows, cache = [], {}
    for folder in a.folders:
        rows += evaluate(folder, cache)
    print(table(summary(rows), ["set", "condition", "pairs", "attainable", "realsr hits", "hits attainable",
                                "misses attainable", "hits unattainable", "median bound"]))
    if a.json:
        dump(a.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
