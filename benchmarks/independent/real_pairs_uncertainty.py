"""Is realsr's stated uncertainty honest on real pairs? Its correction of each published pair against the estimator's.

Reads a ``bench_real_pairs.py --out`` folder (its ``captures/`` and realsr's ``aligned/manifest.jsonl``). A published
pair is a scene whose true mapping is unknown but whose published alignment is close (median residual 0.04 LR px), so
realsr's *correction* of it - its mapping at the window centre minus the published identity ``s x + (s - 1) / 2`` -
should equal the published pair's residual displacement on the same window, which the independent estimator reads
(median tile vector; the estimator's own error on known shifts of real pairs is 0.005-0.05 px, README.md). Their
difference is realsr's error plus the estimator's plus whatever a global model cannot express of the real field.

Against ``registration.uncertainty`` (realsr's 1-sigma corner figure, LR px): for a calibrated, isotropic 2-D error
of RMS radius sigma, |error| exceeds sigma with probability exp(-1) = 0.37 and 2 sigma with exp(-4) = 0.018, and the
median of |error| / sigma is sqrt(ln 2) = 0.83. The corner figure is at least the centre's, so a calibrated figure
reads at or under these.

    python real_pairs_uncertainty.py /tmp/indep_real [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimator as E  # noqa: E402
import generator as G  # noqa: E402
from common import read_manifest  # noqa: E402


def correction_at_centre(record: dict) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """realsr's move of the HR sample at the window centre away from the published identity, LR px."""
    s = record["scale"]
    x0, y0, w, h = record["lr_window"]
    cx, cy = x0 + (w - 1) / 2, y0 + (h - 1) / 2
    mapped = np.array(G.apply_h(np.asarray(record["lr_to_hr"], float), cx, cy))
    identity = np.array([s * cx + (s - 1) / 2, s * cy + (s - 1) / 2])
    return (mapped - identity) / s, (x0, y0, w, h)


def measure(run: Path) -> list[dict]:
    _, records = read_manifest(run / "aligned" / "manifest.jsonl")
    rows = []
    for record in records:
        if record.get("status") != "ok" or record.get("distortion"):
            continue  # a radial mapping's centre is not one shift of the whole window
        correction, (x0, y0, w, h) = correction_at_centre(record)
        s = record["scale"]
        lr = E.load_rgb(run / "captures" / record["lr_source"])[y0:y0 + h, x0:x0 + w]
        hr = E.load_rgb(run / "captures" / record["hr_source"])[s * y0:s * (y0 + h), s * x0:s * (x0 + w)]
        report = E.estimate_pair(lr, hr, s)
        if report["verdict"] != "measurable":
            continue
        residual = np.asarray(report["mean_vector"])
        rows.append(dict(id=record["id"], model=record["registration"]["model"]["name"],
                         uncertainty=float(record["registration"]["uncertainty"]),
                         correction=correction.tolist(), published_residual=residual.tolist(),
                         difference=float(np.hypot(*(residual - correction)))))
    return rows


def summary(rows: list[dict]) -> list[str]:
    lines = ["| pairs | model | median uncertainty | median difference | median ratio (calibrated: <= 0.83) "
             "| beyond 1 sigma (<= 37 %) | beyond 2 sigma (<= 1.8 %) |", "|---|---|---|---|---|---|---|"]
    models = sorted({r["model"] for r in rows})
    for name in models if len(models) == 1 else ["all", *models]:
        chosen = [r for r in rows if name == "all" or r["model"] == name]
        if not chosen:
            continue
        u = np.array([r["uncertainty"] for r in chosen])
        d = np.array([r["difference"] for r in chosen])
        z = d / u
        lines.append(f"| {len(chosen)} | {name} | {np.median(u):.3f} | {np.median(d):.3f} | {np.median(z):.2f} | "
                     f"{np.mean(z > 1):.0%} | {np.mean(z > 2):.0%} |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a bench_real_pairs.py --out folder")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = measure(args.run)
    print("\n".join(summary(rows)))
    worst = sorted(rows, key=lambda r: -r["difference"] / r["uncertainty"])[:5]
    print("largest |difference| / uncertainty: " + ", ".join(
        f"{r['id']} {r['difference']:.3f} / {r['uncertainty']:.3f}" for r in worst))
    print(f"(expected for a calibrated 2-D error: median ratio {math.sqrt(math.log(2)):.2f}, "
          f"beyond 1 sigma {math.exp(-1):.0%}, beyond 2 sigma {math.exp(-4):.1%})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
