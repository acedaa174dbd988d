"""Would the verifier's measured field, added to what align wrote, bring a pair nearer the truth? (Diagnosis.)

On the published pairs the tail that realsr makes worse is read in the same direction by realsr's own verifier and by
the independent estimator (session 19: 12 of 14 tail pairs), both tile measures. That invites steering the
registration by the verifier. This asks the generator's truth first: for every `ok` pair of ``bench_generalise.py``
runs, the record's error field (truth minus record over the written window, LR px; ``bench_generalise
.recorded_error``) is compared with the same field after the verifier's translation ``b``, or its whole affine
field, is taken off, with either sign (the verifier's convention is not assumed). Printed: how many pairs move by
more than 0.01 px either way, and the pairs within 0.1 px before and after. Reads only the truth JSON and the
manifests.

With ``--real RUN`` (a ``bench_real_pairs.py --out`` folder) the same translation is taken off realsr's written
published pairs instead (the written HR resampled by the estimator's ``warp_hr_known``), and the independent
estimator counts the pairs worse / better than published by more than 0.05 px, as ``bench_real_pairs.py`` does.

    python diag_verifier_correction.py OUT [OUT ...]   # OUT: bench_generalise.py --out folders
    python diag_verifier_correction.py --real RUN
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimator as E  # noqa: E402
from common import read_manifest, table  # noqa: E402
from error_field import rms, written_errors  # noqa: E402

GRID = 4  # LR px between the window's sample points
MOVED = 0.01  # LR px: a change smaller than this counts as none


def corrections(out: Path) -> list[dict]:
    """Each `ok` pair's truth error as written and with the verifier's field taken off (both signs)."""
    rows = []
    for condition, record, error, gx, gy in written_errors(out, grid=GRID):
        affine = (record.get("verification") or {}).get("affine")
        if not affine:
            continue
        x0, y0, w, h = record["lr_window"]
        a11, a12, b1, a21, a22, b2 = affine
        u, v = gx.ravel() - (x0 + (w - 1) / 2), gy.ravel() - (y0 + (h - 1) / 2)
        field = np.column_stack([a11 * u + a12 * v + b1, a21 * u + a22 * v + b2])
        row = {"id": f"{out.name}/{condition}/{record['id']}", "as written": rms(error)}
        for sign, name in ((1, "+"), (-1, "-")):
            row[f"translation {name}"] = rms(error - sign * np.array([b1, b2]))
            row[f"affine {name}"] = rms(error - sign * field)
        rows.append(row)
    return rows


def real_pairs(run: Path) -> str:
    """The published pairs as realsr wrote them, and with the verifier's translation taken off, by the estimator."""
    results = json.loads((run / "results.json").read_text())["pairs"]
    published = {f"{r['set']}__{Path(r['name']).stem}": r for r in results}
    deltas = {"as written": [], "translation +": [], "translation -": []}
    for record in read_manifest(run / "aligned" / "manifest.jsonl")[1]:
        row = published.get(record.get("scene"))
        affine = (record.get("verification") or {}).get("affine")
        if (record.get("status") != "ok" or row is None or not affine or row["before"]["verdict"] != "measurable"
                or row.get("after", {}).get("verdict") != "measurable"):
            continue
        lr, hr = E.load_rgb(run / "aligned" / record["lr"]), E.load_rgb(run / "aligned" / record["hr"])
        readings = {"as written": row["after"]["median"]}
        for sign, name in ((1, "+"), (-1, "-")):
            # record + sign * b samples the HR at x + sign * b: the written HR's content moves by -sign * b
            moved, _ = E.warp_hr_known(hr, record["scale"], (-sign * affine[2], -sign * affine[5]))
            report = E.estimate_pair(lr, moved, record["scale"])
            readings[f"translation {name}"] = report.get("median") if report["verdict"] == "measurable" else None
        if all(v is not None for v in readings.values()):
            for name, value in readings.items():
                deltas[name].append(value - row["before"]["median"])
    lines = [[name, len(d), int((np.array(d) > 0.05).sum()), int((np.array(d) < -0.05).sum()),
              f"{np.median(d):+.4f}"] for name, d in deltas.items()]
    return table(lines, ["realsr's pair", "measurable before & after", "worse than published > 0.05 px",
                         "better > 0.05 px", "median change"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outs", nargs="*", type=Path)
    parser.add_argument("--real", type=Path, help="a bench_real_pairs.py --out folder")
    args = parser.parse_args(argv)
    if args.real:
        print(real_pairs(args.real))
        return 0
    rows = [row for out in args.outs for row in corrections(out)]
    if not rows:
        sys.exit("diag_verifier_correction: no `ok` pair with a verifier field "
                 "(give bench_generalise.py --out folders, or --real)")
    before = np.array([r["as written"] for r in rows])
    lines = [["as written", len(rows), "-", "-", int((before <= 0.1).sum()), f"{np.median(before):.4f}"]]
    for name in ("translation +", "translation -", "affine +", "affine -"):
        after = np.array([r[name] for r in rows])
        lines.append([f"verifier's {name}", len(rows), int((after < before - MOVED).sum()),
                      int((after > before + MOVED).sum()), int((after <= 0.1).sum()), f"{np.median(after):.4f}"])
    print(table(lines, ["mapping", "pairs", f"better > {MOVED} px", f"worse > {MOVED} px", "within 0.1 px",
                        "median error"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
