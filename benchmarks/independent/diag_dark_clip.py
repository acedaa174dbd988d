"""Diagnosis: how much of a generator pair's registration error comes from dark noise clipped at zero?

Re-renders one scene's HR and LR captures from a ``bench_generalise.py`` truth file (the geometry, optics,
photometry and noise level as drawn; a new noise draw), once as drawn and once for each change asked, and registers
every pair with realsr's ``register_captures`` decoded with the generator's own curve (a pure 2.2 power), printing
each pair's RMS error against the generator's mapping over realsr's output window (LR px):

* ``same-light``: exposure, white balance and vignetting the same in every capture;
* ``no-shake``, ``no-noise``: as named (with ``same-light`` where both are given, and so on: changes add up);
* ``lift=V``: the world's black lifted V (linear light) above zero, so that the noise no longer reaches the clip.

A pair whose error falls from "as drawn" to ``lift=0.01`` by much more than the noise-free render's is limited by
the bias of its clipped dark noise (docs/align.md, "Dark noise clipped at zero"; session 40: the 4000-6000 px hard
seed 12's nikon_d90 x3, 0.195 -> 0.063 LR px with a801100's code).

    python diag_dark_clip.py CAPTURES_DIR SCENE SCALE [CHANGE ...]
    e.g. python diag_dark_clip.py /tmp/g/captures_hard scene_03 3 same-light,no-shake lift=0.01
    (each argument after SCALE is one re-rendering, its changes joined by commas)
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import bench_generalise as B  # noqa: E402
import generator as G  # noqa: E402
from realsr_tools.geometry import output_window  # noqa: E402
from realsr_tools.imaging import read_pixels  # noqa: E402
from realsr_tools.pipeline.runner import one_blas_thread  # noqa: E402
from realsr_tools.registration import register_captures  # noqa: E402


def changed(captures: dict, changes: list[str]) -> tuple[dict, float]:
    """The scene's captures with ``changes`` made, and the lift of the world's black."""
    captures = json.loads(json.dumps(captures))
    lift = 0.0
    for change in changes:
        for capture in captures.values():
            if change == "same-light":
                capture["photometric"] = dict(ev=0.0, wb=[1.0, 1.0, 1.0], vignetting=0.0)
            elif change == "no-shake":
                capture["shake"] = [0.0, 0.0]
            elif change == "no-noise":
                capture["noise"] = [0.0, 0.0]
        if change.startswith("lift="):
            lift = float(change.split("=")[1])
        elif change not in ("same-light", "no-shake", "no-noise", ""):
            raise SystemExit(f"unknown change {change!r}: same-light, no-shake, no-noise or lift=V")
    return captures, lift


def error_rms(registration, lr, hr, scene: dict, key: str) -> float:
    """RMS (LR px) over realsr's output window of its mapping against the generator's, read as the harness reads a
    written record (:func:`bench_generalise.recorded_error`)."""
    x0, y0, w, h = output_window(registration.lr_to_hr, lr.shape, hr.shape, distortion=registration.distortion)
    xs, ys = np.meshgrid(np.linspace(x0, x0 + w - 1, 15), np.linspace(y0, y0 + h - 1, 15))
    record = {"lr_to_hr": np.asarray(registration.lr_to_hr).tolist(),
              "distortion": registration.distortion.to_dict() if registration.distortion else None}
    error = B.recorded_error(record, scene, key, scene["captures"][key], xs, ys)
    return float(np.sqrt(np.mean(np.sum(error ** 2, axis=1))))


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    captures_dir, scene_name, scale = Path(argv[0]), argv[1], int(argv[2])
    truth = json.loads(Path(str(captures_dir) + ".truth.json").read_text())
    scene = truth["scenes"][scene_name]
    key = f"{scene_name}/lr_x{scale}{Path(scene['hr']).suffix}"
    photo = G.read_photo(G.DATA / scene["photo"]) ** G.GAMMA
    for variant in ["", *argv[3:]]:
        captures, lift = changed(scene["captures"], variant.split(","))
        surround = np.array(scene["surround"], np.float32) + np.float32(lift)
        world = G.make_world(photo + np.float32(lift), surround)
        rng = np.random.default_rng(0)
        images = {}
        with tempfile.TemporaryDirectory() as folder:
            for name in (scene["hr"], key):
                path = Path(folder) / Path(name).name
                capture = captures[name]
                G.write_capture(path, G.render(world, surround, capture, rng, G.supersampling(capture["W"])), True)
                images[name] = read_pixels(path)
        lr, hr = images[key], images[scene["hr"]]
        with one_blas_thread():
            registration, _ = register_captures(lr, hr, ratio=G.FOCAL[1] / G.FOCAL[scale],
                                                curves=("power:2.2", "power:2.2"))
        error = error_rms(registration, lr, hr, {**scene, "captures": captures}, key)
        print(f"{key} {variant or 'as drawn':32s} {error:.4f} LR px", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
