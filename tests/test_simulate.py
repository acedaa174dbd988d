"""Simulated capture folders: layout, captures.csv, and a ground truth checked against the rendered images."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from realsr_tools.captures import discover
from realsr_tools.imaging import read_image, read_pixels
from realsr_tools.simulate import GAMMA, make_capture_folder, registration_error, true_lr_to_hr


@pytest.fixture(scope="module")
def photos(data_dir):
    return [data_dir / "photos" / "skimage_UNIS_EV0.jpg", data_dir / "photos" / "exif_samples_35-empty.jpg"]


def _warp_truth(root, name, entry, shift=(0.0, 0.0)):
    """Linear-light grey LR and the HR brought onto the LR grid with the true mapping, moved by ``shift`` LR px
    (independent of realsr_tools.stages.align); -1 where the HR does not reach. Linear light, because the
    simulator blurs there: encoded values of a bright-on-dark edge peak elsewhere."""
    lr = cv2.cvtColor(read_image(root / name) ** GAMMA, cv2.COLOR_RGB2GRAY)
    hr = cv2.cvtColor(read_image(root / entry["hr"]) ** GAMMA, cv2.COLOR_RGB2GRAY)
    h, w = lr.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    points = np.stack([xs.ravel() + shift[0], ys.ravel() + shift[1]], 1)
    mapped = true_lr_to_hr(entry, points).reshape(h, w, 2).astype(np.float32)
    blurred = cv2.GaussianBlur(hr, (0, 0), 0.5 * entry["true_zoom"])
    warped = cv2.remap(blurred, mapped[..., 0], mapped[..., 1], cv2.INTER_CUBIC, borderValue=-1)
    return cv2.GaussianBlur(lr, (0, 0), 1.0), warped


def _optimum_offset(root, name, entry):
    """Where the LR/HR correlation peaks around the truth, per axis (parabola through 3 samples)."""
    _, base = _warp_truth(root, name, entry)
    box = _inscribed_box(base >= 0)
    offsets = np.array([-0.5, 0.0, 0.5])
    peak = []
    for axis in (0, 1):
        scores = []
        for d in offsets:
            lr, warped = _warp_truth(root, name, entry, (d, 0.0) if axis == 0 else (0.0, d))
            scores.append(np.corrcoef(lr[box].ravel(), warped[box].ravel())[0, 1])
        a, b, _ = np.polyfit(offsets, scores, 2)
        peak.append(-b / (2 * a))
    return np.array(peak)


def _inscribed_box(inside):
    ys, xs = np.nonzero(inside)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    while not inside[y0:y1 + 1, x0:x1 + 1].all():
        y0, y1, x0, x1 = y0 + 1, y1 - 1, x0 + 1, x1 - 1
    return slice(y0 + 2, y1 - 1), slice(x0 + 2, x1 - 1)


def test_layout_csv_and_ground_truth(tmp_path, photos):
    scenes = make_capture_folder(photos, tmp_path, scales=(2, 4), seed=3, lr_size=(480, 360))
    found = discover(tmp_path)
    assert sorted(p.scale for p in found.pairs) == [2, 2, 4, 4]
    assert {s.scene for s in scenes} == {"skimage_UNIS_EV0", "exif_samples_35-empty"}
    truth = json.loads((tmp_path / "truth.json").read_text())["pairs"]
    assert set(truth) == {p.lr for p in found.pairs}
    for pair in found.pairs:
        entry = truth[pair.lr]
        assert read_pixels(tmp_path / pair.lr).shape == (360, 480, 3)
        # The true zoom differs from the focal ratio by 1-5 %, as a real zoom lens does.
        assert 0.009 < abs(entry["true_zoom"] / pair.focal_ratio - 1) < 0.07
        # The truth is right: the LR/HR correlation peaks at it (within 0.08 LR px; aliasing of the JPEG scene
        # leaves a few hundredths).
        assert np.abs(_optimum_offset(tmp_path, pair.lr, entry)).max() < 0.08, pair.lr
        # and a deliberately wrong homography (1 LR px shift) is measured as such.
        wrong = np.asarray(entry["lr_to_hr"]) @ np.array([[1, 0, 1.0], [0, 1, 0], [0, 0, 1]])
        assert registration_error(entry, wrong, [100, 80, 100, 80]) == pytest.approx(1.0, rel=0.05)


def test_same_seed_same_folder_16_bit_and_hard_variant(tmp_path, photos):
    a = make_capture_folder(photos[:1], tmp_path / "a", scales=(3,), seed=7, bit_depth=16, lr_size=(200, 150))
    b = make_capture_folder(photos[:1], tmp_path / "b", scales=(3,), seed=7, bit_depth=16, lr_size=(200, 150))
    name = a[0].lr[3]
    pixels = read_pixels(tmp_path / "a" / name)
    assert pixels.dtype == np.uint16
    assert np.array_equal(pixels, read_pixels(tmp_path / "b" / name))
    assert np.allclose(a[0].lr_to_hr[name], b[0].lr_to_hr[name])
    make_capture_folder(photos[:1], tmp_path / "hard", scales=(2,), seed=7, hard=True, lr_size=(200, 150))
    entry = next(iter(json.loads((tmp_path / "hard" / "truth.json").read_text())["pairs"].values()))
    assert entry["lr_distortion"]["k1"] < 0  # barrel distortion on the wide capture
    # With distortion no homography is exact: the corners move against the homography part alone.
    corners = np.array([[0.0, 0.0], [199.0, 149.0]])
    plain = dict(entry, lr_distortion=dict(entry["lr_distortion"], k1=0.0), hr_distortion=dict(
        entry["hr_distortion"], k1=0.0))
    assert np.abs(true_lr_to_hr(entry, corners) - true_lr_to_hr(plain, corners)).max() > 0.5
