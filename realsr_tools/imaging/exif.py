"""Camera metadata (make, model, focal length, orientation) from JPEG, TIFF and RAW containers.

ExifRead parses the TIFF-structured containers (JPEG APP1, TIFF, CR2, NEF, ARW, ORF, RW2, DNG, PEF). Two RAW
containers it does not read are handled here: Canon CR3 (ISO base media; the EXIF lives in TIFF blocks inside
``CMT1``/``CMT2`` boxes) and Canon CRW (the CIFF heap). LibRaw's own metadata is the last resort for other RAW
formats (e.g. Kodak KDC keeps its focal length in maker notes).
"""

from __future__ import annotations

import io
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .raw import RAW_EXTENSIONS, is_raw

logging.getLogger("exifread").setLevel(logging.ERROR)


@dataclass(frozen=True)
class CaptureMetadata:
    """What scene grouping needs to know about one capture. ``None`` where the file does not say."""

    make: str | None = None
    model: str | None = None
    focal_mm: float | None = None
    orientation: int | None = None

    @property
    def camera(self) -> str | None:
        """``make model`` without the make written twice (``Canon Canon EOS 40D`` -> ``Canon EOS 40D``)."""
        if not self.model:
            return self.make
        if not self.make or self.model.lower().startswith(self.make.split()[0].lower()):
            return self.model
        return f"{self.make} {self.model}"


def read_metadata(path: str | os.PathLike) -> CaptureMetadata:
    """Read make, model, focal length (mm) and EXIF orientation (1-8) without decoding pixels."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); re-copy it from the camera card")
    suffix = path.suffix.lower()
    if suffix == ".cr3":
        meta = _cr3_metadata(path)
    elif suffix == ".crw":
        meta = _ciff_metadata(path)
    else:
        with open(path, "rb") as stream:
            meta = _tiff_metadata(stream)
    if meta.focal_mm is None and suffix in RAW_EXTENSIONS:
        meta = _merge(meta, _libraw_metadata(path))
    return meta


def read_orientation(path: str | os.PathLike) -> int | None:
    """EXIF orientation of a JPEG/PNG/TIFF (1 = upright), or ``None`` when absent. RAW: see module docstring."""
    if is_raw(path):
        return None
    with open(path, "rb") as stream:
        tags = _process(stream, stop_tag="Orientation")
    return _orientation(tags)


def _process(stream, **kwargs) -> dict:
    import exifread

    try:
        return exifread.process_file(stream, details=False, **kwargs)
    except Exception:  # ExifRead raises assorted errors on damaged EXIF; no EXIF is the honest answer then
        return {}


def _tiff_metadata(stream) -> CaptureMetadata:
    tags = _process(stream)
    focal = None
    if "EXIF FocalLength" in tags:
        focal = _positive(_first_value(tags["EXIF FocalLength"]))
    return CaptureMetadata(
        make=_text(tags.get("Image Make")),
        model=_text(tags.get("Image Model")),
        focal_mm=focal,
        orientation=_orientation(tags),
    )


def _first_value(tag) -> float | None:
    try:
        value = tag.values[0] if isinstance(tag.values, (list, tuple)) else tag.values
        if hasattr(value, "denominator") and value.denominator == 0:
            return None
        return float(value)
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


def _text(tag) -> str | None:
    if tag is None:
        return None
    text = str(tag.values if isinstance(tag.values, str) else tag).strip().strip("\x00").strip()
    return text or None


def _orientation(tags: dict) -> int | None:
    tag = tags.get("Image Orientation")
    if tag is None:
        return None
    value = _first_value(tag)
    return int(value) if value is not None and 1 <= value <= 8 else None


def _merge(first: CaptureMetadata, second: CaptureMetadata) -> CaptureMetadata:
    return CaptureMetadata(
        make=first.make or second.make,
        model=first.model or second.model,
        focal_mm=first.focal_mm or second.focal_mm,
        orientation=first.orientation or second.orientation,
    )


def _cr3_metadata(path: Path) -> CaptureMetadata:
    """Canon CR3: TIFF blocks in boxes CMT1 (IFD0: make, model, orientation) and CMT2 (EXIF IFD: focal length)."""
    data = path.read_bytes()[: 1 << 20]
    blocks = {}
    for name in (b"CMT1", b"CMT2"):
        at = data.find(name)
        if at >= 4:
            size = struct.unpack(">I", data[at - 4 : at])[0]
            blocks[name] = data[at + 4 : at - 4 + size]
    meta = CaptureMetadata()
    if b"CMT1" in blocks:
        meta = _merge(meta, _tiff_metadata(io.BytesIO(blocks[b"CMT1"])))
    if b"CMT2" in blocks:
        # CMT2 is a bare EXIF IFD; ExifRead reads its tags under the "Image" prefix.
        tags = _process(io.BytesIO(blocks[b"CMT2"]))
        tag = tags.get("Image FocalLength") or tags.get("EXIF FocalLength")
        if tag is not None:
            meta = _merge(meta, CaptureMetadata(focal_mm=_positive(_first_value(tag))))
    return meta


# CIFF tag ids without their storage bits (ExifTool lists them as 0x080a, 0x5029 and 0x102d).
_CIFF_MAKE_MODEL = 0x080A
_CIFF_FOCAL_LENGTH = 0x1029  # int16u[4]: focal type, focal length in FocalUnits, focal-plane size
_CIFF_CAMERA_SETTINGS = 0x102D  # int16s array; index 25 is FocalUnits (units per mm; 32 on PowerShots)


def _ciff_metadata(path: Path) -> CaptureMetadata:
    """Canon CRW (CIFF): walk the heap for the make/model string and the focal length (in FocalUnits)."""
    data = path.read_bytes()
    if data[:2] != b"II" or data[6:14] != b"HEAPCCDR":
        return CaptureMetadata()
    found: dict[int, bytes] = {}
    header_length = struct.unpack_from("<I", data, 2)[0]
    _walk_ciff(data, header_length, len(data), found, depth=0)
    make = model = None
    if _CIFF_MAKE_MODEL in found:
        parts = found[_CIFF_MAKE_MODEL].split(b"\x00")
        make = parts[0].decode("latin-1").strip() or None
        model = parts[1].decode("latin-1").strip() or None if len(parts) > 1 else None
    focal = None
    if _CIFF_FOCAL_LENGTH in found and len(found[_CIFF_FOCAL_LENGTH]) >= 4:
        focal_units = 1
        settings = found.get(_CIFF_CAMERA_SETTINGS, b"")
        if len(settings) >= 52:
            focal_units = struct.unpack_from("<h", settings, 50)[0] or 1
        focal = _positive(struct.unpack_from("<H", found[_CIFF_FOCAL_LENGTH], 2)[0] / focal_units)
    return CaptureMetadata(make=make, model=model, focal_mm=focal)


def _walk_ciff(data: bytes, start: int, end: int, found: dict[int, bytes], depth: int) -> None:
    if depth > 8 or end - start < 6 or end > len(data):
        return
    table = start + struct.unpack_from("<I", data, end - 4)[0]
    if not start <= table < end - 2:
        return
    count = struct.unpack_from("<H", data, table)[0]
    for entry in range(count):
        at = table + 2 + 10 * entry
        if at + 10 > end:
            return
        tag, size, offset = struct.unpack_from("<HII", data, at)
        kind = tag & 0x3800
        if tag & 0xC000 == 0x4000:  # value stored in the entry itself
            found.setdefault(tag & 0x3FFF, data[at + 2 : at + 10])
        elif kind in (0x2800, 0x3000):  # sub-heap
            _walk_ciff(data, start + offset, start + offset + size, found, depth + 1)
        elif start + offset + size <= end:
            found.setdefault(tag & 0x3FFF, data[start + offset : start + offset + size])


def _libraw_metadata(path: Path) -> CaptureMetadata:
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            return CaptureMetadata(focal_mm=_positive(float(raw.other.focal_length)))
    except (rawpy.LibRawError, AttributeError):
        return CaptureMetadata()
