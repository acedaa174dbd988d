"""The corner uncertainty from the structure alone: what the Gauss-Newton matrix holds without the HR's gradient
noise (``registration.structure_uncertainty``, errors in variables)."""

from __future__ import annotations

import numpy as np

from realsr_tools.registration.gauss_newton import NOISE_FLOOR, _gradient_noise, _noise_corrected_inverse


def _normal(rng, n=6):
    a = rng.normal(size=(40, n))
    return a.T @ a


def test_without_noise_the_corrected_inverse_is_the_plain_one():
    normal = _normal(np.random.default_rng(0))
    np.testing.assert_allclose(_noise_corrected_inverse(normal, np.zeros_like(normal)), np.linalg.inv(normal),
                               rtol=1e-9, atol=1e-12)


def test_noise_that_is_half_the_information_doubles_the_covariance():
    normal = _normal(np.random.default_rng(1))
    np.testing.assert_allclose(_noise_corrected_inverse(normal, normal / 2), 2 * np.linalg.inv(normal), rtol=1e-9)


def test_a_direction_of_pure_noise_is_inflated_to_the_floor_and_the_others_kept():
    # two decoupled parameters: the first's information is all noise (and the estimate says more), the second's none
    normal = np.diag([4.0, 9.0])
    corrected = _noise_corrected_inverse(normal, np.diag([5.0, 0.0]))
    np.testing.assert_allclose(np.diag(corrected), [1 / (4.0 * NOISE_FLOOR), 1 / 9.0], rtol=1e-9)
    assert abs(corrected[0, 1]) < 1e-12


def test_gradient_noise_of_a_flat_half_is_the_noise_variance_despite_structure_elsewhere():
    # Per-component gradient variance 0.04 everywhere; half the pixels also carry strong structure, which the
    # template's structure measure marks.
    rng = np.random.default_rng(2)
    n = 200_000
    gx, gy = rng.normal(0, 0.2, n), rng.normal(0, 0.2, n)
    structured = np.arange(n) < n // 2
    gx[structured] += rng.normal(0, 3.0, structured.sum())
    structure = np.where(structured, 10.0, 0.1) * rng.uniform(0.5, 1.5, n)
    estimate = _gradient_noise(gx**2 + gy**2, structure)
    assert abs(estimate / 0.04 - 1) < 0.03
