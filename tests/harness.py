"""Captures of the independent harness's generator (benchmarks/independent/generator.py) for tests, and their truth.

The generator draws scene by scene, so the first scenes of a seed are those of the full set the harness measured.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from conftest import PROJECT
from realsr_tools.captures import discover
from realsr_tools.geometry import RadialDistortion, map_lr_to_hr, output_window
from realsr_tools.imaging import read_pixels

sys.path.insert(0, str(PROJECT / "benchmarks" / "independent"))
import generator  # noqa: E402


def harness_scene(root: Path, data_dir: Path, *, seed: int, scene: str, photo: str, hard: bool,
                  width: tuple[int, int] = (500, 1400)) -> dict:
    """Generate the harness's ``seed`` (hard: generator seed 1000 + seed; HR frames ``width`` px wide) up to ``scene``
    into ``root`` and keep only that scene (its folder and its captures.csv rows); returns the scene's truth."""
    return harness_scenes(root, data_dir, seed=seed, scenes={scene: photo}, hard=hard, width=width)[scene]


def harness_scenes(root: Path, data_dir: Path, *, seed: int, scenes: dict[str, str], hard: bool,
                   width: tuple[int, int] = (500, 1400), encoding: str = "power:2.2") -> dict[str, dict]:
    """:func:`harness_scene` for several scenes (name -> photograph) of one seed, the files written with the
    generator's ``encoding``: each scene's truth."""
    generator.DATA = data_dir
    last = max(int(scene.split("_")[1]) for scene in scenes)
    truth = json.loads(generator.generate(root, n_scenes=last + 1, seed=seed + (1000 if hard else 0), hard=hard,
                                          width=width, encoding=encoding, verbose=False).read_text())
    for scene, photo in scenes.items():
        assert truth["scenes"][scene]["photo"].endswith(photo)
    for other in truth["scenes"]:
        if other not in scenes:
            shutil.rmtree(root / other)
    with open(root / "captures.csv", newline="") as stream:
        rows = [row for row in csv.reader(stream) if row[0] == "path" or row[0].split("/")[0] in scenes]
    with open(root / "captures.csv", "w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    return {scene: truth["scenes"][scene] for scene in scenes}


def harness_pair(root, data_dir, *, seed: int, scene: str, photo: str, scale: int = 2,
                 width: tuple[int, int] = (500, 1400)):
    """The x``scale`` pair of ``scene`` of the harness's hard ``seed``: LR, HR, truth, key."""
    record = harness_scene(root, data_dir, seed=seed, scene=scene, photo=photo, hard=True, width=width)
    key = f"{scene}/lr_x{scale}.tif"
    return read_pixels(root / key), read_pixels(root / record["hr"]), record, key


def window_truth_errors(lr_to_hr, distortion, window, scene: dict, key: str) -> np.ndarray:
    """Error (LR px) of a mapping against the generator's true one at 15 x 15 points spanning ``window`` (x, y, w,
    h), its corners included."""
    x0, y0, w, h = window
    xs, ys = np.meshgrid(np.linspace(x0, x0 + w - 1, 15), np.linspace(y0, y0 + h - 1, 15))
    points = np.stack([xs.ravel(), ys.ravel()], 1)
    true_x, true_y = generator.lr_to_hr(scene, key, points[:, 0], points[:, 1])
    error = (map_lr_to_hr(np.asarray(lr_to_hr), distortion, points)
             - np.stack([true_x, true_y], 1)) / scene["captures"][key]["true_zoom"]
    return np.hypot(error[:, 0], error[:, 1])


def window_truth_rms(lr_to_hr, distortion, window, scene: dict, key: str) -> float:
    """RMS (LR px) over ``window`` (x, y, w, h) of a mapping against the generator's true one."""
    return float(np.sqrt(np.mean(window_truth_errors(lr_to_hr, distortion, window, scene, key) ** 2)))


def truth_errors(registration, lr, hr, scene: dict, key: str) -> np.ndarray:
    """:func:`window_truth_errors` over the output window of a registration."""
    window = output_window(registration.lr_to_hr, lr.shape, hr.shape, distortion=registration.distortion)
    return window_truth_errors(registration.lr_to_hr, registration.distortion, window, scene, key)


def truth_rms(registration, lr, hr, scene: dict, key: str) -> float:
    """RMS (LR px) over the output window of a registration against the generator's true mapping."""
    return float(np.sqrt(np.mean(truth_errors(registration, lr, hr, scene, key) ** 2)))


def record_truth_rms(record: dict, scene: dict) -> float:
    """RMS (LR px) of an align manifest record's mapping over its window against the generator's true one."""
    return window_truth_rms(record["lr_to_hr"], RadialDistortion.from_dict(record["distortion"]), record["lr_window"],
                            scene, record["lr_source"])


def focal_ratio(root, key: str) -> float:
    """The focal ratio align takes from the captures' metadata (the generator writes 4 % off the true zoom)."""
    return next(pair.focal_ratio for pair in discover(root).pairs if pair.lr == key)
