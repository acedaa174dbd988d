"""``realsr align`` of this checkout against another commit's: the same captures, runs alternating, same machine.

Run by hand (not by pytest)::

    python benchmarks/bench_commits.py --base HEAD~1                   # the 20-MP x2 pair and a 4000-6000 px scene
    python benchmarks/bench_commits.py --base REV --captures DIR ...   # capture folders of your own
    python benchmarks/bench_commits.py --base REV --runs 5

For a change meant to make align faster without changing what it writes. The base commit is checked out into a
temporary git worktree; each run is ``python -m realsr_tools --quiet align ROOT --out OUT -j 1`` in a child process
whose ``PYTHONPATH`` names one of the two checkouts, the two alternating (base first in odd rounds, this checkout
first in even ones), so that a machine whose load drifts weighs on both alike. Prints per capture folder the median
wall, user and system seconds and peak resident memory of each and the ratio of the median walls with its range over
the rounds, and how far apart the two write each pair: the largest distance between their mappings (homography and
lens terms) over the pair's output window, in LR px, and whether status, model and window agree.

Default captures: bench_align.py's 20-MP x2 pair (the issue's speed target) and one scene of the independent
generator's hard 4000-6000 px frames (seed 17, scene 0: x2, x3, x4 of a 4608-px frame).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "independent"))

from realsr_tools.geometry import RadialDistortion, map_lr_to_hr  # noqa: E402
from realsr_tools.pipeline.manifest import read_manifest  # noqa: E402


def default_captures(work: Path) -> list[Path]:
    from bench_curve_estimate import speed_pair

    import generator

    large = work / "large"
    generator.generate(large, n_scenes=1, seed=17, hard=True, width=(4000, 6000), verbose=False)
    return [speed_pair(work), large]


def align_once(code: Path, captures: Path, out: Path) -> tuple[float, float, float, float]:
    """One end-to-end align by the checkout ``code``: wall, user and system seconds of the child, its peak RSS
    (MB)."""
    env = dict(os.environ, PYTHONPATH=str(code))
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "realsr_tools", "--quiet", "align", str(captures), "--out",
                              str(out), "-j", "1"], env=env, cwd=code, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"align by {code} failed on {captures} (exit {os.waitstatus_to_exitcode(status)})")
    return wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024


def mapping_distance(a: dict, b: dict) -> float:
    """Largest distance (LR px) between two records' LR -> HR mappings over the first one's window (15 x 15
    points)."""
    x0, y0, w, h = a["lr_window"]
    xs, ys = np.meshgrid(np.linspace(x0, x0 + w - 1, 15), np.linspace(y0, y0 + h - 1, 15))
    points = np.stack([xs.ravel(), ys.ravel()], 1)
    mapped = [map_lr_to_hr(np.asarray(r["lr_to_hr"]), RadialDistortion.from_dict(r.get("distortion")), points)
              for r in (a, b)]
    return float(np.max(np.hypot(*(mapped[0] - mapped[1]).T)) / a["scale"])


def model_name(record: dict) -> str | None:
    model = (record.get("registration") or {}).get("model")
    return model.get("name") if isinstance(model, dict) else model


def compare(base_out: Path, head_out: Path) -> list[str]:
    """Per pair: both statuses, models and windows, and the distance between the two mappings."""
    lines = []
    base = {r["lr_source"]: r for r in read_manifest(base_out, stage="align").records}
    for record in read_manifest(head_out, stage="align").records:
        other = base.get(record["lr_source"])
        if other is None:
            lines.append(f"  {record['lr_source']}: only this checkout wrote it")
            continue
        same = all(record.get(key) == other.get(key) for key in ("status", "lr_window")) and \
            model_name(record) == model_name(other)
        distance = mapping_distance(other, record) if record.get("status") == other.get("status") == "ok" else None
        lines.append(f"  {record['lr_source']}: status {other.get('status')} / {record.get('status')}, model and "
                     f"window {'the same' if same else 'DIFFER'}, mappings "
                     f"{'-' if distance is None else f'{distance:.2e}'} LR px apart")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (e.g. HEAD~1)")
    parser.add_argument("--captures", type=Path, nargs="*", help="capture folders (default: see above)")
    parser.add_argument("--runs", type=int, default=3, help="rounds (each aligns every folder with both)")
    args = parser.parse_args()
    base_rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    head_rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base_code = work / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base_code), base_rev], cwd=ROOT, check=True)
        try:
            folders = args.captures or default_captures(work)
            codes = {"base": base_code, "this": ROOT}
            times: dict[tuple[int, str], list[tuple[float, float, float, float]]] = {}
            for round_ in range(args.runs):
                for index, captures in enumerate(folders):
                    order = ("base", "this") if round_ % 2 == 0 else ("this", "base")
                    for name in order:
                        out = work / f"out_{name}_{index}_{round_}"
                        times.setdefault((index, name), []).append(align_once(codes[name], captures, out))
            load = Path("/proc/loadavg").read_text().split()[0]
            print(f"### align -j 1 by {base_rev} (base) and {head_rev} (this), {args.runs} rounds alternating; "
                  f"load average {load} at the end, {os.cpu_count()} cores\n")
            print("| captures | base wall / user / sys s, peak MB | this wall / user / sys s, peak MB "
                  "| wall ratio this / base (range) |\n|---|---|---|---|")
            for index, captures in enumerate(folders):
                base_t, this_t = times[(index, "base")], times[(index, "this")]
                medians = [[statistics.median(t[k] for t in runs) for k in range(4)] for runs in (base_t, this_t)]
                ratios = [t[0] / b[0] for t, b in zip(this_t, base_t)]
                cells = [f"{' / '.join(f'{v:.1f}' for v in m[:3])}, {m[3]:.0f}" for m in medians]
                print(f"| {captures.name} | {cells[0]} | {cells[1]} | {medians[1][0] / medians[0][0]:.2f} "
                      f"({min(ratios):.2f}-{max(ratios):.2f}) |")
            print("\nWhat the two wrote (first round):")
            for index, captures in enumerate(folders):
                print(f"{captures.name}:")
                print("\n".join(compare(work / f"out_base_{index}_0", work / f"out_this_{index}_0")))
            print(json.dumps({f"{folders[i].name}:{name}": runs for (i, name), runs in times.items()}))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_code)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
