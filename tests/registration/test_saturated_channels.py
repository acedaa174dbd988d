"""Pixels whose grey is wrong because one of its channels clipped (:func:`realsr_tools.registration.luma.
saturated_channels`)."""

from __future__ import annotations

import numpy as np

from realsr_tools.imaging import read_pixels
from realsr_tools.registration.luma import LUMA, saturated_channels


def test_a_clipped_channel_marks_its_pixels_in_every_format(data_dir):
    photo = read_pixels(data_dir / "exif_jpeg" / "digicam_corpus" / "olympus_c5050_PB180005.JPG")[:400, :600]
    for image in (photo, (photo.astype(np.uint16) * 257), photo.astype(np.float32) / 255):
        top = 1.0 if image.dtype.kind == "f" else np.iinfo(image.dtype).max
        brighter = np.clip(image.astype(np.float64) * 1.8, 0, top).astype(image.dtype)  # +0.85 EV, as in a capture
        mask = saturated_channels(brighter, LUMA)
        expected = (brighter.astype(np.float64) >= 0.99 * top).any(axis=-1)
        assert mask is not None and expected.any() and np.array_equal(mask, expected)
        # a channel the grey does not use does not count
        red_only = np.zeros_like(brighter)
        red_only[..., 0] = top
        assert saturated_channels(red_only, (0.0, 0.8, 0.2)) is None
        assert saturated_channels(red_only, LUMA).all()
    # nothing clipped: no mask
    assert saturated_channels(photo // 2, LUMA) is None
