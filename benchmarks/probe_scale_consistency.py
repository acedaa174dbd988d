"""Probe: align's scene check (:mod:`realsr_tools.registration.consistency`) on the harness's outputs, beside the truth.

Reads an output folder of ``benchmarks/independent/bench_generalise.py`` (captures, realsr's manifest and the
harness's per-pair truth errors) and runs :func:`realsr_tools.stages.align_scene.check_scene` on every scene's written
pairs as they stand in the manifest (so a set aligned before the check existed, or with ``--no-scene-check``, can be
judged without aligning again). Prints each comparison's disagreement (median and max over the wider capture's
window, LR px) and each pair's verdict beside its truth error; with ``--json``, writes them. The truth is read only
here, never by realsr.

    python benchmarks/probe_scale_consistency.py OUT [--conditions hard,normal] [--json FILE] [--scenes a,b]
        [--max-uncertainty 0.53 [--provisional]] [--old-units] [--extra MANIFEST --extra-truth ROWS.json]

``--old-units``: the manifests were written before 2026-12-03, when ``registration.uncertainty`` took each smoothed
pixel for an independent sample and read sqrt(``SAMPLE_AREA``) = 3.54 times smaller (docs/align.md, "Corner
uncertainty"); their figures are converted on reading, so ``--max-uncertainty`` and align's
``MAX_CONFIRMED_UNCERTAINTY`` are in today's units either way.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from realsr_tools.registration.estimate import MAX_CONFIRMED_UNCERTAINTY
from realsr_tools.registration.gauss_newton import SAMPLE_AREA
from realsr_tools.stages.align_pair import AlignSettings
from realsr_tools.stages.align_scene import check_scene, written_scenes


def probe(out: Path, condition: str, max_uncertainty: float | None = None,
          only: set[str] | None = None, provisional: bool = False, extra: Path | None = None,
          extra_truth: Path | None = None, old_units: bool = False) -> list[dict]:
    captures = out / f"captures_{condition}"
    # A pair written above a texture gate tighter than the one it was aligned with would not be written, or (with
    # ``provisional``, as align writes it since session 13) written up to MAX_CONFIRMED_UNCERTAINTY for the check to
    # confirm.
    written = max_uncertainty and (max(max_uncertainty, MAX_CONFIRMED_UNCERTAINTY) if provisional else max_uncertainty)
    records: dict[str, dict] = {}
    for manifest in [out / f"aligned_{condition}" / "manifest.jsonl", *([extra] if extra else [])]:
        with open(manifest) as stream:
            next(stream)
            for line in stream:
                record = json.loads(line)
                if record.get("status") == "ok":  # a pair written by the extra run replaces its refusal here
                    if old_units:
                        record["registration"]["uncertainty"] *= math.sqrt(SAMPLE_AREA)
                    records[record["id"]] = record
    judged = []
    for record in records.values():
        if only is not None and record["scene"] not in only:
            continue
        uncertainty = record["registration"]["uncertainty"]
        if written and uncertainty > written:
            continue
        if provisional and max_uncertainty:
            record["registration"]["needs_confirmation"] = uncertainty > max_uncertainty
        judged.append(record)
    scenes = written_scenes(judged)
    errors = {row["lr"]: row.get("error_rms") for row in
              json.loads((out / "results.json").read_text())[condition]["pairs"]
              + (json.loads(extra_truth.read_text()) if extra_truth else [])}
    settings = AlignSettings(captures, out / f"aligned_{condition}", preview=False, bit_depth=8, photometric=True)
    rows = []
    for scene, members in sorted(scenes.items()):
        for record, field in zip(members, check_scene(members, settings)):
            truth = errors.get(record["lr_source"])
            rows.append({"condition": condition, "id": record["id"], "truth": truth, "verdict": field["verdict"],
                         "uncertainty": record["registration"]["uncertainty"],
                         "provisional": bool(record["registration"].get("needs_confirmation")),
                         "comparisons": field["comparisons"]})
            summary = "; ".join(f"{c['narrow'] if c['wide'] == record['id'] else c['wide']}: "
                                + (f"{c['median']:.3f} / {c['max']:.3f} ({c['start']})" if c["median"] is not None
                                   else f"failed ({c['error'][:60]})") for c in field["comparisons"])
            print(f"{condition} {record['id']:28s} truth {truth if truth is not None else float('nan'):7.3f} "
                  f"{field['verdict']:12s} {summary}", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="a bench_generalise.py --out folder")
    parser.add_argument("--conditions", default="normal,hard")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--max-uncertainty", type=float, help="leave out pairs written above this texture gate")
    parser.add_argument("--scenes", help="judge only these scenes (comma-separated names, e.g. scene_03,scene_07)")
    parser.add_argument("--extra", type=Path, help="an align manifest of the same captures (e.g. the pairs this set "
                        "refused, aligned again at a looser gate): its written pairs join their scenes")
    parser.add_argument("--extra-truth", type=Path, help="the harness's per-pair rows (lr, error_rms) for --extra")
    parser.add_argument("--provisional", action="store_true",
                        help="with --max-uncertainty: pairs above it (up to align's MAX_CONFIRMED_UNCERTAINTY) "
                        "are judged as align writes them, provisionally, kept only if their scene confirms them")
    parser.add_argument("--old-units", action="store_true",
                        help="the manifests' corner uncertainties are in the units before 2026-12-03 (3.54x smaller)")
    args = parser.parse_args(argv)
    rows = []
    for condition in args.conditions.split(","):
        if (args.out / f"aligned_{condition}").exists():
            rows += probe(args.out, condition, args.max_uncertainty,
                          set(args.scenes.split(",")) if args.scenes else None, args.provisional, args.extra,
                          args.extra_truth, args.old_units)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
