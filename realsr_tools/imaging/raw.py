"""RAW captures: which files are RAW, and how LibRaw renders them identically for every capture of a scene.

RAW files are rendered by LibRaw (rawpy) with fixed parameters (:class:`RawRendering`) so that every capture of
a scene is rendered identically: camera white balance, no auto-brightness, 16-bit output, sRGB primaries and the
BT.709 gamma curve by default. The only photometric differences left between two captures are then the real
ones (exposure, lens, vignetting), which :mod:`realsr_tools.photometric` models. Choose ``gamma="linear"`` for
a linear rendering.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError


RAW_EXTENSIONS = frozenset(
    {".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".dng",
     ".pef", ".srw", ".kdc", ".dcr", ".mrw", ".3fr", ".erf", ".mos", ".iiq", ".x3f", ".rwl"}
)


@dataclass(frozen=True)
class RawRendering:
    """How LibRaw turns a RAW file into RGB; identical for every capture so only real differences remain.

    Parameters
    ----------
    gamma : ``"bt709"`` (dcraw's default curve, power 1/2.222 with a linear toe of slope 4.5) or ``"linear"``.
    color_space : output primaries, ``"srgb"`` (default), ``"adobe"``, ``"prophoto"`` or ``"raw"`` (camera RGB).
    demosaic : ``"ahd"`` (default), ``"dcb"``, ``"dht"``, ``"aahd"``, ``"vng"``, ``"ppg"`` or ``"linear"``.
    """

    gamma: Literal["bt709", "linear"] = "bt709"
    color_space: Literal["srgb", "adobe", "prophoto", "raw"] = "srgb"
    demosaic: Literal["ahd", "dcb", "dht", "aahd", "vng", "ppg", "linear"] = "ahd"

    @property
    def primaries(self) -> str:
        """The output primaries as :mod:`realsr_tools.colour` names them (``unknown``: camera RGB)."""
        return {"srgb": "srgb", "adobe": "adobe-rgb", "prophoto": "prophoto"}.get(self.color_space, "unknown")

    def postprocess_kwargs(self) -> dict:
        import rawpy

        return {
            "use_camera_wb": True,
            "use_auto_wb": False,
            "no_auto_bright": True,
            "output_bps": 16,
            "gamma": (1.0, 1.0) if self.gamma == "linear" else (2.222, 4.5),
            "output_color": {
                "srgb": rawpy.ColorSpace.sRGB,
                "adobe": rawpy.ColorSpace.Adobe,
                "prophoto": rawpy.ColorSpace.ProPhoto,
                "raw": rawpy.ColorSpace.raw,
            }[self.color_space],
            "demosaic_algorithm": getattr(rawpy.DemosaicAlgorithm, self.demosaic.upper()),
        }


DEFAULT_RAW = RawRendering()


def is_raw(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in RAW_EXTENSIONS


def read_raw(path: Path, rendering: RawRendering) -> np.ndarray:
    """Decode a RAW file with LibRaw as ``rendering`` says; the RGB array as LibRaw returns it (uint16)."""
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            check_raw_size(path, raw.sizes.raw_width * raw.sizes.raw_height)
            check_raw_plausible(raw.raw_image_visible, path)
            rgb = raw.postprocess(**rendering.postprocess_kwargs())
    except rawpy.LibRawError as exc:
        raise InputError(f"{path}: LibRaw cannot decode this RAW file ({type(exc).__name__}: {_libraw_text(exc)}); "
                         "it is damaged or from a camera this LibRaw does not support; export a 16-bit TIFF "
                         "instead") from None
    return rgb


def _libraw_text(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return text[2:-1] if text.startswith(("b'", 'b"')) else text


MIN_RAW_BITS_PER_PIXEL = 0.5  # far below any real RAW codec (lossless ~8-14 bits, lossy CR3/ARW >= ~3)


def check_raw_size(path: Path, sensor_pixels: int) -> None:
    """Refuse a RAW file too small to hold the sensor data its header declares (stripped image data).

    LibRaw then 'decodes' whatever its buffer held: zeros, or stale data from an earlier decode in the process,
    which can even look like a photograph. The file size is the one deterministic witness.
    """
    size = path.stat().st_size
    if sensor_pixels > 0 and 8 * size / sensor_pixels < MIN_RAW_BITS_PER_PIXEL:
        raise InputError(f"{path}: RAW file is {size / 1024:.0f} KiB but declares {sensor_pixels / 1e6:.1f} "
                         "megapixels of sensor data; its image data is missing (stripped or truncated file)")


def check_raw_plausible(mosaic: np.ndarray, path: Path) -> None:
    """Refuse RAW data that decodes without error but holds no photograph (stripped or corrupt image data).

    Two cheap tests on the undemosaiced data of the central region: most samples identical (an emptied
    sensor dump), or neighbouring samples of the same colour filter uncorrelated (noise). Real frames, even dark
    or flat ones, pass both: photon noise is small next to the scene's own spatial correlation at 2 px.
    """
    mosaic = np.asarray(mosaic)
    if mosaic.ndim == 3:
        mosaic = mosaic[..., 0]
    h, w = mosaic.shape
    centre = mosaic[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].astype(np.float64)
    values, counts = np.unique(centre[::3, ::3], return_counts=True)
    if counts.max() > 0.5 * counts.sum():
        raise InputError(f"{path}: RAW image data is blank ({counts.max() / counts.sum():.0%} of samples equal "
                         f"{values[counts.argmax()]:g}); the file's image data is missing or corrupt")
    left = centre[::2, :-2:2]
    right = centre[::2, 2::2][:, : left.shape[1]]
    left = left[:, : right.shape[1]]
    if left.std() == 0 or right.std() == 0:
        return
    correlation = float(np.corrcoef(left.ravel(), right.ravel())[0, 1])
    if correlation < 0.3:
        raise InputError(f"{path}: RAW image data looks like noise (neighbour correlation {correlation:.2f}); "
                         "the file's image data is corrupt")
