"""Calibrate ``realsr wash`` on real misalignment of known size.

From the 193 published x4 pairs, damaged copies are made by resampling the HR (cubic spline, exact positions) so
that the pair is misaligned by a known extra field relative to the published pair: a shift of 0.25 / 0.5 / 1 LR px in
a random direction, a roll of 0.15 / 0.3 / 0.6 deg, or a scale change of 0.25 / 0.5 / 1 % (both about the frame
centre). One run of ``realsr wash SRC --out DIR --min-psnr 29`` per damage family (shift, roll, scale): SRC is a
BasicSR folder (HR/, LR/, same names) holding all untouched pairs plus damaged copies of every second pair
(magnitudes in turn), so a third of each run is damaged - like the project's own wash test - and the dataset-fitted
degradation model stays dominated by good pairs.

The estimator's verdict on the untouched pair decides measurable / unmeasurable; unmeasurable pairs (and their
damaged copies) are reported separately. The misalignment magnitude of a damaged copy is the RMS over the LR frame of
the added displacement field (a 0.3 deg roll is 0.27 LR px RMS on a 128 px frame).

    python bench_wash.py --out /tmp/indep_wash [--limit N] [--every 2] [-j 2]
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimator as E  # noqa: E402
from bench_real_pairs import list_pairs  # noqa: E402
from common import dump, fmt, read_manifest, run_realsr, table  # noqa: E402

FAMILIES = {
    "shift": [("shift 0.25 px", dict(shift=0.25)), ("shift 0.5 px", dict(shift=0.5)), ("shift 1 px", dict(shift=1.0))],
    "roll": [("roll 0.15 deg", dict(roll=0.15)), ("roll 0.3 deg", dict(roll=0.3)), ("roll 0.6 deg", dict(roll=0.6))],
    "scale": [("scale 0.25 %", dict(scale=0.0025)), ("scale 0.5 %", dict(scale=0.005)), ("scale 1 %", dict(scale=0.01))],
}


def write_png(path: Path, img: np.ndarray):
    cv2.imwrite(str(path), np.round(np.clip(img, 0, 1)[..., ::-1] * 255).astype(np.uint8),
                [cv2.IMWRITE_PNG_COMPRESSION, 1])


def damage(hr, spec, rng):
    s = 4
    sh, roll, sc = (0.0, 0.0), 0.0, 1.0
    if "shift" in spec:
        ang = rng.uniform(0, 2 * math.pi)
        sh = (spec["shift"] * math.cos(ang), spec["shift"] * math.sin(ang))
    if "roll" in spec:
        roll = spec["roll"] * rng.choice([-1, 1])
    if "scale" in spec:
        sc = 1 + spec["scale"] * rng.choice([-1, 1])
    hr2, g = E.warp_hr_known(hr, s, sh, roll, sc)
    h, w = hr.shape[0] // s, hr.shape[1] // s
    gy, gx = np.mgrid[0:h, 0:w].astype(float)
    d = g(np.stack([gx.ravel(), gy.ravel()], 1))
    mag = np.hypot(d[:, 0], d[:, 1])
    return hr2, dict(shift=list(sh), roll_deg=roll, scale=sc, rms=float(np.sqrt((mag ** 2).mean())),
                     max=float(mag.max()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--limit", type=int, help="evenly spaced subset of the 193 pairs")
    ap.add_argument("--every", type=int, default=2, help="damage every N-th pair per family")
    ap.add_argument("--families", default="shift,roll,scale")
    ap.add_argument("--min-psnr", type=float, default=29)
    ap.add_argument("-j", "--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    pairs = list_pairs(a.limit)
    rng = np.random.default_rng(a.seed)
    # estimator verdict on every untouched pair
    verdict, est_before = {}, {}
    for ds, name, lr, hr in pairs:
        key = f"{ds}__{name}"
        r = E.estimate_files(lr, hr, 4)
        verdict[key] = r["verdict"]
        est_before[key] = r.get("median")
    print(f"estimator: {sum(v == 'measurable' for v in verdict.values())} of {len(pairs)} untouched pairs measurable",
          flush=True)
    items = []  # one per (run, pair in source)
    for fam in a.families.split(","):
        src = a.out / f"src_{fam}"
        dst = a.out / f"washed_{fam}"
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(dst, ignore_errors=True)
        (src / "HR").mkdir(parents=True)
        (src / "LR").mkdir(parents=True)
        meta = {}
        k = 0
        for i, (ds, name, lr, hr) in enumerate(pairs):
            key = f"{ds}__{name}"
            fname = f"{ds}__{Path(name).stem}.png"
            (src / "HR" / fname).symlink_to(hr)
            (src / "LR" / fname).symlink_to(lr)
            meta[fname] = dict(source=key, kind="untouched", rms=0.0, max=0.0)
            if i % a.every == 0:
                label, spec = FAMILIES[fam][k % len(FAMILIES[fam])]
                k += 1
                hr2, info = damage(E.load_rgb(hr), spec, rng)
                dname = f"dmg_{fam}_{ds}__{Path(name).stem}.png"
                write_png(src / "HR" / dname, hr2)
                (src / "LR" / dname).symlink_to(lr)
                lrimg = E.load_rgb(lr)
                er = E.estimate_pair(lrimg, hr2, 4)
                meta[dname] = dict(source=key, kind=label, **info, estimator_after=er.get("median"),
                                   estimator_after_verdict=er["verdict"])
        rc, dt, text = run_realsr("wash", src, "--out", dst, "--min-psnr", a.min_psnr, "--scale", 4,
                                  "--workers", a.workers, log=a.out / "realsr.log")
        print(f"[{fam}] realsr wash rc {rc} in {dt:.1f} s: {text.strip().splitlines()[-1] if text.strip() else ''}",
              flush=True)
        _, recs = read_manifest(dst / "manifest.jsonl")
        seen = set()
        for r in recs:
            fname = Path(r.get("lr") or r.get("hr") or "").name
            m = meta.get(fname)
            if m is None:
                continue
            seen.add(fname)
            items.append(dict(run=fam, file=fname, **m, verdict=verdict[m["source"]],
                              estimator_before=est_before[m["source"]], kept=bool(r.get("kept")),
                              reasons=r.get("reasons") or [], psnr=r.get("psnr"), wash_shift=r.get("shift"),
                              flat=r.get("flat"), status=r.get("status")))
        for fname, m in meta.items():
            if fname not in seen:
                items.append(dict(run=fam, file=fname, **m, verdict=verdict[m["source"]], kept=None,
                                  reasons=["no manifest record"]))
        dump(a.out / "results.json", items)
    # ---- report
    rows = []
    unt = [x for x in items if x["kind"] == "untouched"]
    for fam in a.families.split(","):
        U = [x for x in unt if x["run"] == fam]
        Um = [x for x in U if x["verdict"] == "measurable"]
        Uu = [x for x in U if x["verdict"] != "measurable"]
        rows.append([f"untouched (run {fam})", len(Um), f"{100 * np.mean([x['kept'] for x in Um]):.1f} % kept",
                     len(Uu), f"{sum(bool(x['kept']) for x in Uu)} kept / {sum(not x['kept'] for x in Uu)} dropped",
                     "-", "-"])
    curve = {}
    for fam in a.families.split(","):
        for label, _ in FAMILIES[fam]:
            D = [x for x in items if x["kind"] == label]
            Dm = [x for x in D if x["verdict"] == "measurable"]
            Du = [x for x in D if x["verdict"] != "measurable"]
            rms = float(np.median([x["rms"] for x in D])) if D else float("nan")
            fr = float(np.mean([not x["kept"] for x in Dm])) if Dm else float("nan")
            curve.setdefault(fam, []).append((rms, fr, len(Dm)))
            est = [x["estimator_after"] for x in Dm if x.get("estimator_after") is not None]
            rows.append([label, len(Dm), f"{100 * fr:.1f} % dropped", len(Du),
                         f"{sum(bool(x['kept']) for x in Du)} kept / {sum(not x['kept'] for x in Du)} dropped",
                         fmt(rms), fmt(float(np.median(est)) if est else None)])
    header = ["pairs", "measurable", "wash result (measurable)", "unmeasurable", "wash result (unmeasurable)",
              "added misalignment RMS (LR px)", "estimator median after damage"]
    print()
    print(table(rows, header))
    reasons = {}
    for x in items:
        for r in x["reasons"]:
            key = (x["kind"] == "untouched" and "untouched: " or "damaged: ") + r.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    for k_, v in sorted(reasons.items()):
        print(f"  {k_}: {v}")
    # ---- detection curve
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=120)
    Um = [x for x in unt if x["verdict"] == "measurable"]
    base = float(np.mean([not x["kept"] for x in Um])) if Um else 0.0
    for fam, pts in curve.items():
        xs = [0.0] + [p[0] for p in pts]
        ys = [base] + [p[1] for p in pts]
        ax.plot(xs, ys, "o-", lw=2, ms=7, label=f"{fam} ({', '.join(l for l, _ in FAMILIES[fam])})")
        for (x_, y_, n_) in pts:
            ax.annotate(f"n={n_}", (x_, y_), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.axhline(base, color="grey", ls=":", lw=1)
    ax.set_xlabel("added misalignment: RMS over the LR frame of the known displacement field (LR px)", fontsize=11)
    ax.set_ylabel(f"fraction dropped by realsr wash --min-psnr {a.min_psnr:g}", fontsize=11)
    ax.set_title(f"realsr wash detection on real RealSR/DRealSR x4 pairs (measurable pairs only; x = 0: untouched, "
                 f"{100 * base:.1f} % dropped)", fontsize=10)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=-0.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.out / "detection_curve.png")
    dump(a.out / "results.json", dict(items=items, table=dict(header=header, rows=rows), curve=curve,
                                      reasons=reasons))
    print(f"curve: {a.out / 'detection_curve.png'}; per-pair JSON: {a.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
