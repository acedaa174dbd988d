"""refine on a start it cannot use: a failed pair with its reason, never a crash of the whole align run."""

from __future__ import annotations

import numpy as np
import pytest

from realsr_tools import geometry
from realsr_tools.errors import RegistrationError
from realsr_tools.imaging import read_image
from realsr_tools.registration import grey, refine


def test_a_start_that_puts_the_hr_field_on_a_sliver_is_refused(data_dir):
    # Found by the independent generator's hard set: a wrong coarse match mapped the HR field onto a 1-px-high LR
    # region and np.gradient raised ValueError, which stopped align after 26 of 36 pairs. Here the start puts the
    # HR field below the LR frame, so the region it covers is the LR's last row.
    hr = grey(read_image(data_dir / "photos" / "kodak_kodim03.png"))
    lr = np.ascontiguousarray(hr[::2, ::2])
    start = geometry.prior_homography(lr.shape, hr.shape, 2.0) @ geometry.translation(0, -lr.shape[0])
    with pytest.raises(RegistrationError, match="too small to refine"):
        refine(lr, hr, start)
    # The same images from a sensible start refine fine (the guard is not in the way).
    assert refine(lr, hr, geometry.prior_homography(lr.shape, hr.shape, 2.0)).correlation > 0.9


def test_a_level_fit_that_collapses_the_template_is_that_starts_failure():
    """A wrong start whose iterations diverged (found on realsr's simulator: a star field, x4, the feature start's
    fit mapped the template to an area 1e-12 of the start's) is a RegistrationError, so register tries its other
    start; it used to end the pair as a singular-matrix crash although the other start had fitted it."""
    from realsr_tools.registration.gauss_newton import _check_not_degenerate

    start = geometry.prior_homography((120, 160), (480, 640), 4.0)
    _check_not_degenerate(start @ geometry.translation(3.0, -2.0), start, (120, 160))  # a shift is fine
    collapsed = start @ np.diag([1e-6, 1e-6, 1.0])
    with pytest.raises(RegistrationError, match="diverged"):
        _check_not_degenerate(collapsed, start, (120, 160))
    with pytest.raises(RegistrationError, match="diverged"):
        _check_not_degenerate(np.full((3, 3), np.nan), start, (120, 160))


def test_a_level_fit_whose_rows_became_proportional_is_that_starts_failure():
    """A diverged fit found on the independent generator (normal seed 11, a whole-frame x4 -> x2 registration of two
    LR captures): its upper-left 2 x 2 block still maps the template to 0.63 of the start's area, but the homography
    is rank 1 (condition number 4e19), so model selection raised ``LinAlgError: Singular matrix`` and took the
    registration's other starts down with it. The mapped area at the template corners is what says it collapsed."""
    from realsr_tools.registration.gauss_newton import _check_not_degenerate

    start = geometry.translation(300.0, 80.0) @ np.diag([1.45, 1.45, 1.0])
    rank_one = np.array([[127.951437, 289.084077, 1166.15651],
                         [31.9809519, 72.2658423, 291.508802],
                         [0.109716029, 0.247897765, 1.0]])
    assert 0.25 < abs(np.linalg.det(rank_one[:2, :2])) / 1.45**2 < 4  # what the check used to measure
    with pytest.raises(RegistrationError, match="diverged"):
        _check_not_degenerate(rank_one, start, (60, 80))
    past_horizon = start.copy()
    past_horizon[2, :2] = (-0.02, 0.0)  # the template's right-hand corners (x = 79) map past the horizon line
    with pytest.raises(RegistrationError, match="diverged"):
        _check_not_degenerate(past_horizon, start, (60, 80))
    _check_not_degenerate(start @ geometry.translation(3.0, -2.0), start, (60, 80))



def test_a_feature_homography_that_folds_the_frame_is_no_start():
    """SIFT/RANSAC on inliers along one line returned a homography with proportional rows (independent generator, hard
    seed 36, an x3 chart scene, 1372 x 912 whole frames): magnification near 0, the HR centre on its horizon, and the
    refinement from it divided by zero before failing. It is no coarse estimate; a perspective one still is."""
    from realsr_tools.registration.coarse import _maps_the_frame

    folded = np.array([[-7.6692e-01, -6.6765e-01, 1.0884e+03], [-2.0431e-01, -1.7786e-01, 2.8996e+02],
                       [-7.0461e-04, -6.1341e-04, 1.0]])
    shape, ratio = (912, 1372), 100 / 33
    prior = geometry.prior_homography(shape, shape, ratio)
    assert _maps_the_frame(prior, shape, ratio)
    tilted = prior @ np.array([[1.0, 0.01, 0.0], [-0.01, 1.0, 0.0], [2e-5, -1e-5, 1.0]])
    assert _maps_the_frame(tilted, shape, ratio)
    assert not _maps_the_frame(folded, shape, ratio)
    assert not _maps_the_frame(prior @ np.diag([-1.0, 1.0, 1.0]), shape, ratio)  # mirrored
    assert not _maps_the_frame(prior @ np.diag([2.5, 2.5, 1.0]), shape, ratio)  # 2.5x the focal ratio
    assert not _maps_the_frame(prior @ np.array([[1.0, 0, 0], [0, 1.0, 0], [-1e-3, 0, 1.0]]), shape, ratio)  # horizon
