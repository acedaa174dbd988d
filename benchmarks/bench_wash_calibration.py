"""Wash calibrated on real sub-pixel misalignment: what ``realsr wash --min-psnr 29`` keeps and drops on the 193 real
RealSR/DRealSR x4 pairs, untouched and damaged the way registration errors damage them.

Usage::

    python benchmarks/bench_wash_calibration.py [--work DIR] [--workers 2] [--figure wash_detection.png] [--tune-sigmas]

Sets, built under ``--work`` with ``tests/washdata.py`` (``misalign_hr``, ``build_mixed``), each washed by
:func:`realsr_tools.stages.wash.run_wash` with the CLI's defaults (``--min-psnr 29``, the verifier's calibrated
limit, confidence bound and tile-p95 factor: :mod:`realsr_tools.verification`):

* ``untouched``: the 193 published pairs as they are.
* one set per damage (``shift0.25``, ``shift0.5``, ``shift1``: LR px in a random direction per pair; ``roll0.3``:
  degrees; ``scale0.5%``; rolls and scale errors about the window centre with a random sign): the 193 untouched
  pairs plus a damaged copy of every second one (97 damaged, a third of the set, so the degradation the wash fits
  from the set itself is fitted mostly on good pairs, as on a real dataset).
* ``gross``: the damage the wash was first tested on (``build_mixed``: >= 2 px shifts, 1-2 deg rolls, swapped
  scenes, colour casts), for comparison with the earlier figures.

Printed per set: pairs, kept, dropped by reason, unmeasurable; the untouched keep rate over the *measurable*
untouched pairs (the denominator the target names) and the detection rate over all damaged pairs with their misses.
The figure (PNG): drop rate against the verifier's limit (the verdict is a function of the recorded field and the
limit, so the curve is recomputed from the manifests) and against the shift amount at the default limit.

Held-out calibration (printed last): the limit and the tile-p95 factor are chosen on one half of the pairs and the
figures reported on the other, both ways (tune on RealSR x4, test on DRealSR x4; and the reverse). The choice on a
half: among the limits ``TUNE_LIMITS`` and factors ``TUNE_P95_FACTORS`` that keep >= 95 % of that half's untouched
measurable pairs (PSNR floor included; the worst of the sets they are washed in counts), the one whose weakest
damaged family (``TUNED_ON``) loses fewest pairs, then the most dropped over the three, then the most kept, then the
larger limit. Recomputed from the manifests, so the
confidence bound (``sigmas``) is the one the wash measured with. ``--tune-sigmas`` also chooses it: every pair's
tiles are measured once more (:func:`realsr_tools.verification.measure_tiles`, as wash measures them) and judged at
each ``SIGMAS_GRID`` value (:func:`realsr_tools.verification.summarise`); the same choice runs over (sigmas, limit,
factor) on each half.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from realsr_tools.pipeline.manifest import read_manifest  # noqa: E402
from realsr_tools.stages.wash import run_wash  # noqa: E402
from realsr_tools.verification import DEFAULT_LIMIT, DEFAULT_P95_FACTOR, DEFAULT_SIGMAS, Verification  # noqa: E402
from washdata import build_mixed, misalign_hr  # noqa: E402

PAIRS = ROOT.parent / "shared" / "data" / "pairs"
DAMAGES = {"shift0.25": ("shift", 0.25), "shift0.5": ("shift", 0.5), "shift1": ("shift", 1.0),
           "roll0.3": ("roll", 0.3), "scale0.5%": ("scale", 0.005)}
LIMITS = np.round(np.arange(0.15, 0.801, 0.025), 3)
TUNE_LIMITS = np.round(np.arange(0.20, 0.601, 0.01), 2)
TUNE_P95_FACTORS = (2.0, 2.5, 3.0)
TUNED_ON = ("shift0.5", "roll0.3", "scale0.5%")
HALVES = ("realsr_x4", "drealsr_x4")
SIGMAS_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)


def _names() -> list[tuple[str, str]]:
    return [(dataset, f.name) for dataset in ("realsr_x4", "drealsr_x4")
            for f in sorted((PAIRS / dataset / "HR").iterdir())]


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(source.read_bytes())


def build(folder: Path, damage: str | None) -> Path:
    """``folder/HR`` + ``folder/LR``: the untouched pairs and, with ``damage``, a damaged copy of every second one."""
    for sub in ("HR", "LR"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index, (dataset, name) in enumerate(_names()):
        for sub in ("HR", "LR"):
            if not (folder / sub / name).exists():
                _link(PAIRS / dataset / sub / name, folder / sub / name)
        if damage is None or index % 2:
            continue
        kind, amount = DAMAGES[damage]
        rng = np.random.default_rng(index)
        angle, sign = rng.uniform(0, 2 * np.pi), (1 if rng.random() < 0.5 else -1)
        target = folder / "HR" / f"dmg_{name}"
        if not target.exists():
            hr = cv2.imread(str(PAIRS / dataset / "HR" / name), cv2.IMREAD_COLOR)
            cv2.imwrite(str(target), misalign_hr(hr, kind, amount, angle=angle, sign=sign))
            _link(PAIRS / dataset / "LR" / name, folder / "LR" / f"dmg_{name}")
    return folder


def dropped_at(record: dict, limit: float, p95_factor: float | None = None) -> bool:
    """Whether the pair is dropped with the verifier held to ``limit`` (PSNR floor and other reasons unchanged)."""
    if record["status"] != "ok":
        return True
    other = [r for r in record["reasons"] if not r.startswith("misaligned")]
    verification = Verification.from_dict(record["verification"]).with_limit(limit, p95_factor=p95_factor)
    return bool(other) or verification.verdict == "misaligned"


def report(name: str, records: list[dict], summary) -> dict:
    real = [r for r in records if not r["id"].startswith("dmg_")]
    damaged = [r for r in records if r["id"].startswith("dmg_")]
    measurable = [r for r in real if r["status"] == "ok" and r["verification"]["verdict"] != "unmeasurable"]
    kept = sum(r["kept"] for r in measurable)
    unmeasurable = [r for r in records if r.get("verification") and r["verification"]["verdict"] == "unmeasurable"]
    print(f"\n## {name}: {summary.pairs} pairs, kept {summary.kept}, dropped {summary.dropped}, failed "
          f"{summary.failed}, unmeasurable {summary.unmeasurable} (kept {sum(r['kept'] for r in unmeasurable)}), "
          f"misaligned {summary.misaligned}; by reason {summary.by_reason}")
    print(f"untouched measurable pairs kept: {kept} of {len(measurable)} ({kept / max(len(measurable), 1):.1%}); "
          f"untouched unmeasurable: {len(real) - len(measurable)}")
    for r in measurable:
        if not r["kept"]:
            print(f"    untouched dropped: {r['id']}  psnr {r['psnr']}  {'; '.join(r['reasons'])}")
    out = {"untouched": (kept, len(measurable))}
    if damaged:
        caught = sum(not r["kept"] for r in damaged)
        print(f"damaged pairs dropped: {caught} of {len(damaged)} ({caught / len(damaged):.1%}); of them "
              f"unmeasurable {sum(r in unmeasurable for r in damaged)}")
        for r in damaged:
            if r["kept"]:
                v = r["verification"]
                print(f"    missed: {r['id']}  psnr {r['psnr']}  verdict {v['verdict']}  field {v.get('field')} +- "
                      f"{v.get('field_sigma')}  corner {v['corner']}  p95 beyond noise {v['p95_excess']}  "
                      f"tiles {v['tiles']}")
        out["damaged"] = (caught, len(damaged))
        out["curve"] = [sum(dropped_at(r, limit) for r in damaged) / len(damaged) for limit in LIMITS]
    out["keep_curve"] = [sum(not dropped_at(r, limit) for r in measurable) / max(len(measurable), 1)
                         for limit in LIMITS]
    return out


def _measurable(record: dict) -> bool:
    return record["status"] == "ok" and record["verification"]["verdict"] != "unmeasurable"


def _rates(records: dict[str, list[dict]], half: set[str], limit: float, factor: float) -> dict:
    """Untouched measurable pairs kept and damaged pairs dropped per family, on the pairs of ``half`` (ids).

    The untouched pairs are washed in every set, beside different damaged copies, and the PSNR floor judges them
    against a degradation fitted on the whole set: a pair near the floor passes in one set and not in another. The
    keep count is the worst over the sets (``untouched_set``: which one).
    """
    worst = None
    for name, washed in records.items():
        untouched = [r for r in washed if r["id"] in half and _measurable(r)]
        kept = (sum(not dropped_at(r, limit, factor) for r in untouched), len(untouched))
        if untouched and (worst is None or kept[0] / kept[1] < worst[1][0] / worst[1][1]):
            worst = (name, kept)
    out = {"untouched": worst[1], "untouched_set": worst[0]}
    for name in [*TUNED_ON, "shift1"]:
        damaged = [r for r in records[name] if r["id"].startswith("dmg_") and r["id"][4:] in half]
        out[name] = (sum(dropped_at(r, limit, factor) for r in damaged), len(damaged))
    return out


def tune(records: dict[str, list[dict]], half: set[str], *, with_key: bool = False):
    """The (limit, tile-p95 factor) chosen on ``half`` (module docstring); with ``with_key`` also its ranking key."""
    best = None
    for factor in TUNE_P95_FACTORS:
        for limit in TUNE_LIMITS:
            rates = _rates(records, half, float(limit), factor)
            kept, total = rates["untouched"]
            if kept < 0.95 * total:
                continue
            drops = [rates[name][0] / rates[name][1] for name in TUNED_ON]
            key = (min(drops), sum(drops), kept / total, float(limit))
            if best is None or key > best[0]:
                best = (key, (float(limit), factor))
    if best is None:
        return (None, None) if with_key else None
    return (best[1], best[0]) if with_key else best[1]


def _measure(job: tuple[str, Path, Path]):
    import cv2

    from realsr_tools.imaging import read_image
    from realsr_tools.verification import measure_tiles

    key, lr_path, hr_path = job
    lr, hr = read_image(lr_path), read_image(hr_path)
    on_lr = cv2.resize(hr, lr.shape[1::-1], interpolation=cv2.INTER_AREA)  # as wash measures
    measures, tile, blur = measure_tiles(lr, on_lr)
    return key, measures, tile, lr.shape[:2], blur


def tune_sigmas(records: dict[str, list[dict]], work: Path, workers: int) -> None:
    """Choose the confidence bound too (module docstring): re-measure every pair once, judge at each k."""
    from concurrent.futures import ProcessPoolExecutor

    from realsr_tools.verification import summarise

    names = ["untouched", *TUNED_ON, "shift1"]
    jobs = {}
    for name in names:
        for r in records[name]:
            if r.get("verification") and (name == "untouched" or r["id"].startswith("dmg_")):
                jobs[(name if r["id"].startswith("dmg_") else "untouched", r["id"])] = (
                    work / name / r["lr"], work / name / r["hr"])
    with ProcessPoolExecutor(workers) as pool:
        measured = {key: rest for key, *rest in pool.map(_measure, [(k, *v) for k, v in jobs.items()], chunksize=4)}
    halves = {dataset: set() for dataset in HALVES}
    for dataset, name in _names():
        halves[dataset].add(Path(name).stem)
    print("\n## held-out calibration of the confidence bound too: (sigmas, limit, tile-p95 factor) chosen on one half")
    for tuned, held in (HALVES, HALVES[::-1]):
        best = None
        for k in SIGMAS_GRID:
            judged = {}
            for name in records:  # every set: the untouched keep is the worst over them
                judged[name] = []
                for r in records[name]:
                    key = (name if r["id"].startswith("dmg_") else "untouched", r["id"])
                    if key in measured:
                        measures, tile, shape, blur = measured[key]
                        r = r | {"verification": summarise(measures, tile, shape, sigmas=k, blur=blur).to_dict()}
                    judged[name].append(r)
            (limit, factor), rank = tune(judged, halves[tuned], with_key=True)
            if limit is None:
                print(f"  sigmas {k:g}: no setting keeps 95 % on {tuned}")
                continue
            on_tuned = _rates(judged, halves[tuned], limit, factor)
            on_held = _rates(judged, halves[held], limit, factor)
            print(f"  tuned on {tuned}, sigmas {k:g}: limit {limit:g}, p95 factor {factor:g}")
            print(f"      on {tuned}: {_fmt(on_tuned)}")
            print(f"      on {held} (held out): {_fmt(on_held)}")
            if best is None or rank > best[0]:
                best = (rank, k, limit, factor)
        print(f"  chosen on {tuned}: sigmas {best[1]:g}, limit {best[2]:g}, p95 factor {best[3]:g}")


def _fmt(rates: dict) -> str:
    return ", ".join(f"{name} {a}/{b} ({a / max(b, 1):.1%})" + (f" [worst in set {rates['untouched_set']}]"
                                                                 if name == "untouched" else "")
                     for name, (a, b) in ((k, v) for k, v in rates.items() if k != "untouched_set"))


def split_report(records: dict[str, list[dict]]) -> list[dict]:
    """Tune on one half, report on the other, both ways (module docstring); printed and returned."""
    halves = {dataset: set() for dataset in HALVES}
    for dataset, name in _names():
        halves[dataset].add(Path(name).stem)
    rows = []
    print("\n## held-out calibration: limit and tile-p95 factor chosen on one half, figures on the other")
    for tuned, held in (HALVES, HALVES[::-1]):
        limit, factor = tune(records, halves[tuned])
        on_tuned, on_held = _rates(records, halves[tuned], limit, factor), _rates(records, halves[held], limit, factor)
        print(f"tuned on {tuned}: limit {limit:g} LR px, tile p95 factor {factor:g} (sigmas "
              f"{records['untouched'][0]['verification'].get('sigmas', 0):g} as measured)")
        print(f"    on {tuned} (tuning half): {_fmt(on_tuned)}")
        print(f"    on {held} (held out):    {_fmt(on_held)}")
        for name in ["untouched", *TUNED_ON, "shift1"]:
            for r in records[on_held["untouched_set"] if name == "untouched" else name]:
                damaged = r["id"].startswith("dmg_")
                if (r["id"][4:] if damaged else r["id"]) not in halves[held] or damaged == (name == "untouched"):
                    continue
                v = r["verification"] or {}
                if name == "untouched" and _measurable(r) and dropped_at(r, limit, factor):
                    print(f"      held-out untouched dropped: {r['id']}  psnr {r['psnr']}  field {v.get('field')} "
                          f"+- {v.get('field_sigma')}  p95 beyond noise {v.get('p95_excess')}")
                elif name != "untouched" and not dropped_at(r, limit, factor):
                    verdict = Verification.from_dict(v).with_limit(limit, p95_factor=factor).verdict if v else None
                    print(f"      held-out {name} missed: {r['id']}  verdict {verdict}  field "
                          f"{v.get('field')} +- {v.get('field_sigma')}  corner {v.get('corner')}  "
                          f"tiles {v.get('tiles')}")
        rows.append({"tuned": tuned, "held": held, "limit": limit, "p95_factor": factor, "on_tuned": on_tuned,
                     "on_held": on_held})
    return rows


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    keep, total = results["untouched"]["untouched"]
    left.plot(LIMITS, results["untouched"]["keep_curve"], "k--", lw=2,
              label=f"untouched measurable pairs KEPT (n={total})")
    for name in DAMAGES:
        caught, n = results[name]["damaged"]
        left.plot(LIMITS, results[name]["curve"], marker=".", label=f"{name} dropped (n={n})")
    left.axvline(DEFAULT_LIMIT, color="grey", lw=1)
    left.axhline(0.95, color="grey", lw=0.5, ls=":")
    left.axhline(0.90, color="grey", lw=0.5, ls=":")
    left.set_xlabel(f"verifier limit (LR px; field bound at {DEFAULT_SIGMAS:g} sigma, tile p95 at "
                    f"{DEFAULT_P95_FACTOR:g} x); PSNR floor fixed at 29 dB")
    left.set_ylabel("share of pairs")
    left.set_ylim(0, 1.02)
    left.set_title("realsr wash, 193 real x4 pairs + damaged copies:\n"
                   "share dropped (damaged) / kept (untouched) vs limit", fontsize=10)
    left.legend(fontsize=8, loc="center right")
    amounts = [0.0, 0.25, 0.5, 1.0]
    rates = [1 - keep / total] + [results[f"shift{a:g}"]["damaged"][0] / results[f"shift{a:g}"]["damaged"][1]
                                  for a in amounts[1:]]
    right.plot(amounts, rates, "o-", label="shift in a random direction")
    for name, marker in (("roll0.3", "s"), ("scale0.5%", "^")):
        caught, n = results[name]["damaged"]
        right.plot([0.47 if name == "roll0.3" else 0.45], [caught / n], marker, ms=9,
                   label=f"{name} (corner displacement of a 128-px window)")
    right.axhline(0.90, color="grey", lw=0.5, ls=":")
    right.axhline(0.99, color="grey", lw=0.5, ls=":")
    right.set_xlabel("misalignment (LR px)")
    right.set_ylabel("share dropped")
    right.set_ylim(0, 1.02)
    right.set_title(f"share dropped at the default limit {DEFAULT_LIMIT} LR px, --min-psnr 29\n(denominator: all "
                    "damaged pairs, unmeasurable ones included)", fontsize=10)
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"\nfigure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--figure", type=Path, default=Path("wash_detection.png"))
    parser.add_argument("--sets", default="untouched," + ",".join(DAMAGES) + ",gross")
    parser.add_argument("--tune-sigmas", action="store_true",
                        help="also choose the confidence bound on each half (measures every pair once more)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        results, all_records = {}, {}
        for name in args.sets.split(","):
            start = time.perf_counter()
            if name == "gross":
                source = build_mixed(PAIRS, work / "gross")
            else:
                source = build(work / name, None if name == "untouched" else name)
            summary = run_wash(source, work / f"{name}_out", min_psnr=29.0, workers=args.workers,
                               show_progress=False)
            records = read_manifest(work / f"{name}_out", stage="wash").records
            all_records[name] = records
            results[name] = report(name, records, summary)
            if name == "gross":
                for kind in ("shift", "rotate", "swap", "cast"):
                    group = [r for r in records if r["id"].startswith(f"dmg_{kind}_")]
                    print(f"    gross {kind}: dropped {sum(not r['kept'] for r in group)} of {len(group)}")
            print(f"({time.perf_counter() - start:.0f} s)")
        if all(name in results for name in ["untouched", *DAMAGES]):
            figure(results, args.figure)
        if all(name in all_records for name in ["untouched", *TUNED_ON, "shift1"]):
            split_report(all_records)
            if args.tune_sigmas:
                tune_sigmas(all_records, work, args.workers)


if __name__ == "__main__":
    main()
