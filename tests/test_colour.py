"""Primaries and re-encoding, against published values (the ICC sRGB profile's colorants, Adobe RGB (1998)'s
D50 matrix and its conversion to sRGB as colour-science references print them)."""

from __future__ import annotations

import numpy as np
import pytest

from realsr_tools import colour
from realsr_tools.registration.luma import linear

# Linear RGB -> XYZ (D50, Bradford): IEC 61966-2-1's ICC profile colorants; Adobe RGB (1998) (brucelindbloom.com).
SRGB_D50 = np.array([[0.4361, 0.3851, 0.1431], [0.2225, 0.7169, 0.0606], [0.0139, 0.0971, 0.7141]])
ADOBE_D50 = np.array([[0.6097, 0.2053, 0.1492], [0.3111, 0.6257, 0.0632], [0.0195, 0.0609, 0.7446]])
ADOBE_TO_SRGB = np.array([[1.3982832, -0.3982831, 0.0], [0.0, 1.0, 0.0], [0.0, -0.0429383, 1.0429383]])


def test_named_primaries_give_the_published_matrices():
    np.testing.assert_allclose(colour.rgb_to_pcs("srgb"), SRGB_D50, atol=2e-4)
    np.testing.assert_allclose(colour.rgb_to_pcs("adobe-rgb"), ADOBE_D50, atol=2e-4)
    np.testing.assert_allclose(colour.conversion("adobe-rgb", "srgb"), ADOBE_TO_SRGB, atol=2e-4)
    for name in colour.PRIMARIES:  # white is D50 in the connection space, whatever the space's own white
        np.testing.assert_allclose(colour.rgb_to_pcs(name).sum(axis=1), colour.PCS_WHITE, atol=1e-4)


def test_a_matrix_is_named_when_it_is_a_known_space_and_spelled_out_otherwise():
    assert colour.primaries_name(SRGB_D50) == "srgb" and colour.primaries_name(ADOBE_D50) == "adobe-rgb"
    assert colour.primaries_from_chromaticities((0.68, 0.32), (0.265, 0.69), (0.15, 0.06), colour.D65) == "display-p3"
    other = colour.primaries_name(SRGB_D50 * [1.0, 1.02, 0.98])
    assert other.startswith("xyz:0.4361,") and colour.rgb_to_pcs(other) is not None
    assert colour.rgb_to_pcs("xyz:" + ",".join(["0"] * 9)) is None  # degenerate colorants convert nothing
    assert colour.rgb_to_pcs("xyz:1,2") is None and colour.rgb_to_pcs("xyz:a,b") is None
    assert colour.conversion("unknown", "srgb") is None and colour.conversion("srgb", "srgb") is None


def test_re_encoding_keeps_the_light_and_a_grey_stays_grey():
    rng = np.random.default_rng(0)
    image = (rng.random((40, 30, 3)) * 65535).astype(np.uint16)
    adobe = colour.convert_encoding(image, ("srgb", "srgb"), ("power:2.19922", "adobe-rgb"))
    back = colour.convert_encoding(adobe, ("power:2.19922", "adobe-rgb"), ("srgb", "srgb"))
    np.testing.assert_allclose(back, image / 65535, atol=2e-4)  # every sRGB colour lies inside Adobe RGB
    light = linear(adobe, "power:2.19922") @ ADOBE_TO_SRGB.T
    np.testing.assert_allclose(light, linear(image, "srgb"), atol=2e-4)
    grey = np.full((4, 4, 3), 0.37, np.float32)
    converted = colour.convert_encoding(grey, ("srgb", "srgb"), ("bt709", "prophoto"))
    assert np.ptp(converted) < 1e-5


@pytest.mark.parametrize("shape", [(5,), (3, 7, 3)])
def test_encoding_inverts_decoding_for_every_curve(shape):
    from realsr_tools.registration.luma import encoded

    values = np.random.default_rng(1).random(shape).astype(np.float32)
    for curve in ("srgb", "bt709", "linear", "power:2.2", "para:2.4,0.9479,0.0521,0.0774,0.0404,0,0"):
        np.testing.assert_allclose(linear(encoded(linear(values, curve), curve), curve), linear(values, curve),
                                   atol=1e-5)
