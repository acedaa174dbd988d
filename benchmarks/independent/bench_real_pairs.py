"""realsr align on the 193 published RealSR / DRealSR x4 pairs, judged by the independent estimator.

Each published pair becomes a two-capture scene in a temporary capture root (symlinks; HR at 100 mm, LR at 25 mm via
``captures.csv``), ``realsr align --scales 4`` registers them, and the estimator measures the LR-vs-HR residual
displacement of the published pair (*before*) and of realsr's written pair (*after*). Nothing is known about the
true geometry here; the estimator's measurable verdict decides which pairs count.

    python bench_real_pairs.py --out /tmp/indep_real [--limit N] [-j 2]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimator as E  # noqa: E402
import unified  # noqa: E402
from common import DATA, dump, fmt, read_manifest, run_realsr, table  # noqa: E402

PAIRS = DATA / "pairs"
SETS = ("realsr_x4", "drealsr_x4")


def list_pairs(limit=None, data=PAIRS, sets=SETS):
    out = []
    for ds in sets:
        for p in sorted((data / ds / "HR").iterdir()):
            lr = data / ds / "LR" / p.name
            if lr.exists():
                out.append((ds, p.name, lr, p))
    if limit:
        idx = np.linspace(0, len(out) - 1, limit).round().astype(int)
        out = [out[i] for i in sorted(set(idx))]
    return out


def build_root(root: Path, pairs):
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rows = []
    for ds, name, lr, hr in pairs:
        scene = f"{ds}__{Path(name).stem}"
        (root / scene).mkdir()
        ext = hr.suffix
        (root / scene / f"hr{ext}").symlink_to(hr)
        (root / scene / f"lr{lr.suffix}").symlink_to(lr)
        rows.append((f"{scene}/hr{ext}", 100, "published"))
        rows.append((f"{scene}/lr{lr.suffix}", 25, "published"))
    with open(root / "captures.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "focal_mm", "camera"])
        w.writerows(rows)


def srgb_decode(image: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 inverse transfer curve (encoded [0, 1] -> linear light), written here, not taken from realsr."""
    return np.where(image <= 0.04045, image / 12.92, ((image + 0.055) / 1.055) ** 2.4).astype(np.float32)


KEYS = ("verdict", "median", "p95", "max", "affine_corner_max", "measurable_fraction", "unmeasurable_reason",
        "measurable_tiles", "tiles")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--limit", type=int, help="evenly spaced subset of the 193 pairs")
    ap.add_argument("-j", "--workers", type=int, default=2)
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--linear", action="store_true",
                    help="decode both images of every pair to linear light (sRGB inverse curve) before measuring")
    ap.add_argument("--data", type=Path, default=PAIRS,
                    help="folder of x4 pair sets, each with HR/ and LR/ (default: the published pairs)")
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated set folders under --data")
    a = ap.parse_args(argv)
    sets = tuple(a.sets.split(","))
    load = (lambda path: srgb_decode(E.load_rgb(path))) if a.linear else E.load_rgb
    a.out.mkdir(parents=True, exist_ok=True)
    pairs = list_pairs(a.limit, a.data, sets)
    root, adir = a.out / "captures", a.out / "aligned"
    if not (a.reuse and (adir / "manifest.jsonl").exists()):
        build_root(root, pairs)
        shutil.rmtree(adir, ignore_errors=True)
        rc, dt, text = run_realsr("align", root, "--out", adir, "--scales", "4", "-j", a.workers,
                                  log=a.out / "realsr.log")
        print(f"realsr align rc {rc} in {dt:.1f} s: {text.strip().splitlines()[-1] if text.strip() else ''}", flush=True)
    _, recs = read_manifest(adir / "manifest.jsonl")
    by_scene = {r["scene"]: r for r in recs}
    results = []
    t0 = time.time()
    for ds, name, lr, hr in pairs:
        scene = f"{ds}__{Path(name).stem}"
        row = dict(set=ds, name=name, scene=scene)
        lp, hp = load(lr), load(hr)
        b = E.estimate_pair(lp, hp, 4)
        row["before"] = {k: b.get(k) for k in KEYS}
        rec = None
        for r in recs:
            if r["scene"].endswith(scene) or r["scene"] == scene:
                rec = r
                break
        rec = by_scene.get(scene, rec)
        if rec is None:
            row.update(status="missing", reason="no manifest record")
        else:
            row.update(status=rec["status"], reason=rec.get("error"))
            if rec["status"] == "ok":
                lo, ho = load(adir / rec["lr"]), load(adir / rec["hr"])
                af = E.estimate_pair(lo, ho, 4)
                row["after"] = {k: af.get(k) for k in KEYS}
                row["window"] = rec.get("lr_window")
                # the published pair cropped to realsr's window: separates "less area" from "worse alignment"
                x0, y0, w, h = rec["lr_window"]
                bw = E.estimate_pair(lp[y0:y0 + h, x0:x0 + w], hp[4 * y0:4 * (y0 + h), 4 * x0:4 * (x0 + w)], 4)
                row["before_window"] = {k: bw.get(k) for k in KEYS}
                q = rec.get("quality") or {}
                row["realsr_quality"] = {k: q.get(k) for k in ("psnr", "shift_median", "shift_worst")}
        results.append(row)
        bm = row["before"].get("median")
        am = row.get("after", {}).get("median")
        print(f"{scene:40s} before {fmt(bm)} [{row['before']['verdict'][:4]}] after {fmt(am)} "
              f"[{row.get('after', {}).get('verdict', '-')[:4]}] {row['status']} {row['reason'] or ''}", flush=True)
    dump(a.out / "results.json", results)
    meas = [r for r in results if r["before"]["verdict"] == "measurable"]
    both = [r for r in meas if r.get("after", {}).get("verdict") == "measurable"]
    refused = [r for r in results if r["status"] != "ok"]
    reasons = {}
    for r in refused:
        key = (r["reason"] or "").split(":")[0][:90]
        reasons[key] = reasons.get(key, 0) + 1
    rows = []
    for label, sel in (("all", None), *[(ds, ds) for ds in sets]):
        R = [r for r in results if sel is None or r["set"] == sel]
        M = [r for r in R if r["before"]["verdict"] == "measurable"]
        Bo = [r for r in M if r.get("after", {}).get("verdict") == "measurable"]
        b_ = np.array([r["before"]["median"] for r in Bo]) if Bo else np.array([np.nan])
        a_ = np.array([r["after"]["median"] for r in Bo]) if Bo else np.array([np.nan])
        Bw = [r for r in Bo if r.get("before_window", {}).get("verdict") == "measurable"]
        bw_ = np.array([r["before_window"]["median"] for r in Bw]) if Bw else np.array([np.nan])
        aw_ = np.array([r["after"]["median"] for r in Bw]) if Bw else np.array([np.nan])
        rows.append([label, len(R), len(M), len(Bo), fmt(float(np.median(b_))), fmt(float(np.median(a_))),
                     int((a_ - b_ > 0.05).sum()), int((a_ - b_ < -0.05).sum()),
                     f"{fmt(float(np.median(bw_)))} / {fmt(float(np.median(aw_)))} (n={len(Bw)})",
                     f"{int((aw_ - bw_ > 0.05).sum())} / {int((aw_ - bw_ < -0.05).sum())}",
                     sum(1 for r in R if r["status"] != "ok"),
                     f"{100 * sum(1 for r in M if r['status'] == 'ok') / max(len(M), 1):.0f} %"])
    header = ["set", "pairs", "measurable before", "measurable before & after", "median before", "median after",
              "worse > 0.05 px", "better > 0.05 px", "same window: median before / after",
              "same window: worse / better > 0.05", "refused", "ok of measurable"]
    print()
    print(table(rows, header))
    for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  refused {v} x: {k}")
    print(f"  p95 before/after (median over pairs): {fmt(float(np.median([r['before']['p95'] for r in both])) if both else None)}"
          f" / {fmt(float(np.median([r['after']['p95'] for r in both])) if both else None)}; "
          f"estimator time {time.time() - t0:.0f} s")
    urows = [row for label, sel in (("all", None), *[(ds, ds) for ds in sets])
             for row in unified.real_rows(label, [r for r in results if sel is None or r["set"] == sel])]
    print("\nthe unified columns (unified.py; no truth here, so only the estimator column and refusals):")
    print(table(urows, unified.HEADER))
    dump(a.out / "results.json", dict(pairs=results, table=dict(header=header, rows=rows), refusals=reasons,
                                      unified=dict(header=unified.HEADER, rows=urows)))
    print(f"per-pair JSON: {a.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
