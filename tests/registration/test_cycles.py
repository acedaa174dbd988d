"""A Gauss-Newton fit that goes round a cycle ends there instead of at its step cap (CYCLE_MEMORY)."""

from __future__ import annotations

import numpy as np

from realsr_tools import geometry
from realsr_tools.imaging import read_pixels
from realsr_tools.registration import gauss_newton, register_captures


def test_a_cycling_fit_ends_where_it_would_have_gone_round_to_its_cap(data_dir, monkeypatch):
    """DRealSR Canon_40 (x4, a 128-px LR): its fit goes round a cycle of steps larger than the step test's 0.005 px,
    which never ends it; without the cycle test it runs to the 150-step cap (measured: 152 iterations in all, 9 with
    it), and both end at the same mapping. (IMG_181, this test's pair before, converges in 6 steps since a clipped
    channel counts as clipping.)"""
    lr = read_pixels(data_dir / "pairs" / "drealsr_x4" / "LR" / "Canon_40_x1.png")
    hr = read_pixels(data_dir / "pairs" / "drealsr_x4" / "HR" / "Canon_40_x1.png")
    stopped, _ = register_captures(lr, hr, ratio=4.0)
    monkeypatch.setattr(gauss_newton, "CYCLE_MEMORY", 0)
    capped, _ = register_captures(lr, hr, ratio=4.0)
    assert capped.iterations >= gauss_newton.COARSEST_STEPS
    assert stopped.iterations < 30
    window = geometry.output_window(stopped.lr_to_hr, lr.shape, hr.shape, distortion=stopped.distortion)
    x0, y0, w, h = window
    corners = np.array([[x0, y0], [x0 + w - 1, y0], [x0 + w - 1, y0 + h - 1], [x0, y0 + h - 1]], np.float64)
    assert np.max(np.linalg.norm(stopped.map(corners) - capped.map(corners), axis=1)) / 4 < 0.005  # LR px
