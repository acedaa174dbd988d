"""Read and write the images a real-SR capture session produces.

Convention
----------
:func:`read_image` returns ``H x W x 3`` RGB ``float32`` in ``[0, 1]``, upright (EXIF orientation applied for
JPEG/PNG/TIFF; LibRaw applies the RAW file's own orientation). :func:`read_pixels` returns the same image in its
native integer type (``uint8`` or ``uint16``) for stages that must copy pixels bit-exactly (crop, score).

RAW files are rendered as :mod:`.raw` describes. Every output goes through :func:`atomic_output`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError
from .raw import DEFAULT_RAW, RAW_EXTENSIONS, RawRendering, read_raw

RASTER_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
IMAGE_EXTENSIONS = RASTER_EXTENSIONS | RAW_EXTENSIONS


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()  # what open() would give a new file under the process umask


def read_image(path: str | os.PathLike, *, raw: RawRendering = DEFAULT_RAW) -> np.ndarray:
    """Read any supported capture as ``H x W x 3`` float32 RGB in ``[0, 1]``, upright."""
    return to_float(read_pixels(path, raw=raw))


def read_pixels(path: str | os.PathLike, *, raw: RawRendering = DEFAULT_RAW) -> np.ndarray:
    """Read any supported capture as ``H x W x 3`` RGB ``uint8`` or ``uint16`` (RAW: always uint16), upright."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise InputError(
            f"{path}: unsupported file type '{suffix or '(none)'}'; use PNG, JPEG, TIFF or a camera RAW file"
        )
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); re-copy it from the camera card")
    if suffix in RAW_EXTENSIONS:
        return _as_rgb(read_raw(path, raw), path)
    if suffix in (".tif", ".tiff"):
        pixels = _read_tiff(path)
    else:
        pixels = _read_png_jpeg(path)
    from .exif import read_orientation

    return apply_orientation(pixels, read_orientation(path))


def to_float(pixels: np.ndarray) -> np.ndarray:
    """Integer pixels to float32 in [0, 1] (exact: every uint16 value is representable in float32)."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) * np.float32(1 / 255)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) * np.float32(1 / 65535)
    if pixels.dtype == np.float32:
        return pixels
    raise TypeError(f"expected uint8, uint16 or float32 pixels, got {pixels.dtype}")


def to_integer(image: np.ndarray, bit_depth: Literal[8, 16] = 8) -> np.ndarray:
    """Float image in [0, 1] to rounded uint8/uint16 (values outside [0, 1] are clipped)."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if image.dtype in (np.uint8, np.uint16):
        if image.dtype == (np.uint8 if bit_depth == 8 else np.uint16):
            return image
        image = to_float(image)
    peak = 255.0 if bit_depth == 8 else 65535.0
    out = np.clip(image, 0.0, 1.0) * np.float32(peak)
    return np.rint(out).astype(np.uint8 if bit_depth == 8 else np.uint16)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` to write to; on success it is renamed onto ``path``, else removed.

    Every realsr output goes through here, so readers never see half a file and a killed run leaves only hidden
    ``.*.partial*`` files. The temporary name keeps the real suffix last (encoders pick the format from it) and
    gets ordinary permissions (mkstemp would make it private).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".partial" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp_name, FILE_MODE)
    try:
        yield Path(tmp_name)
        os.replace(tmp_name, path)
    except OSError as exc:  # a full disk or read-only folder stops the run with one line, not a traceback
        from ..pipeline.output import location_error

        problem = location_error(exc, path)
        if problem is None:
            raise
        raise problem from None
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def partials_of(path: str | os.PathLike) -> list[Path]:
    """The temporary files :func:`atomic_output` left beside ``path`` (``.<stem>.<random>.partial<suffix>``; the
    random part has no dot), and no other file's."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    head, tail = f".{path.stem}.", ".partial" + path.suffix
    return [found for found in path.parent.glob(f"{glob.escape(head)}*{glob.escape(tail)}")
            if "." not in found.name[len(head):-len(tail)] and found.is_file()]


def remove_partials(folder: str | os.PathLike) -> int:
    """Delete the temporary files :func:`atomic_output` left under ``folder`` (a killed writer: a run interrupted
    hard, a worker that died mid-write); returns how many. Only names of its own pattern are touched."""
    removed = 0
    for path in Path(folder).rglob(".*.partial*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def png_params(level: int) -> list[int]:
    """OpenCV PNG encoder settings of every realsr output: zlib ``level`` and the Paeth row filter.

    libpng's default adaptive filtering tries all five row filters on every row; on photographs Paeth alone gives
    files within 1 % of the same size and encodes 12-28 % faster at levels 1-3 (``benchmarks/bench_crop.py``).
    """
    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, int(level)]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11; older versions keep libpng's adaptive filter
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]
    return params


def write_image(path: str | os.PathLike, image: np.ndarray, *, bit_depth: Literal[8, 16] | None = None,
                png_compression: int = 3) -> Path:
    """Write an RGB (or single-channel) image atomically: a temporary file in the same folder, then a rename.

    Float images are rounded to ``bit_depth`` (default 8); integer images are written as they are unless
    ``bit_depth`` asks for a conversion. PNG and TIFF keep 16 bits; JPEG is 8-bit only.
    """
    import cv2

    path = Path(path)
    suffix = path.suffix.lower()
    if image.dtype == np.float32 or image.dtype == np.float64 or bit_depth is not None:
        image = to_integer(image, bit_depth or 8)
    if suffix in (".jpg", ".jpeg") and image.dtype != np.uint8:
        raise InputError(f"{path}: JPEG holds 8 bits only; write PNG or TIFF for 16-bit output")
    with atomic_output(path) as tmp_name:
        if suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp_name, image, photometric="rgb" if image.ndim == 3 else "minisblack")
        else:
            bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
            params = png_params(png_compression) if suffix == ".png" else []
            if not cv2.imwrite(str(tmp_name), bgr, params):
                from ..pipeline.output import check_space

                check_space(path.parent, path)  # OpenCV does not say why: a full disk stops the run
                raise InputError(f"{path}: OpenCV could not encode a {image.shape} {image.dtype} image as {suffix}")
    return path


def apply_orientation(image: np.ndarray, orientation: int | None) -> np.ndarray:
    """Rotate/flip an image as stored into its upright view, per EXIF tag 274 (1-8)."""
    if orientation in (None, 1):
        return image
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: a.swapaxes(0, 1)[::-1],
    }
    if orientation not in ops:
        return image
    return np.ascontiguousarray(ops[orientation](image))


def check_complete(path: Path) -> None:
    """Catch truncated JPEG/PNG files cheaply (decoders often return a half-grey image without an error)."""
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        return
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); re-copy it from the camera card")
    with open(path, "rb") as stream:
        head = stream.read(8)
        stream.seek(max(0, size - 4096))
        tail = stream.read()
    signature, kind = (PNG_SIGNATURE, "PNG") if suffix == ".png" else (b"\xff\xd8", "JPEG")
    if not head.startswith(signature):
        target = f", a link to {os.path.realpath(path)}" if path.is_symlink() else ""
        what = "a text file" if _looks_like_text(head + tail[:248]) else "starts with " + head[:4].hex(" ")
        raise InputError(f"{path}: not a {kind} file ({what}{target}); check the file and its name")
    if suffix == ".png":
        if b"IEND" not in tail[-16:]:
            raise InputError(f"{path}: PNG is truncated (no IEND chunk); re-copy or re-export the file")
    elif not tail.rstrip(b"\x00\xff").endswith(b"\xff\xd9"):
        raise InputError(f"{path}: JPEG is truncated (no end-of-image marker); re-copy the file")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _looks_like_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(32 <= b < 127 or b in b"\t\r\n" for b in data)


def _as_rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise InputError(f"{path}: expected a grey, RGB or RGBA image, got an array of shape {pixels.shape}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: {pixels.dtype} samples are not supported; export 8- or 16-bit integer images")
    return np.ascontiguousarray(pixels[..., :3])


def _read_png_jpeg(path: Path) -> np.ndarray:
    import cv2

    check_complete(path)
    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise InputError(f"{path}: cannot decode as {path.suffix.lstrip('.').upper()}; the file is damaged or "
                         "not an image")
    if decoded.ndim == 3 and decoded.shape[2] in (3, 4):
        # cvtColor is several times faster than fancy-indexing the channels (and drops alpha in the same pass).
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB if decoded.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
    return _as_rgb(decoded, path)


def _read_tiff(path: Path) -> np.ndarray:
    """Any TIFF cameras and raw converters write: uncompressed, LZW, Deflate/ZIP, PackBits, JPEG (with or without a
    horizontal predictor), striped or tiled, 8 or 16 bit, chunky or planar; the codecs come from imagecodecs."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            pixels = page.asarray()
            planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    except Exception as exc:  # tifffile raises many types (TiffFileError, ValueError, struct.error) for bad files
        if "requires the 'imagecodecs' package" in str(exc):
            # tifffile decodes only uncompressed (and a few pure-Python) TIFFs itself; LZW, Deflate, JPEG and the
            # horizontal predictor come from imagecodecs, a realsr dependency that this environment lacks.
            import re

            found = re.search(r"(COMPRESSION|PREDICTOR)\.(\w+)", str(exc))
            codec = (found[2] if found[1] == "COMPRESSION" else f"the {found[2].lower()} predictor") if found else \
                "a codec tifffile lacks"
            raise InputError(f"{path}: this TIFF is encoded with {codec}, whose decoder comes from the "
                             "'imagecodecs' package; install it (pip install imagecodecs) or re-save the file "
                             "uncompressed") from None
        raise InputError(f"{path}: cannot decode TIFF ({exc}); the file is damaged or not a TIFF") from None
    if planar and pixels.ndim == 3:
        pixels = np.moveaxis(pixels, 0, -1)
    return _as_rgb(pixels, path)


