"""Pictures people judge pairs by: align previews large, contrast-stretched and labelled."""

from __future__ import annotations

import numpy as np

from realsr_tools.imaging import read_image
from realsr_tools.stages.align import PREVIEW_SIZE, preview_image


def test_align_preview_of_a_small_dark_window_is_enlarged_stretched_and_labelled(data_dir):
    lr = read_image(data_dir / "pairs" / "realsr_x4" / "LR" / "Canon_004_LR4.png")[40:77, 10:98] * 0.25
    preview = preview_image(lr, lr)
    band, panels = preview[:22], preview[22:]
    assert panels.shape[0] == round(37 * PREVIEW_SIZE / 88) and panels.shape[1] == 2 * PREVIEW_SIZE + 4
    checker = panels[:, :PREVIEW_SIZE]
    assert lr.max() < 0.26 and np.percentile(checker, 99) > 0.9  # stretched, not dark
    assert np.abs(panels[:, PREVIEW_SIZE + 4:]).max() == 0  # identical images: no difference
    assert (band < 0.5).any() and (band > 0.99).mean() > 0.8  # dark label text on a white band
