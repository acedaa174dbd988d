"""Shared helpers of the independent benchmarks (no realsr code: realsr is only ever run as a CLI subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# The shared test data: ``../shared/data`` beside the checkout, as README.md states.
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TARGET = {"normal": 0.1, "hard": 0.25}  # issue 10's per-condition tolerances on a pair's truth RMS, LR px


def realsr_cmd(*args) -> list[str]:
    """The realsr CLI of the checkout this file lives in (PYTHONPATH = repo root), through the current python."""
    return [sys.executable, "-m", "realsr_tools", "--quiet", *map(str, args)]


def run_realsr(*args, log: Path | None = None, nice: int = 10) -> tuple[int, float, str]:
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = ["nice", "-n", str(nice), *realsr_cmd(*args)]
    t = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.time() - t
    text = f"$ {' '.join(cmd)}\n{p.stdout}\n{p.stderr}"
    if log:
        with open(log, "a") as f:
            f.write(text + f"\n(rc {p.returncode}, {dt:.1f} s)\n")
    return p.returncode, dt, p.stdout + p.stderr


def read_manifest(path: Path) -> tuple[dict, list[dict]]:
    lines = [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
    return lines[0], lines[1:]


def fmt(x, nd=3):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{nd}f}"


def table(rows: list[list], header: list[str]) -> str:
    w = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    out = ["| " + " | ".join(str(h).ljust(w[i]) for i, h in enumerate(header)) + " |",
           "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |")
    return "\n".join(out)


class NpEncoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o) if np.isfinite(o) else None
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.bool_):
            return bool(o)
        return super().default(o)


def dump(path: Path, obj):
    Path(path).write_text(json.dumps(obj, indent=1, cls=NpEncoder, allow_nan=False)
                          if False else json.dumps(_clean(obj), indent=1, cls=NpEncoder))


def _clean(o):
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o
