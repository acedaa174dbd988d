"""One table, one measure: the accuracy rows of every data set the harness measures, in the same columns.

Columns (LR px; every count of ALL pairs of the set, a refusal a miss):

* truth RMS median / <= 0.1 px / <= 0.25 px / refused / ok > 0.5 px / ok > 1 px / largest ok: the pixel-truth error of
  ``bench_generalise.py`` (RMS over realsr's output window of the residual field between realsr's written HR and the
  HR source warped by the true mapping; a refused pair counts as infinitely wrong in the median). Only where a truth
  exists: realsr's own simulator (``--source realsr-simulate``) and the independent generator.
* visible error median (<= 0.1 / <= 0.25 px): the same residual field weighted by where the content can show it
  (``bench_generalise.visible_error``: its component along the truth image's gradient, weighted by the gradient's
  energy; a refused pair infinite, counts of all pairs). A diagnostic beside the truth RMS, which counts a
  displacement inside a flat patch or along an edge, where no pixel changes, like one across an edge.
* estimator median: the independent estimator's median tile displacement of the written LR/HR pair, median over
  the pairs it finds measurable (n of the pairs written): the one measure available on all three kinds of data.

    python unified.py "realsr simulator=/tmp/ev/sim/results.json" "generator s1=/tmp/ev/g1/results.json" \\
        "published pairs=/tmp/ev/real/results.json"

Several results files joined by commas after one label are pooled into one row per condition (every pair of every
seed under one denominator): ``"generator hard, seeds 99-100=/tmp/h99/results.json,/tmp/h100/results.json"``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt, table  # noqa: E402

HEADER = ["set", "pairs", "truth RMS median", "<= 0.1 px", "<= 0.25 px", "refused", "ok > 0.5 px", "ok > 1 px",
          "largest ok", "visible error median (<= 0.1 / <= 0.25 px)", "estimator median (measurable / written)"]


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.0f} % ({k})" if n else "-"


def _est(values: list[float], written: int) -> str:
    return f"{fmt(float(np.median(values)) if values else None)} ({len(values)} / {written})"


def truth_row(label: str, pairs: list[dict]) -> list:
    """A row of bench_generalise results (either source)."""
    n = len(pairs)
    ok = [r for r in pairs if r["status"] == "ok"]
    err = np.array([r["error_rms"] for r in ok], float)
    allerr = np.concatenate([err, np.full(n - len(ok), np.inf)])
    est = [r["estimator"]["median"] for r in ok if r["estimator"]["verdict"] == "measurable"]
    return [label, n, fmt(float(np.median(allerr))) if n else "-", _pct(int((allerr <= 0.1).sum()), n),
            _pct(int((allerr <= 0.25).sum()), n), n - len(ok), int((err > 0.5).sum()), int((err > 1.0).sum()),
            fmt(float(err.max())) if err.size else "-", _visible(pairs), _est(est, len(ok))]


def _visible(pairs: list[dict]) -> str:
    """Median and counts of the visible error (a refused pair, or one measured before the column existed: a miss)."""
    if not pairs or not any("visible" in r for r in pairs):
        return "-"
    values = np.array([r["visible"]["rms"] if r["status"] == "ok" and r.get("visible", {}).get("rms") is not None
                       else np.inf for r in pairs])
    return f"{fmt(float(np.median(values)))} ({int((values <= 0.1).sum())} / {int((values <= 0.25).sum())})"


def real_rows(label: str, pairs: list[dict]) -> list[list]:
    """Two rows of bench_real_pairs results: the pairs as published, and as realsr re-registered them."""
    n = len(pairs)
    before = [r["before"]["median"] for r in pairs if r["before"]["verdict"] == "measurable"]
    ok = [r for r in pairs if r["status"] == "ok"]
    after = [r["after"]["median"] for r in ok if r.get("after", {}).get("verdict") == "measurable"]
    return [[f"{label}, as published", n, "-", "-", "-", "-", "-", "-", "-", "-", _est(before, n)],
            [f"{label}, re-registered by realsr", n, "-", "-", "-", n - len(ok), "-", "-", "-", "-",
             _est(after, len(ok))]]


def rows_of(label: str, paths: str | Path) -> list[list]:
    """The rows of one results file, or of several (``paths`` joined by commas) pooled: one row per condition."""
    pooled: dict[str, list[dict]] = {}
    real: list[dict] = []
    for path in str(paths).split(","):
        data = json.loads(Path(path).read_text())
        if "pairs" in data and isinstance(data["pairs"], list):  # bench_real_pairs
            real += data["pairs"]
            continue
        for cond, d in data.items():
            if isinstance(d, dict) and "pairs" in d:
                pooled.setdefault(cond, []).extend(d["pairs"])
    if real and pooled:
        raise SystemExit(f"{label}: real pairs and simulated captures cannot share a row")
    if real:
        return real_rows(label, real)
    return [truth_row(f"{label}, {cond}", pairs) for cond, pairs in pooled.items()]


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    rows = []
    for a in args:
        label, _, path = a.partition("=")
        rows += rows_of(label, path)
    print(table(rows, HEADER))
    return 0


if __name__ == "__main__":
    sys.exit(main())
