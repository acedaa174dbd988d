"""Photometric correction of the LR towards the HR: recovery of a known gain/offset/vignetting on a real photo."""

from __future__ import annotations

import numpy as np
import pytest

from realsr_tools.imaging import read_image
from realsr_tools.photometric import PhotometricModel, fit_photometric


@pytest.fixture(scope="module")
def photo(data_dir):
    import cv2

    image = read_image(data_dir / "photos" / "kodak_kodim03.png")
    return cv2.resize(image, (384, 256), interpolation=cv2.INTER_AREA)


def _known_model(shape):
    """White balance + exposure gains, an offset, and a radial vignetting fall-off of 20 % at the corners."""
    h, w = shape[:2]
    u = np.linspace(-1, 1, w)[None, :]
    v = np.linspace(-1, 1, h)[:, None]
    vignette = 1 - 0.1 * (u * u + v * v)
    gains = np.array([1.15, 0.95, 0.85])
    offsets = np.array([0.02, -0.01, 0.0])
    return vignette, gains, offsets


def test_fit_recovers_gain_offset_and_vignetting(photo):
    vignette, gains, offsets = _known_model(photo.shape)
    reference = (photo * vignette[..., None] * gains + offsets).astype(np.float32)
    model = fit_photometric(photo, reference)
    corrected = model.apply(photo)
    unclipped = np.all((reference > 0.02) & (reference < 0.98), axis=2)
    error = np.abs(corrected - reference)[unclipped]
    assert np.percentile(error, 99) < 0.01  # 2.5 grey levels out of 255
    # The quadratic surface is the vignetting: gain at the centre and at a corner, per channel.
    centre = [model.gain_map(photo.shape[:2], c)[128, 192] for c in range(3)]
    corner = [model.gain_map(photo.shape[:2], c)[0, 0] for c in range(3)]
    np.testing.assert_allclose(centre, gains * 1.0, rtol=0.02)
    np.testing.assert_allclose(corner, gains * 0.8, rtol=0.03)
    np.testing.assert_allclose(model.offset, offsets, atol=0.01)


def test_fit_is_robust_to_a_moving_object_and_identity_on_equal_images(photo):
    vignette, gains, offsets = _known_model(photo.shape)
    reference = (photo * gains + offsets).astype(np.float32)
    reference[40:120, 60:160] = 1.0 - reference[40:120, 60:160]  # something moved between the shots
    model = fit_photometric(photo, reference)
    np.testing.assert_allclose(model.gain[:, 0], gains, rtol=0.03)
    same = fit_photometric(photo, photo)
    assert np.allclose(same.apply(photo), photo, atol=2e-3)


def test_identity_model_and_record():
    identity = PhotometricModel.identity()
    image = np.random.default_rng(0).random((5, 7, 3), dtype=np.float32)
    assert np.array_equal(identity.apply(image), image)
    record = identity.to_dict()
    assert record["terms"] == ["1", "u", "v", "u^2", "uv", "v^2"] and record["offset"] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="differ in shape"):
        fit_photometric(image, image[:4])
