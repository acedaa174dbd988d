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


def test_a_relative_fit_recovers_vignetting_in_linear_light_at_any_level(photo):
    """In linear light a photograph's pixels span decades of light: with residuals in the images' units the bright
    ones dominate, the Huber weights discount them first and the penalty holds the surface towards flat, the more
    so the darker the window; residuals relative to the reference (plus LINEAR_FLOOR) weigh every pixel by its
    tone (measured, 30 % corner fall-off, corner gain: relative 0.704 at full light and at a fifth of it; absolute
    0.76-0.79 and 0.79-0.85)."""
    from realsr_tools.photometric import LINEAR_FLOOR
    from realsr_tools.registration.luma import linear

    light = linear(photo, "srgb")
    h, w = light.shape[:2]
    u = np.linspace(-1, 1, w)[None, :]
    v = np.linspace(-1, 1, h)[:, None]
    vignette = 1 - 0.15 * (u * u + v * v)
    for level in (1.0, 0.2):
        dark = (light * level).astype(np.float32)
        reference = (dark * vignette[..., None]).astype(np.float32)
        model = fit_photometric(dark, reference, relative=LINEAR_FLOOR)
        corner = [model.gain_map((h, w), c)[0, 0] for c in range(3)]
        np.testing.assert_allclose(corner, 0.7, rtol=0.02, err_msg=f"at {level} of the light")


@pytest.mark.parametrize("name", ["kodak_kodim03.png", "skimage_eagle.png"])
def test_a_relative_fit_in_linear_light_leaves_the_verifier_no_displacement(data_dir, name):
    """What align's verifier compares: an exact x4 pair (the LR the HR's area average, so no displacement anywhere),
    the LR 1.3 EV darker than the HR, the HR vignetted by 30 % at its corners, both encoded with BT.709's curve and
    decoded with it. Matched in linear light by a relative fit, the tiles read no displacement; matched on the
    encoded values, as the written LR is, the curve's offset turns the vignetting's gain into a varying offset
    and the tiles read one (measured, median tile: 0.0007 / 0.0003 px against 0.029 / 0.028 px)."""
    import cv2

    from realsr_tools.photometric import LINEAR_FLOOR
    from realsr_tools.registration.luma import encoded, linear, linear_area_downscale
    from realsr_tools.verification import measure_tiles

    scale = 4
    light = linear(read_image(data_dir / "photos" / name), "srgb") * 0.3
    h, w = light.shape[0] // scale, light.shape[1] // scale
    light = light[:h * scale, :w * scale]
    yy, xx = np.mgrid[0:h * scale, 0:w * scale].astype(np.float32)
    r2 = ((xx - xx.mean()) ** 2 + (yy - yy.mean()) ** 2) / ((xx.max() / 2) ** 2 + (yy.max() / 2) ** 2)
    hr = encoded(np.clip(light * (1 - 0.3 * r2)[..., None] * 2 ** 0.7, 0, 1), "bt709")
    lr = encoded(np.clip(cv2.resize(light, (w, h), interpolation=cv2.INTER_AREA) * 2 ** -0.6, 0, 1), "bt709")
    hr_light = linear_area_downscale(hr, "bt709", scale)

    def median_displacement(lr_light):
        tiles, _, _ = measure_tiles(lr_light, hr_light, linear_light=True)
        measured = [np.hypot(t.dx, t.dy) for t in tiles if t.kind == "measured"]
        assert len(measured) > 40
        return float(np.median(measured))

    lr_light = linear(lr, "bt709")
    matched = fit_photometric(lr_light, hr_light, relative=LINEAR_FLOOR).apply(lr_light)
    assert median_displacement(np.clip(matched, 0, 1)) < 0.005
    hr_on_lr = cv2.resize(hr, (w, h), interpolation=cv2.INTER_AREA)
    written = np.clip(fit_photometric(lr, hr_on_lr).apply(lr), 0, 1)
    assert median_displacement(linear(written, "bt709")) > 0.015
