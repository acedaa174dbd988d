from __future__ import annotations

import cv2
import numpy as np
import pytest

from realsr_tools.imaging import read_image
from realsr_tools.quality import residual_shift


@pytest.mark.parametrize("dx,dy", [(0.0, 0.0), (0.25, 0.0), (1.0, -0.5), (2.0, 1.0)])
def test_residual_shift_recovers_a_known_translation(data_dir, dx, dy):
    image = read_image(data_dir / "pairs" / "realsr_x4" / "HR" / "Canon_001_LR4.png")
    moved = cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[1::-1],
                           flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    result = residual_shift(image, moved)
    assert result.tiles > 20
    assert result.median == pytest.approx(np.hypot(dx, dy), abs=0.1)


def test_flat_images_report_no_measurement():
    flat = np.full((128, 128, 3), 0.5, np.float32)
    result = residual_shift(flat, flat)
    assert result.flat and result.median is None and result.total_tiles == 4
