"""Shared fixtures and helpers: the real test data in ../shared/data (never copied into the project)."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[1]
DATA = PROJECT.parent / "shared" / "data"


def real_pair_folder(root: Path, data_dir: Path, names, *, copy: bool, dataset: str = "realsr_x4") -> Path:
    """An HR/+LR/ folder of real pairs from ../shared/data: copies when a test modifies them, else symbolic links."""
    for side in ("HR", "LR"):
        (root / side).mkdir(parents=True)
        for name in names:
            source = data_dir / "pairs" / dataset / side / name
            if copy:
                shutil.copy(source, root / side / name)
            else:
                (root / side / name).symlink_to(source)
    return root


def srgb16(linear: np.ndarray) -> np.ndarray:
    """Linear-light RGB in [0, 1] as 16-bit sRGB-encoded values, as a raw converter writes them."""
    linear = np.clip(linear, 0, 1)
    encoded = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.round(np.clip(encoded, 0, 1) * 65535).astype(np.uint16)


def with_png_chunks(png: bytes, *chunks: tuple[bytes, bytes]) -> bytes:
    """``png`` with ``chunks`` inserted after IHDR (where PNG wants colour information: before PLTE and IDAT)."""
    extra = b"".join(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
                     for kind, data in chunks)
    return png[:33] + extra + png[33:]


def icc_profile(curves: dict[bytes, bytes], description: str = "test profile") -> bytes:
    """A minimal ICC v2 display profile: header, tag table, a textDescription and the given tags (TRC curves,
    colorants)."""
    text = description.encode("latin-1") + b"\0"
    tags = {b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 79, **curves}
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags.items():
        body += b"\0" * (-len(body) % 4)
        table += struct.pack(">4sII", signature, offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = struct.pack(">I", size) + b"none" + b"\x02\x10\0\0" + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp"
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


def gamma_curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def rgb(trc: bytes) -> dict[bytes, bytes]:
    return {b"rTRC": trc, b"gTRC": trc, b"bTRC": trc}


def colorants(matrix: np.ndarray) -> dict[bytes, bytes]:
    """rXYZ, gXYZ, bXYZ tags (XYZType, s15Fixed16) of a linear-RGB-to-XYZ (D50) matrix's columns."""
    return {key: b"XYZ \0\0\0\0" + struct.pack(">3i", *np.round(np.asarray(matrix)[:, k] * 65536).astype(int))
            for k, key in enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))}


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on a loaded 2-core machine OpenMP's spinning threads make CPU torch many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"real test data not found at {DATA}; the project expects ../shared/data beside it")
    return DATA


def _zoom_series(photo, folder, focals):
    """Real-photo captures of one scene at several focal lengths: longer focal = tighter centre crop."""
    image = cv2.imread(str(photo))
    h, w = image.shape[:2]
    shortest = min(focals)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for focal in focals:
        keep = shortest / focal
        ch, cw = int(h * keep), int(w * keep)
        crop = image[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
        name = f"f{focal:g}.png"
        cv2.imwrite(str(folder / name), cv2.resize(crop, (w // 4, h // 4), interpolation=cv2.INTER_AREA))
        names.append(name)
    return names


@pytest.fixture
def capture_dir(tmp_path, data_dir):
    root = tmp_path / "captures"
    photos = data_dir / "photos"
    rows = ["path,focal_mm,camera"]
    layout = {
        "Canon/scene_001": (photos / "skimage_UNIS_EV0.jpg", (28, 50, 105)),  # 105/28 = 3.75 -> x4, 105/50 -> x2
        "Canon/scene_002": (photos / "skimage_eagle.png", (35, 105)),  # x3
        "Nikon/scene_003": (photos / "pypi_scikit-image_coffee.png", (40, 100)),  # 2.5: off every track
    }
    for scene, (photo, focals) in layout.items():
        for name, focal in zip(_zoom_series(photo, root / scene, focals), focals):
            camera = "Canon EOS 5D Mark III" if scene.startswith("Canon") else "Nikon D810"
            rows.append(f"{scene}/{name},{focal},{camera}")
    # A scene of real camera JPEGs whose focal lengths come from their own EXIF (135 mm and 24 mm, two cameras).
    exif = root / "mixed"
    exif.mkdir()
    shutil.copy(data_dir / "exif_jpeg/digicam_corpus/canon_5dmk3_K6A7946_720.JPG", exif)
    shutil.copy(data_dir / "exif_jpeg/exif_samples/Nikon_D70.jpg", exif)
    # A single-capture scene and one PNG without any focal length.
    _zoom_series(photos / "pypi_scikit-image_hubble_deep_field.jpg", root / "lonely", (50,))
    (root / "captures.csv").write_text("\n".join(rows) + "\n")
    return root


def unwrapped(output: str) -> str:
    """A command's output with rich's line wrapping undone: where a line wraps depends on the terminal and on how long
    the paths printed before a phrase are (a pytest-xdist worker's temporary folders are longer)."""
    return " ".join(output.split())


def one_error_line(output: str) -> str:
    """The command's error: exactly one line, 'error: ...', the last one printed, and no traceback."""
    lines = output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in output, output
    return errors[0]
