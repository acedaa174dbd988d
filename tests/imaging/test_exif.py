from __future__ import annotations

import pytest

from realsr_tools.errors import InputError
from realsr_tools.imaging.exif import read_metadata

# Expected values from exiftool, as listed in ../shared/data/README.md.
METADATA_ONLY = {
    "exiftool_CanonRaw.cr2": ("Canon", "Canon EOS 350D DIGITAL", 55.0),
    "exiftool_CanonRaw.cr3": ("Canon", "Canon EOS M50", 15.0),
    "exiftool_CanonRaw.crw": ("Canon", "Canon EOS DIGITAL REBEL", 24.0),
    "exiftool_Nikon.nef": ("NIKON CORPORATION", "NIKON D70", 18.0),
    "exiftool_Panasonic.rw2": ("Panasonic", "DMC-LX3", 5.1),
    "exiftool_DNG.dng": ("Canon", "Canon EOS 350D DIGITAL", 55.0),
}


@pytest.mark.parametrize("name", sorted(METADATA_ONLY))
def test_raw_containers_report_make_model_and_focal_length(data_dir, name):
    make, model, focal = METADATA_ONLY[name]
    meta = read_metadata(data_dir / "raw" / "metadata_only" / name)
    assert (meta.make, meta.model) == (make, model)
    assert meta.focal_mm == pytest.approx(focal, abs=1e-6)


@pytest.mark.parametrize("name,focal", [
    ("canon_powershot_g2_CRW_0304.CRW", 7.0),
    ("canon_powershot_s40_CRW_0101.CRW", 7.09375),
    ("kodak_dc120_P003908.KDC", 37.0),
])
def test_decodable_raw_focal_lengths(data_dir, name, focal):
    assert read_metadata(data_dir / "raw" / "decodable" / name).focal_mm == pytest.approx(focal)


# (file, camera, focal mm, orientation) per exiftool.
JPEGS = [
    ("digicam_corpus/canon_5dmk3_K6A7942_5760.JPG", "Canon EOS 5D Mark III", 135.0, 1),
    ("digicam_corpus/canon_5dmk3_K6A7944_2880.JPG", "Canon EOS 5D Mark III", 135.0, 6),
    ("digicam_corpus/canon_5dmk3_K6A7945_1920.JPG", "Canon EOS 5D Mark III", 135.0, 8),
    ("digicam_corpus/nikon_d3100_DSC_0008.JPG", "NIKON D3100", 24.0, 8),
    ("digicam_corpus/olympus_c5050_PB180005.JPG", "OLYMPUS OPTICAL CO.,LTD C5050Z", 7.1, 1),
    ("digicam_corpus/sony_slta57_DSC8833.JPG", "SONY SLT-A57", 50.0, 1),
    ("exif_samples/Panasonic_DMC-FZ30.jpg", "Panasonic DMC-FZ30", 14.1, 1),
    ("exif_samples/Olympus_C8080WZ.jpg", "OLYMPUS CORPORATION C8080WZ", 15.8, 1),
    ("exif_samples/Nikon_D70.jpg", "NIKON D70", 100.0, 1),
    ("exif_samples/canon_hdr_YES.jpg", "Canon PowerShot SX60 HS", 24005 / 421, 6),
]


@pytest.mark.parametrize("name,camera,focal,orientation", JPEGS)
def test_jpeg_exif(data_dir, name, camera, focal, orientation):
    meta = read_metadata(data_dir / "exif_jpeg" / name)
    assert meta.camera == camera
    assert meta.focal_mm == pytest.approx(focal)
    assert meta.orientation == orientation


def test_every_exif_jpeg_has_a_focal_length(data_dir):
    for path in sorted((data_dir / "exif_jpeg").rglob("*.[jJ][pP][gG]")):
        assert read_metadata(path).focal_mm > 0, path


def test_png_without_exif_reports_nothing(data_dir):
    meta = read_metadata(data_dir / "photos" / "pypi_scikit-image_coffee.png")
    assert meta.focal_mm is None and meta.camera is None


def test_missing_and_empty_files(tmp_path):
    empty = tmp_path / "a.CR2"
    empty.touch()
    for bad in (empty, tmp_path / "none.jpg"):
        with pytest.raises(InputError, match=bad.name):
            read_metadata(bad)
