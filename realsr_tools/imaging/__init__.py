"""Image files in and out: PNG/JPEG/TIFF/RAW decoding, EXIF, the fixed RAW rendering, atomic writes.

Convention (the one for all of realsr): images are ``H x W x 3`` RGB; inside algorithms ``float32`` in
``[0, 1]`` (:func:`read_image`), at the edges the file's own ``uint8``/``uint16`` (:func:`read_pixels`), upright
(EXIF orientation applied; LibRaw applies the RAW file's own).
"""

from __future__ import annotations

from .files import (FILE_MODE, IMAGE_EXTENSIONS, RASTER_EXTENSIONS, apply_orientation, atomic_output, check_complete,
                    png_params, read_image, read_pixels, to_float, to_integer, write_image)
from .raw import DEFAULT_RAW, RAW_EXTENSIONS, RawRendering, check_raw_plausible, check_raw_size, is_raw, read_raw

__all__ = ["DEFAULT_RAW", "FILE_MODE", "IMAGE_EXTENSIONS", "RASTER_EXTENSIONS", "RAW_EXTENSIONS", "RawRendering",
           "apply_orientation", "atomic_output", "check_complete", "check_raw_plausible", "check_raw_size", "is_raw",
           "png_params", "read_image", "read_pixels", "read_raw", "to_float", "to_integer", "write_image"]
