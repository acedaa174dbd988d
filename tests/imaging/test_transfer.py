"""The transfer curve each capture file states: real camera JPEGs (sRGB, Adobe RGB by EXIF, embedded sRGB profiles)
and files the tests write with each way PNG, TIFF and JPEG state one."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from conftest import colorants, gamma_curve, icc_profile, rgb, with_png_chunks
from realsr_tools.imaging.transfer import ADOBE_RGB_GAMMA, MAX_PROFILE_BYTES, icc_curve, stated_curve
from realsr_tools.registration.luma import decoder, linear, srgb_to_linear

# Real camera JPEGs of ../shared/data (exiftool: ColorSpace, InteropIndex; ICC_Profile).
ADOBE_RGB_JPEGS = ["exif_jpeg/digicam_corpus/canon_5dmk3_K6A7942_5760.JPG",  # Uncalibrated, R03
                   "exif_jpeg/digicam_corpus/sony_slta57_DSC8833.JPG"]
SRGB_JPEGS = {"exif_jpeg/digicam_corpus/nikon_d90_DSC_0011.JPG": "EXIF colour space sRGB",
              "exif_jpeg/exif_samples/Canon_40D.jpg": "ICC profile 'sRGB IEC61966-2.1'"}  # a 1024-sample curve


def parametric(function: int, *params: float) -> bytes:
    return b"para\0\0\0\0" + struct.pack(">H2x", function) + b"".join(struct.pack(">i", round(p * 65536))
                                                                       for p in params)


def sampled(values: np.ndarray) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">I", len(values)) + np.round(values * 65535).astype(">u2").tobytes()


def with_jpeg_app2(jpeg: bytes, profile: bytes, size: int = 4000) -> bytes:
    """``jpeg`` with ``profile`` in APP2 ICC_PROFILE markers of at most ``size`` bytes each, after SOI."""
    parts = [profile[i:i + size] for i in range(0, len(profile), size)]
    markers = b"".join(b"\xff\xe2" + struct.pack(">H", 16 + len(part)) + b"ICC_PROFILE\0" + bytes([n + 1, len(parts)])
                       + part for n, part in enumerate(parts))
    return jpeg[:2] + markers + jpeg[2:]


@pytest.fixture(scope="module")
def png_bytes():
    return cv2.imencode(".png", np.full((8, 8, 3), 100, np.uint8))[1].tobytes()


@pytest.mark.parametrize("name", ADOBE_RGB_JPEGS)
def test_a_camera_jpeg_in_adobe_rgb_is_decoded_with_its_power(data_dir, name):
    stated = stated_curve(data_dir / name)
    assert stated.curve == f"power:{ADOBE_RGB_GAMMA:.6g}" and "R03" in stated.source and "Adobe RGB" in stated.source
    assert stated.primaries == "adobe-rgb"


@pytest.mark.parametrize("name", sorted(SRGB_JPEGS))
def test_camera_jpegs_in_srgb_say_so_and_a_png_that_states_nothing_is_srgb(data_dir, name):
    assert stated_curve(data_dir / name).curve == "srgb"
    assert stated_curve(data_dir / name).source == SRGB_JPEGS[name]
    assert stated_curve(data_dir / name).primaries == "srgb"  # Canon_40D's profile's colorants are sRGB's
    assert not stated_curve(data_dir / name).assumed
    plain = stated_curve(data_dir / "pairs" / "realsr_x4" / "HR" / "Canon_001_LR4.png")
    assert (plain.curve, plain.source, plain.primaries, plain.assumed) == ("srgb", "none stated: sRGB assumed",
                                                                           "srgb", True)


@pytest.mark.parametrize("chunks,curve,source", [
    ([(b"gAMA", struct.pack(">I", 45455))], "power:2.19998", "PNG gAMA 0.45455"),
    ([(b"gAMA", struct.pack(">I", 100000))], "linear", "PNG gAMA 1"),
    ([(b"gAMA", struct.pack(">I", 1))], "srgb", "PNG gAMA 1e-05: power:100000 is no usable curve: sRGB assumed"),
    ([(b"sRGB", b"\0"), (b"gAMA", struct.pack(">I", 45455))], "srgb", "PNG sRGB chunk"),  # sRGB overrides gAMA
    ([(b"cICP", bytes([1, 8, 0, 1])), (b"sRGB", b"\0")], "linear", "PNG cICP transfer characteristics 8"),
    ([(b"cICP", bytes([9, 16, 0, 1]))], "srgb", "PNG cICP transfer characteristics 16 (not a tone curve realsr "
                                                "decodes): sRGB assumed"),
    ([(b"iCCP", b"ProPhoto\0\0" + zlib.compress(icc_profile(rgb(gamma_curve(1.8)), "ProPhoto RGB"))),
      (b"gAMA", struct.pack(">I", 45455))], "power:1.80078", "PNG ICC profile 'ProPhoto' 'ProPhoto RGB'"),
    # a decompression bomb (20 kB that inflate past any profile) and a truncated profile: read no further
    ([(b"iCCP", b"bomb\0\0" + zlib.compress(b"\0" * (MAX_PROFILE_BYTES + 1), 9))], "srgb",
     f"PNG iCCP chunk inflates to more than {MAX_PROFILE_BYTES:,} bytes: sRGB assumed"),
    ([(b"iCCP", b"cut\0\0" + zlib.compress(icc_profile(rgb(gamma_curve(1.8))))[:-20])], "srgb",
     "PNG iCCP chunk could not be read (truncated): sRGB assumed"),
])
def test_each_way_a_png_states_its_curve(tmp_path, png_bytes, chunks, curve, source):
    path = tmp_path / "capture.png"
    path.write_bytes(with_png_chunks(png_bytes, *chunks))
    assert cv2.imread(str(path)) is not None  # still a valid PNG
    stated = stated_curve(path)
    assert (stated.curve, stated.source) == (curve, source)


SRGB_PARAMS = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)


@pytest.mark.parametrize("trc,curve", [
    (gamma_curve(ADOBE_RGB_GAMMA), "power:2.19922"),
    (b"curv\0\0\0\0" + struct.pack(">I", 0), "linear"),
    (parametric(0, 1.8), "power:1.8"),
    (parametric(3, *SRGB_PARAMS), "srgb"),  # ICC v4 sRGB, Display P3
    (parametric(3, 1 / 0.45, 1 / 1.099, 0.099 / 1.099, 1 / 4.5, 0.081), "bt709"),  # Rec. 2020
    (sampled(srgb_to_linear(np.linspace(0, 1, 1024))), "srgb"),  # ICC v2 sRGB
    (sampled(np.linspace(0, 1, 4096) ** 2.6), "power:2.6"),
])
def test_a_tiff_s_icc_profile_gives_its_tone_curve(tmp_path, trc, curve):
    import tifffile

    path = tmp_path / "capture.tif"
    tifffile.imwrite(path, np.zeros((16, 16, 3), np.uint16), photometric="rgb", compression="lzw",
                     iccprofile=icc_profile(rgb(trc)))
    stated = stated_curve(path)
    assert stated.curve == curve and stated.source == "ICC profile 'test profile'"


def test_a_parametric_curve_of_no_named_family_is_decoded_as_stated(tmp_path):
    stated = icc_curve(icc_profile(rgb(parametric(4, 2.0, 0.9, 0.1, 0.05, 0.1, 0.01, 0.002))))
    assert stated.curve.startswith("para:2,0.9")
    values = np.linspace(0, 1, 11)
    expected = np.where(values >= 0.1, (0.9 * values + 0.1) ** 2 + 0.01, 0.05 * values + 0.002)
    np.testing.assert_allclose(decoder(stated.curve)(values), expected, atol=1e-4)


@pytest.mark.parametrize("curves,why", [
    ({b"rTRC": gamma_curve(2.2), b"gTRC": gamma_curve(1.8), b"bTRC": gamma_curve(2.2)}, "a different tone curve per "
                                                                                       "channel"),
    (rgb(sampled(np.linspace(0, 1, 256) ** 3 * 0.5 + np.linspace(0, 1, 256) * 0.5)), "sampled tone curve is none"),
    ({}, "no tone curve (TRC) tag"),
    (rgb(parametric(7, 2.2)), "could not be read (parametric curve of function type 7)"),
    (rgb(gamma_curve(0)), "power:0 is no usable curve"),
])
def test_a_profile_whose_curve_realsr_cannot_decode_falls_back_to_srgb_and_says_why(curves, why):
    stated = icc_curve(icc_profile(curves))
    assert stated.curve == "srgb" and why in stated.source and "sRGB assumed" in stated.source
    assert icc_curve(b"not a profile").source.startswith("ICC profile could not be read")


@pytest.mark.parametrize("colour_space,index,curve", [
    (b"\xff\xff", b"R03", "power:2.19922"),  # DCF's Adobe RGB, as the 5D Mark III and SLT-A57 JPEGs write it
    (b"\x00\x02", b"R98", "power:2.19922"),  # the non-standard value 2 some software writes for Adobe RGB
    (b"\xff\xff", b"R98", "srgb"),  # uncalibrated without R03: nothing says which space
])
def test_the_exif_colour_space_of_a_real_jpeg_decides_its_curve(tmp_path, data_dir, colour_space, index, curve):
    source = (data_dir / "exif_jpeg" / "digicam_corpus" / "nikon_d90_DSC_0011.JPG").read_bytes()
    entry = b"\xa0\x01\x00\x03\x00\x00\x00\x01"  # big-endian EXIF ColorSpace, SHORT x 1; its value follows: 1
    assert source.count(entry + b"\x00\x01") == 1 and source.count(b"R98\0") == 1
    path = tmp_path / "edited.jpg"
    path.write_bytes(source.replace(entry + b"\x00\x01", entry + colour_space).replace(b"R98\0", index + b"\0"))
    assert stated_curve(path).curve == curve


def test_a_jpeg_s_icc_profile_in_several_markers_overrides_its_exif(tmp_path, data_dir):
    source = (data_dir / "exif_jpeg" / "digicam_corpus" / "nikon_d90_DSC_0011.JPG").read_bytes()  # EXIF: sRGB
    profile = icc_profile(rgb(gamma_curve(ADOBE_RGB_GAMMA)), "Adobe RGB (1998)") + b"\0" * 9000
    path = tmp_path / "adobe.jpg"
    path.write_bytes(with_jpeg_app2(source, profile))
    stated = stated_curve(path)
    assert (stated.curve, stated.source) == ("power:2.19922", "ICC profile 'Adobe RGB (1998)'")
    assert cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_8) is not None


def test_a_stated_power_decodes_to_its_linear_light():
    values = np.arange(256, dtype=np.uint8)
    np.testing.assert_allclose(linear(values, "power:2.2"), (values / 255.0) ** 2.2, atol=1e-6)
    np.testing.assert_allclose(linear(values.astype(np.float32) / 255, "power:1.8"), (values / 255.0) ** 1.8,
                               atol=1e-6)
    for bad in ("power", "power:0", "power:x", "para:1,2", "gamma2.2"):
        with pytest.raises(ValueError, match="unknown transfer curve"):
            decoder(bad)


# Adobe RGB (1998) and a wide space of no name, linear RGB -> XYZ D50 (brucelindbloom.com), as profile colorants.
ADOBE_D50 = np.array([[0.6097, 0.2053, 0.1492], [0.3111, 0.6257, 0.0632], [0.0195, 0.0609, 0.7446]])


def chrm(white, red, green, blue) -> tuple[bytes, bytes]:
    return b"cHRM", struct.pack(">8I", *(round(v * 100000) for xy in (white, red, green, blue) for v in xy))


@pytest.mark.parametrize("chunks,primaries", [
    ([(b"iCCP", b"Adobe\0\0" + zlib.compress(icc_profile(rgb(gamma_curve(2.2)) | colorants(ADOBE_D50))))],
     "adobe-rgb"),
    ([(b"cICP", bytes([9, 14, 0, 1]))], "bt2020"),
    ([(b"cICP", bytes([12, 13, 0, 1]))], "display-p3"),
    ([(b"gAMA", struct.pack(">I", 45455)), chrm((0.3127, 0.329), (0.68, 0.32), (0.265, 0.69), (0.15, 0.06))],
     "display-p3"),
    ([chrm((0.3127, 0.329), (0.64, 0.33), (0.3, 0.6), (0.15, 0.06))], "srgb"),
    ([chrm((0, 0), (0, 0), (0, 0), (0, 0))], "srgb"),  # no real colours: assumed sRGB
    ([(b"sRGB", b"\0"), chrm((0.3127, 0.329), (0.68, 0.32), (0.265, 0.69), (0.15, 0.06))], "srgb"),
])
def test_each_way_a_png_states_its_primaries(tmp_path, png_bytes, chunks, primaries):
    path = tmp_path / "capture.png"
    path.write_bytes(with_png_chunks(png_bytes, *chunks))
    assert stated_curve(path).primaries == primaries


def test_a_tiff_s_profile_colorants_are_its_primaries(tmp_path):
    import tifffile

    for name, matrix, expected in (("adobe", ADOBE_D50, "adobe-rgb"),
                                   ("wide", ADOBE_D50 * [1.1, 0.95, 0.9], "xyz:0.67067,0.19504,0.13428,")):
        path = tmp_path / f"{name}.tif"
        tifffile.imwrite(path, np.zeros((16, 16, 3), np.uint16), photometric="rgb",
                         iccprofile=icc_profile(rgb(gamma_curve(2.2)) | colorants(matrix)))
        assert stated_curve(path).primaries.startswith(expected)
