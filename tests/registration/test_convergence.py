"""Refinement runs to convergence: a chart pair that needs more Gauss-Newton steps than a fixed budget gets them.

The pair is the independent harness's own (benchmarks/independent/generator.py, hard seed 10, scene 2): a ColorChecker
x2 whose HR field shows two flat yellow patches and, on one side only, two vertical edges, starting 4 % off in
magnification. With a budget of 40 steps the single pyramid level stopped while still moving; the model chosen
there was written `ok` 4.5 LR px RMS off the truth.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import PROJECT
from realsr_tools.geometry import map_lr_to_hr, output_window
from realsr_tools.imaging import read_pixels
from realsr_tools.registration import register_captures

sys.path.insert(0, str(PROJECT / "benchmarks" / "independent"))
import generator  # noqa: E402


@pytest.fixture(scope="module")
def chart_pair(tmp_path_factory, data_dir):
    """The harness's hard seed 10 draws scene by scene, so its first three scenes are those of the full set."""
    generator.DATA = data_dir
    root = tmp_path_factory.mktemp("generator") / "captures"
    truth = json.loads(generator.generate(root, n_scenes=3, seed=1010, hard=True, verbose=False).read_text())
    scene = truth["scenes"]["scene_02"]
    assert scene["photo"].endswith("nikon_d3100_DSC_0008.JPG")
    key = "scene_02/lr_x2.tif"
    return read_pixels(root / key), read_pixels(root / scene["hr"]), scene, key


def test_a_slowly_converging_chart_pair_is_refined_to_its_geometry(chart_pair):
    lr, hr, scene, key = chart_pair
    registration, _ = register_captures(lr, hr, ratio=2.0)
    x0, y0, w, h = output_window(registration.lr_to_hr, lr.shape, hr.shape, distortion=registration.distortion)
    xs, ys = np.meshgrid(np.linspace(x0, x0 + w - 1, 15), np.linspace(y0, y0 + h - 1, 15))
    points = np.stack([xs.ravel(), ys.ravel()], 1)
    true_x, true_y = generator.lr_to_hr(scene, key, points[:, 0], points[:, 1])
    error = (map_lr_to_hr(registration.lr_to_hr, registration.distortion, points)
             - np.stack([true_x, true_y], 1)) / scene["captures"][key]["true_zoom"]
    # Measured: 77 steps, 0.39 LR px RMS (the truth's own best homography is 0.18 px off); 4.5 px after 40 steps.
    assert registration.iterations > 40
    assert np.sqrt(np.mean(np.sum(error**2, axis=1))) < 0.6
