from __future__ import annotations

import shutil

import numpy as np
import pytest

from realsr_tools import imaging as io
from realsr_tools.errors import InputError

DECODABLE = {
    # name: (height, width) as rawpy/LibRaw renders it (../shared/data/README.md)
    "canon_powershot_g2_CRW_0304.CRW": (1720, 2312),
    "canon_powershot_s40_CRW_0101.CRW": (1720, 2312),
    "kodak_dc120_P003908.KDC": (976, 1301),
    "canon_eos550d_magiclantern_colorchart.dng": (1156, 1734),
    "blackmagic_pocket4k.dng": (2176, 4128),
    "nikon_coolscan_uncompressed.nef": (593, 869),
}


@pytest.mark.parametrize("name", sorted(DECODABLE))
def test_every_decodable_raw_renders_to_the_documented_convention(data_dir, name):
    import rawpy

    path = data_dir / "raw" / "decodable" / name
    image = io.read_image(path)
    assert image.shape == (*DECODABLE[name], 3)
    assert image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.std() > 0.01  # a real picture, not a flat frame
    # The rendering the README documents, written out here and passed to rawpy directly: camera white balance, no
    # auto-brightness, 16 bits, sRGB primaries, BT.709 gamma (dcraw's 2.222 / 4.5), AHD demosaicking.
    with rawpy.imread(str(path)) as raw:
        documented = raw.postprocess(use_camera_wb=True, use_auto_wb=False, no_auto_bright=True, output_bps=16,
                                     gamma=(2.222, 4.5), output_color=rawpy.ColorSpace.sRGB,
                                     demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD)
    np.testing.assert_array_equal(io.read_pixels(path), documented)


def test_raw_rendering_is_deterministic_and_linear_option_is_darker(data_dir):
    path = data_dir / "raw" / "decodable" / "canon_powershot_g2_CRW_0304.CRW"
    first, second = io.read_pixels(path), io.read_pixels(path)
    assert first.dtype == np.uint16
    np.testing.assert_array_equal(first, second)
    linear = io.read_pixels(path, raw=io.RawRendering(gamma="linear"))
    assert linear.mean() < first.mean()  # gamma lifts mid-tones


@pytest.mark.parametrize("name", ["exiftool_Panasonic.rw2", "exiftool_DNG.dng", "exiftool_CanonRaw.cr2",
                                  "exiftool_CanonRaw.cr3", "exiftool_CanonRaw.crw", "exiftool_Nikon.nef"])
def test_raw_without_real_image_data_is_one_clear_error(data_dir, name):
    path = data_dir / "raw" / "metadata_only" / name
    with pytest.raises(InputError) as info:
        io.read_image(path)
    message = str(info.value)
    assert name in message and "\n" not in message


def test_exif_orientation_is_applied(data_dir):
    # Rotated 90 CW per EXIF; stored 2880x1920 landscape, upright it is portrait.
    image = io.read_pixels(data_dir / "exif_jpeg" / "digicam_corpus" / "canon_5dmk3_K6A7944_2880.JPG")
    assert image.shape[:2] == (2880, 1920)
    upright = io.read_pixels(data_dir / "exif_jpeg" / "digicam_corpus" / "canon_5dmk3_K6A7946_720.JPG")
    assert upright.shape[:2] == (720, 480)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_the_exif_definition(orientation):
    stored = np.arange(6).reshape(2, 3)
    upright = io.apply_orientation(stored, orientation)
    # EXIF: the stored row 0 / column 0 lie at these sides of the upright view (TIFF 6.0, tag 274).
    expected = {
        1: stored, 2: np.fliplr(stored), 3: np.rot90(stored, 2), 4: np.flipud(stored),
        5: stored.T, 6: np.rot90(stored, -1), 7: np.rot90(stored, 2).T, 8: np.rot90(stored, 1),
    }[orientation]
    np.testing.assert_array_equal(upright, expected)


@pytest.mark.parametrize("bit_depth,suffix", [(8, ".png"), (16, ".png"), (8, ".tif"), (16, ".tiff"), (8, ".jpg")])
def test_write_then_read_round_trips(data_dir, tmp_path, bit_depth, suffix):
    photo = io.read_image(data_dir / "photos" / "pypi_scikit-image_coffee.png")[:64, :80]
    path = io.write_image(tmp_path / f"x{suffix}", photo, bit_depth=bit_depth)
    back = io.read_pixels(path)
    assert back.dtype == (np.uint8 if bit_depth == 8 else np.uint16)
    expected = io.to_integer(photo, bit_depth).astype(int)
    if suffix == ".jpg":  # lossy: close on average, not bit-exact
        assert np.abs(back.astype(int) - expected).mean() < 3
    else:
        np.testing.assert_array_equal(back, expected)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left behind


def test_grey_and_rgba_become_rgb(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "g.png"), np.full((5, 7), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.full((5, 7, 4), 100, np.uint8))
    assert io.read_pixels(tmp_path / "g.png").shape == (5, 7, 3)
    assert io.read_pixels(tmp_path / "a.png").shape == (5, 7, 3)


def test_bad_files_give_one_line_errors_naming_the_file(data_dir, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.touch()
    jpeg = (data_dir / "photos" / "skimage_UNIS_EV0.jpg").read_bytes()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    png = (data_dir / "photos" / "pypi_scikit-image_coffee.png").read_bytes()
    truncated_png = tmp_path / "cut.png"
    truncated_png.write_bytes(png[: len(png) // 2])
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello" * 1000)
    unsupported = tmp_path / "clip.mov"
    unsupported.write_bytes(b"\0" * 100)
    fake_raw = tmp_path / "fake.NEF"
    fake_raw.write_bytes(b"\1" * 5000)
    for bad in (empty, truncated, truncated_png, not_image, unsupported, fake_raw, tmp_path / "missing.png"):
        with pytest.raises(InputError) as info:
            io.read_image(bad)
        assert bad.name in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_inputs_are_never_modified(data_dir, tmp_path):
    source = data_dir / "photos" / "pypi_scikit-image_coffee.png"
    copy = tmp_path / "coffee.png"
    shutil.copy(source, copy)
    before = copy.stat().st_mtime_ns, copy.read_bytes()
    io.read_image(copy)
    assert (copy.stat().st_mtime_ns, copy.read_bytes()) == before


def test_written_files_get_ordinary_permissions(tmp_path):
    path = io.write_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives under this process's umask
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == io.FILE_MODE


# Every compression cameras and raw converters write into TIFF (tifffile writes them with imagecodecs): 16-bit LZW
# is OpenCV's default TIFF output, Deflate (ZIP) with the horizontal predictor is Lightroom's / RawTherapee's,
# PackBits comes from older cameras, JPEG-in-TIFF from scanners and some in-camera TIFFs (8 bit only).
TIFF_CODECS = [("none", None), ("lzw", None), ("lzw", "horizontal"), ("zlib", None), ("zlib", "horizontal"),
               ("adobe_deflate", None), ("packbits", None), ("jpeg", None)]


TIFF_CASES = [(codec, predictor, bits, layout) for codec, predictor in TIFF_CODECS for bits in (8, 16)
              for layout in ("striped", "tiled", "planar")
              if codec != "jpeg" or (bits == 8 and layout != "planar")]  # JPEG-in-TIFF: 8-bit chunky only


@pytest.mark.parametrize("compression,predictor,bit_depth,layout", TIFF_CASES)
def test_every_tiff_compression_reads_back(data_dir, tmp_path, compression, predictor, bit_depth, layout):
    import tifffile

    photo = io.read_image(data_dir / "photos" / "pypi_scikit-image_coffee.png")[:96, :130]
    expected = io.to_integer(photo, bit_depth)
    data = np.moveaxis(expected, -1, 0) if layout == "planar" else expected
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, data, photometric="rgb", compression=None if compression == "none" else compression,
                     predictor=predictor, tile=(32, 48) if layout == "tiled" else None,
                     rowsperstrip=None if layout == "tiled" else 16,
                     planarconfig="separate" if layout == "planar" else "contig")
    with tifffile.TiffFile(path) as tif:  # the file really is what the test asks for
        page = tif.pages[0]
        assert page.compression.name.lower() == {"none": "none", "zlib": "adobe_deflate"}.get(compression,
                                                                                          compression)
        assert page.is_tiled == (layout == "tiled")
        assert page.bitspersample == bit_depth
    back = io.read_pixels(path)
    assert back.shape == expected.shape and back.dtype == expected.dtype
    if compression == "jpeg":  # lossy
        assert np.abs(back.astype(int) - expected.astype(int)).mean() < 3
    else:
        np.testing.assert_array_equal(back, expected)


def test_a_tiff_whose_codec_is_missing_is_one_clear_line(tmp_path, monkeypatch):
    import tifffile
    from tifffile import tifffile as implementation

    path = tmp_path / "lzw16.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint16), photometric="rgb", compression="lzw")
    # As without imagecodecs installed: tifffile's codec table finds no LZW decoder.
    monkeypatch.setattr(implementation, "imagecodecs", object())
    monkeypatch.setattr(implementation.TIFF.DECOMPRESSORS, "_codecs", {1: lambda data, *a, **k: data})
    with pytest.raises(InputError) as info:
        io.read_pixels(path)
    message = str(info.value)
    assert "lzw16.tif" in message and "LZW" in message and "pip install imagecodecs" in message
    assert "\n" not in message


def test_not_an_image_empty_and_links_are_told_apart_from_a_truncated_file(tmp_path):
    # issue 12 case 10: a text file, a link to /etc/passwd and a zero-byte file were all "PNG is truncated".
    from realsr_tools.errors import InputError

    text = tmp_path / "notes.png"
    text.write_text("hello\n")
    link = tmp_path / "link.png"
    link.symlink_to("/etc/passwd")
    empty = tmp_path / "empty.png"
    empty.touch()
    jpeg_text = tmp_path / "notes.jpg"
    jpeg_text.write_text("hello\n")
    expected = {text: "not a PNG file", link: "/etc/passwd", empty: "empty (0 bytes)", jpeg_text: "not a JPEG file"}
    for path, says in expected.items():
        for check in (io.check_complete, io.read_pixels):
            with pytest.raises(InputError) as caught:
                check(path)
            message = str(caught.value)
            assert says in message and str(path) in message and "truncated" not in message, message
