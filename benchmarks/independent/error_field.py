"""Where each written pair's error lies: a shift, a magnification, a roll, or something no affine map holds.

For every `ok` pair of an align manifest over the independent generator's captures, the recorded LR -> HR mapping
(docs/align.md conventions, ``bench_generalise.recorded_map``) is compared with the generator's true one on a grid
over the pair's written window, and the error field (truth minus record, LR px) is fitted by least squares with an
affine field in the window's coordinates normalised by its half width. Printed per set and model: the isotropic
part (the magnification error, in LR px at the window's half width; positive: the recorded magnification is too
small), how many pairs have it positive, and the RMS left beyond the affine field. A bias that keeps one sign over
hundreds of pairs is systematic, not noise: session 28 found realsr writing its lens terms in other frames than it
fitted them in this way (docs/align.md, "The written lens terms"). Reads only the truth JSON and the manifests.

    python error_field.py OUT[:MANIFEST] [...]   # OUT: a bench_generalise.py --out folder; MANIFEST: another align
                                                 # run of its captures to judge instead of OUT's own
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
from common import read_manifest  # noqa: E402

GRID = 8  # LR px between the window's sample points


def rms(field: np.ndarray) -> float:
    """RMS length of an ``N x 2`` displacement field."""
    return float(np.sqrt(np.mean(np.sum(field ** 2, axis=1))))


def decompose(error: np.ndarray, x: np.ndarray, y: np.ndarray, window) -> dict:
    """Affine fit of an error field (``N x 2`` at points ``x, y``) in the window's normalised coordinates."""
    x0, y0, w, h = window
    half = w / 2
    u, v = (x - (x0 + half)) / half, (y - (y0 + h / 2)) / half
    design = np.column_stack([np.ones_like(u), u, v])
    coef, *_ = np.linalg.lstsq(design, error, rcond=None)  # rows: shift, d/du, d/dv; columns: x, y
    rest = error - design @ coef
    return {"rms": rms(error), "shift": float(np.hypot(*coef[0])),
            "magnification": float((coef[1, 0] + coef[2, 1]) / 2), "roll": float((coef[1, 1] - coef[2, 0]) / 2),
            "beyond_affine": rms(rest)}


def written_errors(out: Path, manifest: Path | None = None, grid: int = GRID):
    """Each `ok` pair of a ``bench_generalise.py --out`` folder (or of another align run of its captures,
    ``manifest``, which judges one condition): ``(condition, record, error, gx, gy)``, the error field (truth minus
    record, LR px, ``N x 2``) at the points ``gx, gy`` every ``grid`` LR px over the written window."""
    for condition in ("normal", "hard"):
        truth_path = out / f"captures_{condition}.truth.json"
        manifest_path = manifest or out / f"aligned_{condition}" / "manifest.jsonl"
        if not truth_path.exists() or not manifest_path.exists():
            continue
        truth = json.loads(truth_path.read_text())
        for record in read_manifest(manifest_path)[1]:
            if record.get("status") != "ok" or not record.get("lr_source"):
                continue
            key = record["lr_source"]
            scene = G.scene_truth(truth, key.split("/")[0])
            x0, y0, w, h = record["lr_window"]
            gy, gx = np.mgrid[y0:y0 + h:grid, x0:x0 + w:grid].astype(np.float64)
            yield condition, record, B.recorded_error(record, scene, key, scene["captures"][key], gx, gy), gx, gy
        if manifest:
            break  # one manifest judges one condition


def pairs(spec: str) -> list[dict]:
    """Every `ok` pair's decomposition for ``OUT[:MANIFEST]``."""
    out, _, other = spec.partition(":")
    return [{"set": spec, "condition": condition, "id": record["id"],
             "model": record["registration"]["model"]["name"],
             **decompose(error, gx.ravel(), gy.ravel(), record["lr_window"])}
            for condition, record, error, gx, gy in written_errors(Path(out), Path(other) if other else None)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="+", help="OUT or OUT:MANIFEST")
    parser.add_argument("--json", type=Path, help="write every pair's row here")
    args = parser.parse_args(argv)
    rows = [row for spec in args.sets for row in pairs(spec)]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if not rows:
        sys.exit("error_field: no written pair found (give bench_generalise.py --out folders)")
    groups = {"all": rows}
    for model in sorted({r["model"] for r in rows}):
        groups[model] = [r for r in rows if r["model"] == model]
    print("| pairs | n | error RMS median | magnification error median (LR px at half width) | positive | "
          "shift median | beyond affine median |")
    print("|---|---|---|---|---|---|---|")
    for name, chosen in groups.items():
        magnification = np.array([r["magnification"] for r in chosen])
        print(f"| {name} | {len(chosen)} | {np.median([r['rms'] for r in chosen]):.4f} | "
              f"{np.median(magnification):+.4f} | {np.mean(magnification > 0):.0%} | "
              f"{np.median([r['shift'] for r in chosen]):.4f} | "
              f"{np.median([r['beyond_affine'] for r in chosen]):.4f} |")


if __name__ == "__main__":
    main()
