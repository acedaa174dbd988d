"""realsr align on captures from the independent generator, measured from pixels against the generator's truth.

For every pair realsr writes, the HR *source* capture is warped with the TRUE mapping onto realsr's output window
(own code: scipy cubic-spline sampling, exact positions), following realsr's documented output convention
(output HR pixel (u, v) of scale s <- HR source point lr_to_hr(x0 + (u + 0.5)/s - 0.5, y0 + (v + 0.5)/s - 0.5)).
The residual displacement between that truth image and realsr's written HR (same modality: both are warps of the
same noisy HR capture) is measured with the independent estimator's tile phase correlation, a polynomial field
(order 3 when >= 30 measurable tiles, 2 when >= 12, else affine) is fitted to it, and its RMS and max over the whole
output window are the pair's error, in LR px. The window origin is checked from pixels too (realsr's written LR must
be the LR source crop at lr_window; located by template matching).

Secondary, per pair: the estimator's LR-vs-HR residual of realsr's written pair (the measure usable on real data),
and the error of realsr's *recorded* mapping against the truth (manifest lr_to_hr + distortion terms, as a
cross-check only; used as the error only where the pixel measure is impossible - flagged ``measured_by: record``).

One denominator: every pair generated. A refusal (status failed, or no record) is a miss.

``--source realsr-simulate`` measures captures of realsr's OWN simulator instead (``realsr_sim.py``: the folders
``bench_align.py --seed N`` aligns, 12 photographs from ``photos/`` x 3 scales, 640 x 480, the same seed for normal
and hard), with the same code, so both sources and the real pairs (``bench_real_pairs.py``) share one table
(``unified.py``: the columns printed here).

    python bench_generalise.py --out /tmp/indep_gen [--scenes 12] [--seed 1] [--conditions normal,hard] [-j 2]
    python bench_generalise.py --out /tmp/indep_sim --source realsr-simulate [--seed 1]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimator as E  # noqa: E402
import generator as G  # noqa: E402
import realsr_sim  # noqa: E402
import unified  # noqa: E402
from common import TARGET, dump, fmt, read_manifest, run_realsr, table  # noqa: E402


def locate_window(lr_out, lr_src, rec_window):
    """Integer (x0, y0) where realsr's written LR sits in the LR source, from pixels (photometric-invariant)."""
    a = E.luma(lr_out)
    b = E.luma(lr_src)
    h, w = a.shape
    ph, pw = min(h, 96), min(w, 96)
    py, px = (h - ph) // 2, (w - pw) // 2
    tpl = a[py:py + ph, px:px + pw]
    x0, y0 = rec_window[0], rec_window[1]
    m = 12
    ys, xs = max(y0 + py - m, 0), max(x0 + px - m, 0)
    reg = b[ys:y0 + py + ph + m, xs:x0 + px + pw + m]
    r = cv2.matchTemplate(reg, tpl, cv2.TM_CCOEFF_NORMED)
    _, mx, _, loc = cv2.minMaxLoc(r)
    return (xs + loc[0] - px, ys + loc[1] - py), float(mx)


def truth_hr(hr_src, scene, lr_key, x0, y0, w, h, s):
    u = np.arange(w * s, dtype=np.float64)
    v = np.arange(h * s, dtype=np.float64)
    X, Y = np.meshgrid(x0 + (u + 0.5) / s - 0.5, y0 + (v + 0.5) / s - 0.5)
    mx, my = G.lr_to_hr(scene, lr_key, X, Y)
    return E.remap_exact(hr_src, mx, my)


def recorded_map(rec, x, y):
    """realsr's recorded LR->HR mapping (docs/align.md conventions: each term's ``power``, 1 where not stated), for
    the cross-check and for pairs whose written window cannot be located."""
    x = np.asarray(x, float); y = np.asarray(y, float)
    d = rec.get("distortion")
    if d and d.get("terms"):
        yx, yy = x.copy(), y.copy()
        for t in d["terms"]:
            cx, cy = t["centre"]
            dx, dy = x - cx, y - cy
            r2 = ((dx * dx + dy * dy) / t["radius"] ** 2) ** t.get("power", 1)
            yx += t["k"] * dx * r2
            yy += t["k"] * dy * r2
        x, y = yx, yy
    return G.apply_h(np.array(rec["lr_to_hr"], float), x, y)


def recorded_error(rec, scene, key, cap, x, y):
    """The recorded mapping's error at LR source points (x, y): ``N x 2``, LR px (the true magnification)."""
    tx, ty = G.lr_to_hr(scene, key, np.ravel(x), np.ravel(y))
    rx, ry = recorded_map(rec, np.ravel(x), np.ravel(y))
    return np.column_stack([tx - rx, ty - ry]) / cap["true_zoom"]


def field_error(hr_out, hr_truth, s):
    """Residual displacement (LR px) between realsr's HR and the truth-warped HR, over the output window."""
    a, b = E.luma(hr_out), E.luma(hr_truth)
    H, W = a.shape
    q = 1
    if H * W > 3_000_000:
        q = 2 if s % 2 == 0 else 3
        a, b = E.area_down(a, q), E.area_down(b, q)
    # initial field: tile phase correlation on the LR grid (cheap), rescaled to the measurement grid
    r = s // q
    al, bl = (E.area_down(a, r), E.area_down(b, r)) if r > 1 else (a, b)
    f = E.displacement_field(al, bl, use_flow=False)
    m = f["measurable"]
    n = int(m.sum())
    out = dict(tiles=int(len(m)), measurable_tiles=n, grid_px_per_lr_px=s / q)
    init = None
    if n >= 4:
        d = f["d"][m]
        fl = E.fit_poly(f["centres"][m], d, al.shape, order=2 if n >= 12 else 1)
        init = lambda x, y: fl((np.asarray(x) + 0.5) / r - 0.5, (np.asarray(y) + 0.5) / r - 0.5) * r  # noqa: E731
        tmag = np.hypot(d[:, 0], d[:, 1]) * q * r / s
        out.update(tile_median=float(np.median(tmag)), tile_max=float(tmag.max()))
    # dense parametric (cubic polynomial) field over every pixel, seeded by the tile field
    C, fn, info = E.parametric_field(a, b, order=3, init=init, max_px=250_000, iters=20)
    gy, gx = np.mgrid[0:a.shape[0]:4, 0:a.shape[1]:4]
    dd = fn(gx.ravel(), gy.ravel()) * q / s
    mag = np.hypot(dd[:, 0], dd[:, 1])
    out.update(verdict="measurable" if info["converged"] and info["param_sd"] < 0.02 else "unmeasurable",
               rms=float(np.sqrt((mag ** 2).mean())), max=float(mag.max()), dense=info)
    out["visible"] = visible_error(b, r, lambda x, y: fn(x, y) * q / s)
    return out


def visible_error(truth_grey, r, field):
    """The error the content shows: the field's component along the truth image's gradient, weighted by the
    gradient's energy, on the LR grid (LR px).

    ``truth_grey``: the truth-warped HR (grey) on a grid of ``r`` px per LR px; ``field(x, y)``: the residual field
    in LR px at points of that grid. ``rms`` is ``sqrt(sum (d . g)^2 / sum |g|^2)`` over the window: the first-order
    grey-level error the misregistration causes, divided by the RMS gradient; a displacement in a flat area or
    along an edge counts nothing (it changes no pixel), the same displacement across edges counts in full. ``p95``:
    the 95th percentile of ``|d . g| / |g|`` weighted by ``|g|^2``. A diagnostic beside the truth RMS (which counts
    every pixel alike), not a replacement: it says whether an error sits where the images can show it.
    """
    lr = E.area_down(truth_grey, r) if r > 1 else truth_grey.astype(np.float32)
    gy, gx = np.gradient(cv2.GaussianBlur(lr, (0, 0), 1.0).astype(np.float64))
    h, w = lr.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    d = field(((xx + 0.5) * r - 0.5).ravel(), ((yy + 0.5) * r - 0.5).ravel())
    gx, gy = gx.ravel(), gy.ravel()
    energy = gx * gx + gy * gy
    if energy.sum() <= 0:
        return dict(rms=None, p95=None)
    along = np.abs(d[:, 0] * gx + d[:, 1] * gy) / np.sqrt(np.maximum(energy, 1e-30))
    order = np.argsort(along)
    cumulative = np.cumsum(energy[order]) / energy.sum()
    return dict(rms=float(np.sqrt((along ** 2 * energy).sum() / energy.sum())),
                p95=float(along[order][np.searchsorted(cumulative, 0.95)]))


def measure_condition(cond_dir: Path, truth: dict, align_dir: Path, verbose=True):
    header, recs = read_manifest(align_dir / "manifest.jsonl")
    by_lr = {r["lr_source"]: r for r in recs}
    results = []
    for sname, scene in truth["scenes"].items():
        hr_key = scene["hr"]
        hr_src = None
        for key, cap in scene["captures"].items():
            if key == hr_key:
                continue
            s = cap["scale"]
            row = dict(scene=sname, photo=scene["photo"], held_out=scene["held_out"], lr=key, scale=s,
                       true_zoom=cap["true_zoom"], lr_distortion=(cap["distortion"] or {}).get("k", 0.0),
                       hr_distortion=(scene["captures"][hr_key]["distortion"] or {}).get("k", 0.0))
            rec = by_lr.get(key)
            if rec is None:
                row.update(status="missing", reason="no manifest record")
                results.append(row)
                continue
            row.update(status=rec["status"], reason=rec.get("error"))
            if rec["status"] != "ok":
                results.append(row)
                if verbose:
                    print(f"{key:24s} REFUSED: {rec.get('error')}", flush=True)
                continue
            t0 = time.time()
            lr_out = E.load_rgb(align_dir / rec["lr"])
            hr_out = E.load_rgb(align_dir / rec["hr"])
            lr_src = E.load_rgb(cond_dir / key)
            if hr_src is None:
                hr_src = E.load_rgb(cond_dir / hr_key)
            h, w = lr_out.shape[:2]
            assert hr_out.shape[0] == h * s and hr_out.shape[1] == w * s, "HR not exactly s x LR"
            (x0, y0), ncc = locate_window(lr_out, lr_src, rec["lr_window"])
            row.update(window=[x0, y0, w, h], window_matches_record=[x0, y0] == rec["lr_window"][:2],
                       window_ncc=ncc)
            ht = truth_hr(hr_src, scene, key, x0, y0, w, h, s)
            fe = field_error(hr_out, ht, s)
            row["pixel"] = fe
            # recorded-mapping cross-check
            gy, gx = np.mgrid[y0:y0 + h:4, x0:x0 + w:4].astype(float)
            e = np.hypot(*recorded_error(rec, scene, key, cap, gx, gy).T)
            row["recorded"] = dict(rms=float(np.sqrt((e ** 2).mean())), max=float(e.max()))
            if fe["verdict"] == "measurable":
                row.update(error_rms=fe["rms"], error_max=fe["max"], measured_by="pixels", visible=fe["visible"])
            else:
                row.update(error_rms=row["recorded"]["rms"], error_max=row["recorded"]["max"], measured_by="record")
                row["visible"] = visible_error(E.luma(ht), s, lambda u, v: recorded_error(
                    rec, scene, key, cap, x0 + (u + 0.5) / s - 0.5, y0 + (v + 0.5) / s - 0.5))
            est = E.estimate_pair(lr_out, hr_out, s)
            row["estimator"] = {k: est.get(k) for k in ("verdict", "median", "p95", "max", "affine_corner_max",
                                                        "measurable_fraction", "unmeasurable_reason")}
            row["seconds"] = time.time() - t0
            results.append(row)
            if verbose:
                print(f"{key:24s} x{s} err rms {row['error_rms']:.4f} max {row['error_max']:.4f} "
                      f"({row['measured_by']}; record rms {row['recorded']['rms']:.4f}) "
                      f"est LR-HR median {fmt(est.get('median'))} [{est['verdict']}] win_ok={row['window_matches_record']}",
                      flush=True)
    return results


def summary_rows(results, label):
    """The unified row (see unified.py) and the refusal reasons."""
    reasons = {}
    for r in results:
        if r["status"] != "ok":
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return unified.truth_row(label, results), reasons


HEADER = unified.HEADER


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--scenes", type=int, default=12, help="scenes per condition (3 pairs each)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--conditions", default="normal,hard")
    ap.add_argument("--source", choices=("generator", "realsr-simulate"), default="generator",
                    help="captures from the independent generator, or from realsr's own simulator (bench_align's "
                         "folders; --scenes = photographs, the same --seed for normal and hard)")
    ap.add_argument("--width", type=int, nargs=2, default=(500, 1400))
    ap.add_argument("-j", "--workers", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="reuse generated captures and align output in --out")
    ap.add_argument("--neutral-photometry", action="store_true",
                    help="diagnosis: same draws, no exposure / white-balance / vignetting differences")
    ap.add_argument("--raster-curve", default=None,
                    help="realsr align --raster-curve (the generator's files state no curve; what its user would "
                         "state is the --encoding)")
    ap.add_argument("--encoding", choices=sorted(G.ENCODINGS), default="power:2.2",
                    help="the generator's file curve (a pure 1/2.2 power in every set before session 42)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    log = a.out / "realsr.log"
    allres = {}
    for cond in a.conditions.split(","):
        hard = cond == "hard"
        cdir = a.out / f"captures_{cond}"
        adir = a.out / f"aligned_{cond}"
        tpath = a.out / f"captures_{cond}.truth.json"
        t0 = time.time()
        if not (a.reuse and tpath.exists()):
            shutil.rmtree(cdir, ignore_errors=True)
            if a.source == "realsr-simulate":
                realsr_sim.generate(cdir, a.seed, hard, a.scenes)
            else:
                G.generate(cdir, a.scenes, a.seed + (1000 if hard else 0), hard, tuple(a.width),
                           neutral_photometry=a.neutral_photometry, encoding=a.encoding)
        tgen = time.time() - t0
        if not (a.reuse and (adir / "manifest.jsonl").exists()):
            shutil.rmtree(adir, ignore_errors=True)
            curve = ("--raster-curve", a.raster_curve) if a.raster_curve else ()
            rc, dt, text = run_realsr("align", cdir, "--out", adir, "--scales", "2,3,4", "-j", a.workers, *curve,
                                      log=log)
            print(f"[{cond}] realsr align rc {rc} in {dt:.1f} s: {text.strip().splitlines()[-1] if text.strip() else ''}",
                  flush=True)
        truth = __import__("json").loads(tpath.read_text())
        res = measure_condition(cdir, truth, adir)
        allres[cond] = dict(source=a.source, seed=truth["seed"], encoding=truth.get("encoding", "power:2.2"),
                            generate_s=tgen, pairs=res)
        dump(a.out / "results.json", allres)
    rows, reasons_all = [], {}
    for cond, d in allres.items():
        row, reasons = summary_rows(d["pairs"], cond)
        rows.append(row)
        reasons_all[cond] = reasons
        ho = [r for r in d["pairs"] if r["held_out"]]
        if 0 < len(ho) < len(d["pairs"]):
            rows.append(summary_rows(ho, cond + " (held-out photos only)")[0])
        for s in sorted({r["scale"] for r in d["pairs"]}):
            rows.append(summary_rows([r for r in d["pairs"] if r["scale"] == s], f"{cond} x{s}")[0])
    print()
    print(table(rows, HEADER))
    for cond, reasons in reasons_all.items():
        for k, v in reasons.items():
            print(f"  {cond}: refused {v} x: {k}")
    for cond, d in allres.items():
        limit = TARGET[cond]
        bad = [r for r in d["pairs"] if r["status"] == "ok" and r["error_rms"] > limit]
        print(f"  {cond}: ok pairs above {limit} px: {len(bad)}; measured by record (pixel measure unmeasurable): "
              f"{sum(1 for r in d['pairs'] if r.get('measured_by') == 'record')}")
        for r in d["pairs"]:
            if r["status"] != "ok":
                print(f"  {cond}: {r['lr']} ({r['photo']}) x{r['scale']} REFUSED: {r['reason']}")
        for r in sorted(bad, key=lambda r: -r["error_rms"]):
            print(f"  {cond}: {r['lr']} ({r['photo']}) x{r['scale']} error rms {r['error_rms']:.3f} "
                  f"max {r['error_max']:.3f} ({r['measured_by']}); visible rms {fmt(r['visible']['rms'])} "
                  f"p95 {fmt(r['visible']['p95'])}; estimator {r['estimator']['verdict']} "
                  f"{fmt(r['estimator'].get('median'))}")
        est = [r for r in d["pairs"] if r["status"] == "ok"]
        em = [r["estimator"]["median"] for r in est if r["estimator"]["verdict"] == "measurable"]
        cross = [abs(r["pixel"]["rms"] - r["recorded"]["rms"]) for r in est if r["pixel"]["verdict"] == "measurable"]
        print(f"  {cond}: estimator LR-vs-HR on realsr's output: measurable {len(em)} of {len(est)}, "
              f"median of medians {fmt(float(np.median(em)) if em else None)} LR px; "
              f"|pixel - record| RMS error: median {fmt(float(np.median(cross)) if cross else None, 4)}, "
              f"max {fmt(float(np.max(cross)) if cross else None, 4)}")
    dump(a.out / "results.json", dict(allres, table=dict(header=HEADER, rows=rows), refusals=reasons_all))
    print(f"\nper-pair JSON: {a.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
