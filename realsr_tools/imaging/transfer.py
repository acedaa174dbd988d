"""The transfer curve a JPEG, PNG or TIFF capture states it was encoded with.

Registration compares linear light, so each capture is decoded with its own curve. Decoded with the wrong one, two
exposures of a scene are no longer a gain apart, and the edges of a dark frame move: a chart pair encoded with a pure
1/2.2 power and decoded as sRGB registers 0.36 LR px off, 0.18 with its own curve (docs/align.md, "Transfer
curves"). Cameras set to Adobe RGB write JPEGs without an ICC profile whose EXIF says so (DCF: colour space
"uncalibrated", interoperability index R03); raw converters embed a profile. What a file states, in the order the
formats rank it: an ICC profile's tone curve (a PNG's cICP chunk before it), a PNG's sRGB then gAMA chunk, the EXIF
colour space. A file that states none is sRGB, the convention of every format here, unless two exposures of its
scene show another (:func:`realsr_tools.registration.curves.curve_from_exposures`).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..registration.luma import DECODE, decoder
from .files import PNG_SIGNATURE

ADOBE_RGB_GAMMA = 563 / 256  # Adobe RGB (1998) Color Image Encoding, 4.3.4.2: 2 51/256
# H.273 transfer characteristics (a PNG cICP chunk) with a curve realsr decodes; PQ and HLG are not display-referred
# tone curves of a still capture and are left to the sRGB assumption, said so in the record.
CICP_CURVES = {1: "bt709", 6: "bt709", 14: "bt709", 15: "bt709", 13: "srgb", 8: "linear", 4: "power:2.2",
               5: "power:2.8"}
CICP_PRIMARIES = {1: "srgb", 9: "bt2020", 12: "display-p3"}  # H.273 colour primaries
# A sampled ICC curve is taken as a named one when no sample is further from it than this (of full scale): 1/4 of
# an 8-bit step, below anything a 16-bit quantisation of the named curve leaves.
TABLE_TOLERANCE = 1e-3
# The most a PNG iCCP chunk is inflated to: what JPEG's 255 APP2 markers of 65,519 bytes can carry, far above any
# matrix/TRC profile (a few kB; LUT profiles reach a few MB). A chunk that inflates further (a decompression bomb,
# a few kB on disk) is not read, so a crafted capture cannot take align's memory.
MAX_PROFILE_BYTES = 255 * 65519


@dataclass(frozen=True)
class StatedCurve:
    """A capture's transfer curve (a :func:`realsr_tools.registration.luma.decoder` name), where it came from, and
    the primaries the file states beside it (a :mod:`realsr_tools.colour` name; sRGB's where it states none)."""

    curve: str
    source: str
    primaries: str = "srgb"
    assumed: bool = False  # the file states no curve realsr can use: sRGB is an assumption (registration.curves)


def stated_curve(path: str | os.PathLike) -> StatedCurve:
    """The curve ``path`` (JPEG, PNG or TIFF) states, else sRGB with ``source`` saying none was stated (or why the
    stated one could not be used)."""
    path = Path(path)
    with open(path, "rb") as stream:
        head = stream.read(16)
        stream.seek(0)
        if head.startswith(PNG_SIGNATURE):
            return _png_curve(stream)
        if head.startswith(b"\xff\xd8"):
            stated = _jpeg_profile(stream)
        elif head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            stated = _tiff_profile(path)
        else:
            return _assumed("not a JPEG, PNG or TIFF file")
        if stated is not None:
            return stated
        stream.seek(0)
        return _exif_curve(stream)


def icc_curve(profile: bytes, name: str = "ICC profile") -> StatedCurve:
    """The tone curve of an RGB or grey ICC profile (its red, green and blue TRC tags, which must agree, or its grey
    one), as a curve name."""
    try:
        tags = _icc_tags(profile)
        description = _icc_description(tags.get(b"desc", b""))
        label = f"{name} {description!r}" if description else name
        curves = [tags[key] for key in (b"rTRC", b"gTRC", b"bTRC") if key in tags] or \
            [tags[key] for key in (b"kTRC",) if key in tags]
        if not curves:
            return _assumed(f"{label} has no tone curve (TRC) tag, only lookup tables")
        names = {_trc_curve(curve) for curve in curves}
        primaries = _icc_primaries(tags)
    except (struct.error, IndexError, ValueError) as exc:
        return _assumed(f"{name} could not be read ({exc})")
    if len(names) > 1:
        return _assumed(f"{label} has a different tone curve per channel", primaries)
    curve = names.pop()
    if curve is None:
        return _assumed(f"{label}: its sampled tone curve is none realsr decodes", primaries)
    return _decodable(curve, label, primaries)


def _png_curve(stream) -> StatedCurve:
    """PNG 3rd edition, 4.3: cICP over iCCP over sRGB over gAMA; all precede the image data."""
    stream.read(8)
    found: dict[bytes, bytes] = {}
    while True:
        header = stream.read(8)
        if len(header) < 8:
            break
        length, kind = struct.unpack(">I4s", header)
        if kind in (b"IDAT", b"IEND"):
            break
        if kind in (b"cICP", b"iCCP", b"sRGB", b"gAMA", b"cHRM"):
            found[kind] = stream.read(length)
            stream.seek(4, os.SEEK_CUR)
        else:
            stream.seek(length + 4, os.SEEK_CUR)
    if b"cICP" in found and len(found[b"cICP"]) >= 2:
        primaries, code = CICP_PRIMARIES.get(found[b"cICP"][0], "srgb"), found[b"cICP"][1]
        if code in CICP_CURVES:
            return StatedCurve(CICP_CURVES[code], f"PNG cICP transfer characteristics {code}", primaries)
        return StatedCurve("srgb", f"PNG cICP transfer characteristics {code} (not a tone curve realsr decodes): "
                                   "sRGB assumed", primaries)
    if b"iCCP" in found:
        data = found[b"iCCP"]
        name, _, rest = data.partition(b"\0")
        inflate = zlib.decompressobj()
        try:
            profile = inflate.decompress(rest[1:], MAX_PROFILE_BYTES)
        except zlib.error as exc:
            return _assumed(f"PNG iCCP chunk could not be read ({exc})")
        if not inflate.eof:
            why = (f"inflates to more than {MAX_PROFILE_BYTES:,} bytes" if len(profile) == MAX_PROFILE_BYTES
                   else "could not be read (truncated)")
            return _assumed(f"PNG iCCP chunk {why}")
        return icc_curve(profile, f"PNG ICC profile {name.decode('latin-1')!r}")
    if b"sRGB" in found:
        return StatedCurve("srgb", "PNG sRGB chunk")
    primaries = _chrm_primaries(found.get(b"cHRM", b""))
    if b"gAMA" in found and len(found[b"gAMA"]) == 4:
        gamma = struct.unpack(">I", found[b"gAMA"])[0] / 100000
        if gamma > 0:
            return _decodable(_power(1 / gamma), f"PNG gAMA {gamma:g}", primaries)
    return _assumed("none stated", primaries)


def _chrm_primaries(data: bytes) -> str:
    """A PNG cHRM chunk's primaries (white, red, green, blue CIE xy, each times 100,000); sRGB's without one."""
    from ..colour import primaries_from_chromaticities

    if len(data) != 32:
        return "srgb"
    values = np.array(struct.unpack(">8I", data)) / 100000
    white, red, green, blue = values.reshape(4, 2)
    if (values[1::2] <= 0).any() or (values.reshape(4, 2).sum(axis=1) > 1).any():
        return "srgb"  # not chromaticities of real colours
    try:
        return primaries_from_chromaticities(red, green, blue, white)
    except np.linalg.LinAlgError:
        return "srgb"


def _icc_primaries(tags: dict[bytes, bytes]) -> str:
    """An RGB profile's colorants (its rXYZ, gXYZ, bXYZ tags: XYZ D50 of each primary); sRGB's without them."""
    from ..colour import primaries_name

    if not all(key in tags for key in (b"rXYZ", b"gXYZ", b"bXYZ")):
        return "srgb"
    columns = [np.array(struct.unpack(">3i", tags[key][8:20])) / 65536 for key in (b"rXYZ", b"gXYZ", b"bXYZ")]
    return primaries_name(np.stack(columns, axis=1))


def _jpeg_profile(stream) -> StatedCurve | None:
    """The ICC profile of JPEG APP2 ``ICC_PROFILE`` markers (ICC.1:2010, B.4: chunks in sequence order)."""
    chunks: dict[int, bytes] = {}
    if stream.read(2) != b"\xff\xd8":
        return None
    while True:
        marker = stream.read(4)
        if len(marker) < 4 or marker[0] != 0xFF or marker[1] in (0xDA, 0xD9):
            break
        length = struct.unpack(">H", marker[2:])[0]
        if marker[1] == 0xE2 and length >= 16:
            data = stream.read(length - 2)
            if data.startswith(b"ICC_PROFILE\0") and len(data) > 14:
                chunks[data[12]] = data[14:]
        else:
            stream.seek(length - 2, os.SEEK_CUR)
    if not chunks:
        return None
    return icc_curve(b"".join(chunks[key] for key in sorted(chunks)), "ICC profile")


def _tiff_profile(path: Path) -> StatedCurve | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            tag = tiff.pages.first.tags.get(34675)  # InterColorProfile
            profile = None if tag is None else bytes(tag.value)
    except (tifffile.TiffFileError, OSError, ValueError):
        return None
    return None if profile is None else icc_curve(profile, "ICC profile")


def _exif_curve(stream) -> StatedCurve:
    from .exif import _process

    tags = _process(stream)
    space = tags.get("EXIF ColorSpace")
    index = str(tags.get("Interoperability InteroperabilityIndex", "")).strip()
    values = getattr(space, "values", None) or [None]
    if values[0] == 1:
        return StatedCurve("srgb", "EXIF colour space sRGB")
    if values[0] == 0xFFFF and index == "R03":
        return StatedCurve(_power(ADOBE_RGB_GAMMA), "EXIF colour space uncalibrated, interoperability index R03 "
                                                    "(Adobe RGB)", "adobe-rgb")
    if values[0] == 2:  # not in the EXIF standard; some cameras and editors write it for Adobe RGB (exiftool)
        return StatedCurve(_power(ADOBE_RGB_GAMMA), "EXIF colour space 2 (Adobe RGB)", "adobe-rgb")
    if values[0] == 0xFFFF:
        return _assumed("EXIF colour space uncalibrated, no profile")
    return _assumed("none stated")


def _assumed(why: str, primaries: str = "srgb") -> StatedCurve:
    """sRGB, for a file that states no curve realsr can use (``why``)."""
    return StatedCurve("srgb", f"{why}: sRGB assumed", primaries, assumed=True)


def _decodable(curve: str, source: str, primaries: str = "srgb") -> StatedCurve:
    """``curve`` as stated, unless it is out of what realsr decodes (a gAMA of 0.00001, a gamma of 0)."""
    try:
        decoder(curve)
    except ValueError:
        return _assumed(f"{source}: {curve} is no usable curve", primaries)
    return StatedCurve(curve, source, primaries)


def _power(exponent: float) -> str:
    return "linear" if abs(exponent - 1) < 1e-4 else f"power:{exponent:.6g}"


def _icc_tags(profile: bytes) -> dict[bytes, bytes]:
    if len(profile) < 132 or profile[36:40] != b"acsp":
        raise ValueError("no ICC profile signature")
    count = struct.unpack(">I", profile[128:132])[0]
    tags = {}
    for k in range(min(count, 256)):
        signature, offset, size = struct.unpack(">4sII", profile[132 + 12 * k:144 + 12 * k])
        tags[signature] = profile[offset:offset + size]
    return tags


def _icc_description(data: bytes) -> str:
    if data[:4] == b"desc":  # ICC v2 textDescriptionType
        length = struct.unpack(">I", data[8:12])[0]
        return data[12:12 + length].split(b"\0")[0].decode("latin-1").strip()
    if data[:4] == b"mluc":  # ICC v4 multiLocalizedUnicodeType: the first record
        length, offset = struct.unpack(">II", data[20:28])
        return data[offset:offset + length].decode("utf-16-be", "replace").strip("\0 ")
    return ""


def _trc_curve(data: bytes) -> str | None:
    """A curveType or parametricCurveType tag as a curve name; None for a sampled curve of no known family."""
    kind = data[:4]
    if kind == b"curv":
        count = struct.unpack(">I", data[8:12])[0]
        if count == 0:
            return "linear"
        if count == 1:
            return _power(struct.unpack(">H", data[12:14])[0] / 256)
        samples = np.frombuffer(data[12:12 + 2 * count], ">u2").astype(np.float64) / 65535
        return _sampled_curve(samples)
    if kind == b"para":
        function = struct.unpack(">H", data[8:10])[0]
        arity = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}.get(function)
        if arity is None:
            raise ValueError(f"parametric curve of function type {function}")
        p = [value / 65536 for value in struct.unpack(f">{arity}i", data[12:12 + 4 * arity])]
        return _parametric_curve(function, p)
    raise ValueError(f"tone curve of type {kind!r}")


def _parametric_curve(function: int, p: list[float]) -> str:
    g = p[0]
    if function == 0:
        return _power(g)
    a, b = p[1], p[2]
    start = -b / a if a else 0.0
    full = {1: (g, a, b, 0.0, start, 0.0, 0.0), 2: (g, a, b, 0.0, start, p[3], p[3]),
            3: (g, a, b, p[3], p[4], 0.0, 0.0), 4: tuple(p)}[function]
    # s15Fixed16 numbers: 4 decimals keep each within 1e-4 of the file's and name 1 / 1.055 as 0.9479, not 0.9478668.
    name = "para:" + ",".join(f"{round(value, 4):g}" for value in full)
    grid = np.linspace(0, 1, 1025)
    return _known_curve(grid, decoder(name)(grid)) or name


def _sampled_curve(samples: np.ndarray) -> str | None:
    grid = np.linspace(0, 1, len(samples))
    known = _known_curve(grid, samples)
    if known is not None:
        return known
    inside = (grid > 0.05) & (grid < 0.95) & (samples > 1e-4)
    exponent = float(np.median(np.log(samples[inside]) / np.log(grid[inside]))) if inside.any() else 1.0
    return _power(round(exponent, 4)) if np.max(np.abs(grid ** exponent - samples)) <= TABLE_TOLERANCE else None


def _known_curve(grid: np.ndarray, decoded: np.ndarray) -> str | None:
    for name, decode in DECODE.items():
        if np.max(np.abs(decode(grid) - decoded)) <= TABLE_TOLERANCE:
            return name
    return None
