"""What align's scene check costs beside the pairs it judges (``realsr_tools.stages.align_scene.check_scene``).

Run by hand (not by pytest)::

    python benchmarks/bench_scene_check.py [--scenes 4] [--runs 3] [--out /tmp/bench_scene_check]

Captures: realsr's simulator (``simulate.make_capture_folder``, 640 x 480 LR frames, x2 / x3 / x4: three LR captures
per scene) from the first ``--scenes`` photographs of ../shared/data/photos. Baseline, in the same process: aligning
the scenes' pairs (``run_align`` with ``scene_check=False``, one worker, no preview: read, register, verify, warp,
write; OpenCV on one thread, as align's workers). Then the check of every scene (``check_scene`` on the records just
written: read the LR captures, three whole-frame registrations per scene), and the same check with every coarse start
refined for every comparison (as before session 13, when the chain was not refined alone where the search found its
match). Each run does all three, one after the other; it prints the wall and CPU seconds of each, the ratio check /
pairs and the speed-up of the check over the every-start check (median and range over the runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realsr_tools.pipeline.manifest import read_manifest  # noqa: E402
from realsr_tools.simulate import make_capture_folder  # noqa: E402
from realsr_tools.stages import align_scene  # noqa: E402
from realsr_tools.stages.align import run_align  # noqa: E402
from realsr_tools.stages.align_pair import AlignSettings  # noqa: E402
from realsr_tools.stages.align_scene import check_scene, written_scenes  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_scene_check"))
    args = parser.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)  # as align's workers run (run_align with one worker runs in this process)
    captures, aligned = args.out / "captures", args.out / "aligned"
    if not captures.exists():
        make_capture_folder(sorted(PHOTOS.glob("*.jpg"))[:args.scenes], captures, seed=1)
    settings = AlignSettings(captures, aligned, preview=False, bit_depth=8, photometric=True)
    register = align_scene.register_captures

    def every_start(*args, **kwargs):
        return register(*args, **{**kwargs, "hypothesis_alone_if_found": False})

    ratios, speedups = [], []
    for run in range(args.runs):
        summary, pairs_wall, pairs_cpu = timed(lambda: run_align(captures, aligned, workers=1, overwrite=True,
                                                                 show_progress=False, scene_check=False))
        scenes = written_scenes(read_manifest(aligned, stage="align").records)
        fields, check_wall, check_cpu = timed(lambda: [check_scene(m, settings) for m in scenes.values()])
        with mock.patch.object(align_scene, "register_captures", every_start):
            _, every_wall, every_cpu = timed(lambda: [check_scene(m, settings) for m in scenes.values()])
        verdicts = [f["verdict"] for scene in fields for f in scene]
        ratios.append(check_wall / pairs_wall)
        speedups.append(every_wall / check_wall)
        print(f"run {run + 1}: {summary.ok} pairs in {len(scenes)} scenes: pairs {pairs_wall:.1f} s wall "
              f"({pairs_cpu:.1f} s CPU), check {check_wall:.1f} s wall ({check_cpu:.1f} s CPU), ratio "
              f"{ratios[-1]:.2f}; every-start check {every_wall:.1f} s wall ({every_cpu:.1f} s CPU), "
              f"{speedups[-1]:.2f}x the check's time; verdicts "
              f"{', '.join(f'{v} {verdicts.count(v)}' for v in sorted(set(verdicts)))}", flush=True)
    print(f"check / pairs (wall): median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}; "
          f"every-start check / check: median {statistics.median(speedups):.2f}, range {min(speedups):.2f}-"
          f"{max(speedups):.2f} over {args.runs} runs")


if __name__ == "__main__":
    main()
