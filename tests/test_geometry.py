"""geometry: the one implementation of the homography and radial lens maths, checked against independent code."""

from __future__ import annotations

import numpy as np
import pytest

from realsr_tools import geometry, simulate
from realsr_tools.geometry import RadialDistortion

TERMS = ((-0.02, 300.5, 200.0, 360.0), (0.004, 310.0, 190.5, 90.0))


def test_radial_shift_on_a_float32_grid_equals_the_float64_points():
    # The warp's per-pixel maps broadcast a row of columns against a column of rows, in float32.
    columns = np.arange(0, 640, 7, dtype=np.float32)[None, :]
    rows = np.arange(0, 480, 5, dtype=np.float32)[:, None]
    sx, sy = geometry.radial_shift(columns, rows, TERMS)
    assert sx.dtype == np.float32 and sx.shape == (rows.size, columns.size)
    xs, ys = np.meshgrid(columns.ravel().astype(np.float64), rows.ravel().astype(np.float64))
    points = np.stack([xs, ys], -1)
    expected = geometry.radial_undistort(points, TERMS) - points
    assert np.abs(np.stack([sx, sy], -1) - expected).max() < 1e-3


def test_radial_distort_inverts_undistort():
    points = np.random.default_rng(0).uniform(0, 600, (200, 2))
    assert np.abs(geometry.radial_undistort(geometry.radial_distort(points, TERMS), TERMS) - points).max() < 1e-6


def test_the_simulators_own_camera_model_agrees_with_geometry():
    # simulate.py keeps an independent implementation on purpose (the truth must not share code with the judged);
    # both must be the same model.
    points = np.random.default_rng(1).uniform(0, 640, (100, 2))
    centre, radius, k1 = np.array([319.5, 239.5]), 400.0, -0.025
    term = [(k1, centre[0], centre[1], radius)]
    assert np.allclose(simulate._undistort(points, k1, centre, radius), geometry.radial_undistort(points, term))
    assert np.allclose(simulate._distort(points, k1, centre, radius), geometry.radial_distort(points, term),
                       atol=1e-6)
    matrix = np.array([[2.01, 0.02, 3.0], [-0.01, 1.98, -2.0], [1e-5, -2e-5, 1.0]])
    assert np.allclose(simulate._apply(matrix, points), geometry.apply_homography(matrix, points))


def test_distortion_record_round_trip():
    distortion = RadialDistortion(TERMS)
    again = RadialDistortion.from_dict(distortion.to_dict())
    points = np.array([[0.0, 0.0], [640.0, 480.0], [100.0, 400.0]])
    assert np.abs(again.undistort(points) - distortion.undistort(points)).max() < 1e-3
    assert RadialDistortion.from_dict(None) is None


@pytest.mark.parametrize("distortion", [None, RadialDistortion(TERMS)])
def test_warp_hr_samples_the_complete_mapping(distortion):
    """A smooth HR (a function of its coordinates) warped by warp_hr equals that function evaluated at the
    complete mapping of each output pixel (float64 reference)."""
    hh, hw = 400, 500
    ys, xs = np.mgrid[0:hh, 0:hw].astype(np.float64)
    hr = (0.5 + 0.25 * np.sin(xs / 23.0) * np.cos(ys / 31.0)).astype(np.float32)
    lr_to_hr = geometry.translation(250, 200) @ np.array([[1.6, 0.03, 0], [-0.02, 1.62, 0], [0, 0, 1]]) \
        @ geometry.translation(-120, -100)
    window, scale = (70, 60, 90, 70), 2
    out = geometry.warp_hr(hr, lr_to_hr, window, scale, distortion=distortion)
    v, u = np.mgrid[8:out.shape[0] - 8:5, 8:out.shape[1] - 8:5]
    lr_points = np.stack([window[0] + (u.ravel() + 0.5) / scale - 0.5, window[1] + (v.ravel() + 0.5) / scale - 0.5], 1)
    x, y = geometry.map_lr_to_hr(lr_to_hr, distortion, lr_points).T
    expected = 0.5 + 0.25 * np.sin(x / 23.0) * np.cos(y / 31.0)
    assert np.abs(out[v.ravel(), u.ravel()] - expected).max() < 2e-3


def test_radial_basis_is_the_derivative_of_the_shift_in_k():
    x = np.linspace(0, 600, 50, dtype=np.float64)
    y = np.linspace(20, 450, 50, dtype=np.float64)
    (dx, dy, rho, inv_r2), = geometry.radial_basis(x, y, [TERMS[0][1:]])
    assert inv_r2 == pytest.approx(1 / TERMS[0][3] ** 2)
    sx, sy = geometry.radial_shift(x, y, [TERMS[0]])
    assert np.allclose(sx, TERMS[0][0] * dx * rho) and np.allclose(sy, TERMS[0][0] * dy * rho)


FIFTH = (*TERMS, (0.003, 310.0, 190.5, 360.0, geometry.FIFTH_ORDER))


def test_a_fifth_order_term_shifts_by_k_d_rho_squared():
    points = np.random.default_rng(2).uniform(0, 600, (100, 2))
    k, cx, cy, radius, power = FIFTH[2]
    d = points - (cx, cy)
    rho = np.sum(d * d, axis=1, keepdims=True) / radius**2
    expected = geometry.radial_undistort(points, TERMS) + k * d * rho**power
    assert np.allclose(geometry.radial_undistort(points, FIFTH), expected)
    assert np.abs(geometry.radial_undistort(geometry.radial_distort(points, FIFTH), FIFTH) - points).max() < 1e-6
    (dx, dy, rho_n, _), = geometry.radial_basis(points[:, 0], points[:, 1], [FIFTH[2][1:4]], [power])
    sx, sy = geometry.radial_shift(points[:, 0], points[:, 1], [FIFTH[2]])
    assert np.allclose(sx, k * dx * rho_n) and np.allclose(sy, k * dy * rho_n)


def test_a_record_states_a_fifth_order_term_and_reads_as_before_without_one():
    record = RadialDistortion(FIFTH).to_dict()
    assert [t.get("power", 1) for t in record["terms"]] == [1, 1, 2] and "power" in record["model"]
    assert RadialDistortion.from_dict(record).terms == RadialDistortion(FIFTH).terms
    # a record of two third-order terms (every manifest before the fifth order) is written exactly as it was
    assert RadialDistortion(TERMS).to_dict() == {
        "model": "y = x + sum k (x - c)|x - c|^2 / R^2 on LR px, then lr_to_hr",
        "terms": [{"lens": "lr", "k": -0.02, "centre": [300.5, 200.0], "radius": 360.0},
                  {"lens": "hr", "k": 0.004, "centre": [310.0, 190.5], "radius": 90.0}]}
