"""Probe: would a scene's better-pinned capture register its siblings better than their own windows do?

For every written pair of a `bench_generalise.py` output folder (captures + realsr's align manifest), its own
mapping and the *chain* through each sibling of its scene (the sibling's written mapping composed with the two LR
captures registered to each other as whole frames, as align's scene check registers them) are measured against the
generator's truth over the pair's window (RMS, LR px). Nothing is written; realsr is not changed.

A rule is applied and counted (fixed before any held-out set was probed, 2026-12-03 session 20): a pair takes the
chain through a sibling when the sibling is written, `consistent`, above no gate (not provisional), has the smaller
focal ratio (its window holds the HR field in more LR px), agrees with the pair in the scene check (the comparison
is not a contradiction), and the sibling's corner uncertainty carried to the pair's LR px
(``sigma_j * zoom_j / zoom_i``) is at most half the pair's own. Of several, the smallest carried uncertainty.
The same rule is also shown for pairs the scene check refused as inconsistent (what a transfer would write there).
realsr builds a stricter rule since session 21 (docs/align.md, "The scene check", step 5: only the scene's narrowest
capture is a source); this probe keeps the session-20 rule it was run with, so its recorded figures stay reproducible.

    python benchmarks/independent/probe_scene_transfer.py DIR [DIR ...] [--json OUT]

DIR: a `bench_generalise.py --out` folder (``captures_<c>``, ``captures_<c>.truth.json``, ``aligned_<c>``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generator as G  # noqa: E402
from common import TARGET  # noqa: E402

from realsr_tools.geometry import RadialDistortion, local_jacobian, map_lr_to_hr  # noqa: E402
from realsr_tools.imaging import read_pixels  # noqa: E402
from realsr_tools.registration import register_captures  # noqa: E402
from realsr_tools.registration.consistency import chain_hypothesis, compare, comparison_plan  # noqa: E402
from realsr_tools.registration.estimate import HYPOTHESIS_ALONE  # noqa: E402

MARGIN = 0.5  # the carried uncertainty must be at most this share of the pair's own


def mapping(record):
    return lambda p: map_lr_to_hr(np.asarray(record["lr_to_hr"]), RadialDistortion.from_dict(record["distortion"]), p)


def inverse(direct, points):
    """Wide-capture points that the direct registration maps to ``points`` of the narrow capture (Newton steps on
    the homography's Jacobian; the radial terms are small)."""
    h = direct.lr_to_hr
    q = np.c_[points, np.ones(len(points))] @ np.linalg.inv(h).T
    q = q[:, :2] / q[:, 2:]
    for _ in range(30):
        q = q - (direct.map(q) - points) @ np.linalg.inv(local_jacobian(h, tuple(q.mean(0)))).T
    return q


def direct_registration(pixels, wide, narrow):
    """The scene check's direct registration of two written pairs' LR captures and its comparison."""
    b, a = wide, narrow
    ratio = b["focal_ratio"] / a["focal_ratio"]
    chain = chain_hypothesis(b["lr_to_hr"], a["lr_to_hr"])
    for alone in (True, False):
        direct, _ = register_captures(pixels[b["id"]], pixels[a["id"]], ratio=ratio, hypothesis=chain,
                                      hypothesis_alone_if_found=alone)
        comparison = compare(mapping(b), mapping(a), direct.map, b["lr_window"], b["registration"]["zoom"],
                             wide=0, narrow=1, start=direct.coarse)
        if comparison.agrees() or direct.coarse != HYPOTHESIS_ALONE:
            return direct, comparison
    return direct, comparison


def probe(folder: Path) -> list[dict]:
    condition = "hard" if (folder / "captures_hard").exists() else "normal"
    truth = json.loads((folder / f"captures_{condition}.truth.json").read_text())
    root = folder / f"captures_{condition}"
    records = [json.loads(line) for line in open(folder / f"aligned_{condition}" / "manifest.jsonl")]
    records = [r for r in records if "id" in r and r.get("lr_window")]
    scenes: dict[str, list[dict]] = {}
    for record in records:
        scenes.setdefault(record["scene"], []).append(record)
    rows = []
    for name, members in scenes.items():
        scene = truth["scenes"][name]
        judged = [r for r in members if r["status"] == "ok" or (r.get("consistency") or {}).get("verdict") ==
                  "inconsistent"]
        for r in members:
            if r not in judged:
                rows.append({"set": folder.name, "condition": condition, "id": r["id"], "status": "refused",
                             "own": None, "chosen": None})
        if not judged:
            continue
        pixels = {r["id"]: read_pixels(root / r["lr_source"]) for r in judged}
        directs = {}
        for wide, narrow in comparison_plan([r["focal_ratio"] for r in judged]):
            try:
                directs[(wide, narrow)] = direct_registration(pixels, judged[wide], judged[narrow])
            except Exception as exc:  # a failed direct registration gives no chain
                print(f"  {judged[wide]['id']} -> {judged[narrow]['id']}: direct registration failed ({exc})")
        for i, r in enumerate(judged):
            key = r["lr_source"]
            x0, y0, w, h = r["lr_window"]
            xs, ys = np.meshgrid(np.linspace(x0, x0 + w - 1, 15), np.linspace(y0, y0 + h - 1, 15))
            points = np.stack([xs.ravel(), ys.ravel()], 1)
            tx, ty = G.lr_to_hr(scene, key, points[:, 0], points[:, 1])
            exact = np.stack([tx, ty], 1)
            zoom = scene["captures"][key]["true_zoom"]

            def error(mapped):
                return float(np.sqrt(np.mean(np.sum(((mapped - exact) / zoom) ** 2, axis=1))))

            own_sigma = r["registration"]["uncertainty"]
            row = {"set": folder.name, "condition": condition, "id": r["id"], "scale": r["scale"],
                   "status": "ok" if r["status"] == "ok" else "inconsistent", "own": error(mapping(r)(points)),
                   "own_sigma": own_sigma, "chains": [], "chosen": None}
            for (wide, narrow), (direct, comparison) in directs.items():
                if i not in (wide, narrow):
                    continue
                j = narrow if wide == i else wide
                s = judged[j]
                if s["status"] != "ok":
                    continue
                on_sibling = direct.map(points) if wide == i else inverse(direct, points)
                carried = s["registration"]["uncertainty"] * s["registration"]["zoom"] / r["registration"]["zoom"]
                chain = {"through": s["id"], "error": error(mapping(s)(on_sibling)), "sigma": carried,
                         "agrees": bool(comparison.agrees()), "median": comparison.median}
                row["chains"].append(chain)
                eligible = ((s.get("consistency") or {}).get("verdict") == "consistent"
                            and not s["registration"].get("needs_confirmation")
                            and s["focal_ratio"] < r["focal_ratio"]
                            and (chain["agrees"] or row["status"] == "inconsistent")
                            and carried <= MARGIN * own_sigma)
                if eligible and (row["chosen"] is None or carried < row["chosen"]["sigma"]):
                    row["chosen"] = chain
            rows.append(row)
            chains = " ".join(f"{c['through'].split('__')[1]}:{c['error']:.3f}(s{c['sigma']:.2f}"
                              f"{'' if c['agrees'] else ' disagrees'})" for c in row["chains"])
            taken = f" -> {row['chosen']['error']:.3f}" if row["chosen"] else ""
            print(f"{folder.name} {r['id']:18s} {row['status']:12s} own {row['own']:.3f} (s{own_sigma:.2f}){taken} | "
                  f"{chains}", flush=True)
    return rows


def summarise(rows: list[dict]) -> None:
    sets = sorted({r["set"] for r in rows})
    print("\n| set | pairs | within target: as written | with the rule | pairs moved | better | worse "
          "(> 0.01 px) | refused (inconsistent) a transfer would write within target |")
    print("|---|---|---|---|---|---|---|---|")
    for name in sets + ["all"]:
        mine = [r for r in rows if name in ("all", r["set"])]
        written = [r for r in mine if r["status"] == "ok"]
        limit = {r["id"]: TARGET[r["condition"]] for r in mine}
        before = sum(r["own"] <= limit[r["id"]] for r in written)
        moved = [r for r in written if r["chosen"]]
        after = sum((r["chosen"]["error"] if r["chosen"] else r["own"]) <= limit[r["id"]] for r in written)
        better = sum(r["chosen"]["error"] < r["own"] - 0.01 for r in moved)
        worse = sum(r["chosen"]["error"] > r["own"] + 0.01 for r in moved)
        refused = [r for r in mine if r["status"] == "inconsistent"]
        rescued = sum(bool(r["chosen"]) and r["chosen"]["error"] <= limit[r["id"]] for r in refused)
        print(f"| {name} | {len(mine)} | {before} | {after} | {len(moved)} | {better} | {worse} | "
              f"{rescued} of {len(refused)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = [row for folder in args.folders for row in probe(folder)]
    summarise(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
