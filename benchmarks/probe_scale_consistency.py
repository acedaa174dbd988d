"""Probe: would agreement between the captures of one scene catch the registrations the texture gate cannot?

Every LR capture of a scene is registered to the same HR. For two of them written `ok` (a narrower LR ``a``, a wider
LR ``b``), register ``b`` to ``a`` directly (both are whole frames of the scene, with far more structure than the HR
field shows) and compare, over ``b``'s output window, where ``b``'s own mapping puts each pixel in the HR with where
the chain ``b -> a -> HR`` puts it. A pair matched to the wrong patch of a chart, or with a magnification its flat
window cannot pin, disagrees with its scene's other captures by whole pixels. Radial distortion terms are ignored
(homographies only), which leaves a few tenths of a pixel of disagreement on lenses that have them.

Reads an output folder of ``benchmarks/independent/bench_generalise.py`` (captures, truth, realsr's manifest and the
harness's per-pair results) and prints, per pair of captures, the disagreement's median and maximum (LR px of ``b``)
beside each capture's truth error. A probe for a check realsr does not have yet (2026-12-02, session 11), not a
benchmark of realsr.

    python benchmarks/probe_scale_consistency.py OUT [--conditions hard,normal]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
from pathlib import Path

import numpy as np

from realsr_tools import geometry
from realsr_tools.imaging import read_pixels
from realsr_tools.registration import register_captures


def disagreement(a_to_hr, b_to_hr, b_to_a, window, zoom_b) -> np.ndarray:
    """``|a_to_hr(b_to_a(p)) - b_to_hr(p)|`` over a 4-px grid of ``window`` (x, y, w, h in ``b``), in LR px of ``b``."""
    x0, y0, w, h = window
    gy, gx = np.mgrid[y0:y0 + h:4, x0:x0 + w:4].astype(np.float64)
    points = np.column_stack([gx.ravel(), gy.ravel()])
    chained = geometry.apply_homography(np.asarray(a_to_hr), geometry.apply_homography(np.asarray(b_to_a), points))
    direct = geometry.apply_homography(np.asarray(b_to_hr), points)
    return np.hypot(*(chained - direct).T) / zoom_b


def probe(out: Path, condition: str) -> None:
    captures = out / f"captures_{condition}"
    truth = json.loads((out / f"captures_{condition}.truth.json").read_text())
    with open(captures / "captures.csv", newline="") as stream:
        focal = {row["path"]: float(row["focal_mm"]) for row in csv.DictReader(stream)}
    records = {}
    with open(out / f"aligned_{condition}" / "manifest.jsonl") as stream:
        for line in stream:
            record = json.loads(line)
            if record.get("lr_source"):
                records[record["lr_source"]] = record
    errors = {row["lr"]: row.get("error_rms") for row in
              json.loads((out / "results.json").read_text())[condition]["pairs"]}
    for name, scene in truth["scenes"].items():
        written = [key for key in scene["captures"]
                   if key != scene["hr"] and records.get(key, {}).get("status") == "ok"]
        for a, b in itertools.combinations(sorted(written, key=lambda key: -focal[key]), 2):
            wide, narrow = read_pixels(captures / b), read_pixels(captures / a)
            try:
                b_to_a, _ = register_captures(wide, narrow, ratio=focal[a] / focal[b])
            except Exception as exc:  # a probe: report and go on
                print(f"{condition} {name} {a} {b}: direct registration failed: {exc}")
                continue
            d = disagreement(records[a]["lr_to_hr"], records[b]["lr_to_hr"], b_to_a.lr_to_hr,
                             records[b]["lr_window"], records[b]["registration"]["zoom"])
            print(f"{condition} {name} {Path(a).name:10s} {Path(b).name:10s} disagreement median {np.median(d):7.3f} "
                  f"max {d.max():7.3f} LR px (direct corner uncertainty {b_to_a.uncertainty:.3f}); truth "
                  f"{errors.get(a, float('nan')):.3f} / {errors.get(b, float('nan')):.3f}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="a bench_generalise.py --out folder")
    parser.add_argument("--conditions", default="normal,hard")
    args = parser.parse_args(argv)
    for condition in args.conditions.split(","):
        if (args.out / f"aligned_{condition}").exists():
            probe(args.out, condition)


if __name__ == "__main__":
    main()
