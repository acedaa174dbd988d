"""Simulated multi-focal capture folders from real photographs, with exact ground truth for registration.

Each photograph plays the scene ("world"). A simulated camera renders one capture per focal length: every capture
has the same pixel size, the longest focal length (HR) sees a field ``scale`` times narrower than the LR capture of
track ``scale``, and each shot gets its own small random pose (shift, roll, perspective tilt: hand-held shake).
The *true* zoom between an LR capture and the HR capture differs from the focal ratio written to ``captures.csv``
by a few percent (focus breathing, rounded focal lengths), as with real zoom lenses.

Degradations per capture, all in linear light (the photograph's values raised to 2.2), in order: optical blur
(Gaussian, in capture pixels) and the pixel footprint (area antialiasing), as optics and the sensor integrate light
(blurring the encoded values instead moves the intensity optimum of a bright-on-dark scene 0.15-0.7 px off its
geometry: ``benchmarks/independent/README.md``); exposure and white-balance gains,
radial vignetting ``1 - v r^2`` (``r`` = 1 at the frame corner), Poisson-Gaussian noise (variance ``a x + b``),
then the 1/2.2 curve and rounding to 8 or 16 bits. The hard variant adds more shake, +-0.7 EV, +-15 % white
balance, and radial lens distortion (barrel on the LR captures, mild pincushion on the HR capture), so that no
homography maps LR to HR exactly.

Convention: points are (x, y), x right, y down, pixel centres at integer coordinates, (0, 0) the centre of the
top-left pixel. ``capture_to_world`` maps a capture's pixel to photo pixel coordinates; ``lr_to_hr`` (in
``truth.json``) is ``inv(hr capture_to_world) @ lr capture_to_world``, exact when neither capture is distorted.
Distortion acts before the homography: ``u' = c + (u - c) (1 + k1 |u - c|^2 / R^2)`` with ``c`` the frame centre and
``R`` its half diagonal; :func:`true_lr_to_hr` applies the complete mapping to points.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError
from .geometry import RadialDistortion, map_lr_to_hr
from .imaging import read_image, write_image
from .pipeline.manifest import atomic_write_text

TRUTH_JSON = "truth.json"
HR_FOCAL_MM = 100.0
CAMERA = "Simulated DSLR"
GAMMA = 2.2


@dataclass(frozen=True)
class Conditions:
    """Random ranges of one simulation variant (uniform draws in +-range unless stated)."""

    zoom_error: tuple[float, float]  # |true zoom / nominal - 1| drawn in [low, high], random sign
    shift: float  # fraction of the frame size
    roll_deg: float
    tilt: float  # perspective coefficient per half frame size
    ev: float
    white_balance: float  # relative gain per channel
    vignetting: tuple[float, float]  # v in [low, high]
    blur: tuple[float, float]  # Gaussian sigma in capture pixels
    noise_a: tuple[float, float]  # Poisson part of the variance, linear light
    noise_b: float  # Gaussian part of the variance
    distortion_lr: tuple[float, float]  # k1 range for LR captures (negative: barrel)
    distortion_hr: tuple[float, float]


NORMAL = Conditions(zoom_error=(0.01, 0.05), shift=0.02, roll_deg=0.5, tilt=0.003, ev=0.3, white_balance=0.05,
                    vignetting=(0.05, 0.3), blur=(0.4, 0.8), noise_a=(5e-5, 4e-4), noise_b=2e-6,
                    distortion_lr=(0.0, 0.0), distortion_hr=(0.0, 0.0))
HARD = Conditions(zoom_error=(0.02, 0.06), shift=0.05, roll_deg=2.0, tilt=0.01, ev=0.7, white_balance=0.15,
                  vignetting=(0.15, 0.45), blur=(0.5, 1.2), noise_a=(2e-4, 1e-3), noise_b=1e-5,
                  distortion_lr=(-0.03, -0.005), distortion_hr=(0.0, 0.005))


@dataclass(frozen=True)
class SimulatedScene:
    """One simulated scene folder: paths relative to the capture root, and the true LR-to-HR homographies."""

    scene: str
    hr: str
    lr: dict[int, str]  # nominal scale -> LR capture path
    lr_to_hr: dict[str, np.ndarray]  # LR capture path -> 3x3 (exact when undistorted)


@dataclass(frozen=True)
class _Camera:
    capture_to_world: np.ndarray  # 3x3
    size: tuple[int, int]  # (width, height)
    pixel: float  # world pixels per capture pixel (approximate, for antialiasing)
    k1: float


def make_capture_folder(photos: Sequence[Path], out_dir: Path, *, scales: Sequence[int] = (2, 3, 4), seed: int = 0,
                        hard: bool = False, bit_depth: int = 8,
                        lr_size: tuple[int, int] | None = None) -> list[SimulatedScene]:
    """Write one scene folder per photograph (HR + one LR capture per scale), ``captures.csv`` and ``truth.json``.

    Parameters
    ----------
    photos : real photographs; each becomes the scene ``<stem>``.
    out_dir : capture root to create (existing files of the same names are replaced).
    scales : nominal tracks; LR focal lengths are ``100 / scale`` mm rounded to 1 mm, HR 100 mm.
    seed : random seed; the same seed gives the same folder.
    hard : the hard variant (more shake, +-0.7 EV, +-15 % white balance, radial distortion).
    bit_depth : 8 or 16 (PNG).
    lr_size : (width, height) of every capture; default: the size at which one HR pixel covers about one
        photograph pixel (every capture of a camera has the same size).

    Returns
    -------
    list of :class:`SimulatedScene`, in the order of ``photos``.
    """
    if bit_depth not in (8, 16):
        raise InputError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if not photos:
        raise InputError("make_capture_folder needs at least one photograph")
    conditions = HARD if hard else NORMAL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, float]] = []
    truth: dict[str, dict] = {}
    scenes = []
    for photo in photos:
        photo = Path(photo)
        world = read_image(photo)
        light = np.power(world, GAMMA, dtype=np.float32)  # the scene in linear light, where optics act
        scene = photo.stem
        folder = out_dir / scene
        folder.mkdir(parents=True, exist_ok=True)
        zooms = {s: s * (1 + rng.choice([-1, 1]) * rng.uniform(*conditions.zoom_error)) for s in scales}
        widest = max(zooms.values())
        wh, ww = world.shape[:2]
        if lr_size is None:
            aspect = wh / ww
            width = int(0.8 * ww / widest / (1 + 2 * conditions.shift))
            size = (width, int(round(width * aspect)))
        else:
            size = (int(lr_size[0]), int(lr_size[1]))
        # World pixels per HR pixel: the widest LR field (plus shake) must stay inside the photograph.
        margin = 1 + 2 * conditions.shift + 2 * np.radians(conditions.roll_deg)
        hr_pixel = min(ww / (size[0] * widest * margin), wh / (size[1] * widest * margin))
        hr_cam = _camera(rng, conditions, world.shape, size, hr_pixel, conditions.distortion_hr)
        hr_name = f"{scene}/f{HR_FOCAL_MM:g}.png"
        _render(light, hr_cam, rng, conditions, out_dir / hr_name, bit_depth)
        rows.append((hr_name, HR_FOCAL_MM))
        lr_names: dict[int, str] = {}
        homographies: dict[str, np.ndarray] = {}
        for s in scales:
            cam = _camera(rng, conditions, world.shape, size, hr_pixel * zooms[s], conditions.distortion_lr)
            focal = round(HR_FOCAL_MM / s)
            name = f"{scene}/f{focal:g}.png"
            _render(light, cam, rng, conditions, out_dir / name, bit_depth)
            rows.append((name, float(focal)))
            lr_to_hr = np.linalg.inv(hr_cam.capture_to_world) @ cam.capture_to_world
            lr_to_hr /= lr_to_hr[2, 2]
            lr_names[s] = name
            homographies[name] = lr_to_hr
            truth[name] = {
                "hr": hr_name, "scale": s, "true_zoom": zooms[s], "lr_to_hr": lr_to_hr.tolist(),
                "lr_distortion": _distortion_dict(cam), "hr_distortion": _distortion_dict(hr_cam),
            }
        scenes.append(SimulatedScene(scene, hr_name, lr_names, homographies))
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["path", "focal_mm", "camera"])
    for name, focal in rows:
        writer.writerow([name, f"{focal:g}", CAMERA])
    atomic_write_text(out_dir / "captures.csv", table.getvalue())
    atomic_write_text(out_dir / TRUTH_JSON, json.dumps({"hard": hard, "seed": seed, "pairs": truth}, indent=1))
    return scenes


def _distortion_dict(cam: _Camera) -> dict:
    w, h = cam.size
    return {"k1": cam.k1, "centre": [(w - 1) / 2, (h - 1) / 2], "radius": float(np.hypot(w, h) / 2)}


def _camera(rng: np.random.Generator, c: Conditions, world_shape: tuple[int, ...], size: tuple[int, int],
            pixel: float, distortion: tuple[float, float]) -> _Camera:
    wh, ww = world_shape[:2]
    w, h = size
    centre_capture = np.array([[1, 0, -(w - 1) / 2], [0, 1, -(h - 1) / 2], [0, 0, 1]], float)
    half = max(w, h) / 2
    g = rng.uniform(-c.tilt, c.tilt, 2) / half
    tilt = np.array([[1, 0, 0], [0, 1, 0], [g[0], g[1], 1]])
    theta = np.radians(rng.uniform(-c.roll_deg, c.roll_deg))
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    scale = np.diag([pixel, pixel, 1.0])
    shift = rng.uniform(-c.shift, c.shift, 2) * np.array([w, h]) * pixel
    to_world = np.array([[1, 0, (ww - 1) / 2 + shift[0]], [0, 1, (wh - 1) / 2 + shift[1]], [0, 0, 1]])
    matrix = to_world @ rot @ scale @ tilt @ centre_capture
    k1 = rng.uniform(*distortion) if distortion != (0.0, 0.0) else 0.0
    return _Camera(matrix / matrix[2, 2], (w, h), pixel, float(k1))


# The simulator's camera model (_undistort, _distort, _apply) is written here on purpose, not taken from
# realsr_tools.geometry: the ground truth a registration is judged against must not share code with the registration,
# or a mistake in geometry's lens model or pixel convention would appear in both and cancel out of every error. It is
# the same *model* (u' = c + (u - c)(1 + k1 |u - c|^2 / R^2), then a homography), written independently;
# tests/test_simulate.py checks the two agree. What the registration returns (lr_to_hr and its distortion terms) is
# read with geometry's own functions (registration_error).
def _undistort(points: np.ndarray, k1: float, centre: np.ndarray, radius: float) -> np.ndarray:
    """Distorted capture pixel -> ideal (pinhole) pixel: ``c + (u - c)(1 + k1 r^2)``."""
    d = points - centre
    r2 = np.sum(d * d, axis=-1, keepdims=True) / radius**2
    return centre + d * (1 + k1 * r2)


def _distort(points: np.ndarray, k1: float, centre: np.ndarray, radius: float) -> np.ndarray:
    """Inverse of :func:`_undistort` by fixed-point iteration (converges for |k1| << 1)."""
    u = points.copy()
    for _ in range(20):
        d = u - centre
        r2 = np.sum(d * d, axis=-1, keepdims=True) / radius**2
        u = centre + (points - centre) / (1 + k1 * r2)
    return u


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1) @ matrix.T
    return p[..., :2] / p[..., 2:3]


def true_lr_to_hr(entry: dict, points: np.ndarray) -> np.ndarray:
    """Map LR pixel coordinates ``points`` (N x 2, x/y) to HR pixel coordinates with a ``truth.json`` entry.

    Applies LR distortion, the homography and the inverse HR distortion; equals ``lr_to_hr`` alone when both
    distortions are zero.
    """
    points = np.asarray(points, dtype=np.float64)
    lr, hr = entry["lr_distortion"], entry["hr_distortion"]
    ideal = _undistort(points, lr["k1"], np.array(lr["centre"]), lr["radius"]) if lr["k1"] else points
    mapped = _apply(np.asarray(entry["lr_to_hr"]), ideal)
    return _distort(mapped, hr["k1"], np.array(hr["centre"]), hr["radius"]) if hr["k1"] else mapped


def _render(light: np.ndarray, cam: _Camera, rng: np.random.Generator, c: Conditions, path: Path,
            bit_depth: int) -> None:
    import cv2

    w, h = cam.size
    blur = rng.uniform(*c.blur)
    # Gaussian prefilter in world pixels: the pixel footprint (area of cam.pixel world pixels) plus optical blur.
    footprint = 0.5 * np.sqrt(max(cam.pixel**2 - 1, 0.0))
    sigma = float(np.hypot(footprint, blur * cam.pixel))
    source = cv2.GaussianBlur(light, (0, 0), sigma) if sigma > 0.3 else light
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    grid = np.stack([xs, ys], axis=-1)
    if cam.k1:
        grid = _undistort(grid, cam.k1, np.array([(w - 1) / 2, (h - 1) / 2]), float(np.hypot(w, h) / 2))
    mapped = _apply(cam.capture_to_world, grid).astype(np.float32)
    image = cv2.remap(source, mapped[..., 0], mapped[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    linear = np.clip(image, 0, 1)  # bicubic resampling overshoots a little at edges
    gains = 2.0 ** rng.uniform(-c.ev, c.ev) * (1 + rng.uniform(-c.white_balance, c.white_balance, 3))
    r2 = ((xs - (w - 1) / 2) ** 2 + (ys - (h - 1) / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    vignette = (1 - rng.uniform(*c.vignetting) * r2).astype(np.float32)
    linear = linear * gains.astype(np.float32) * vignette[..., None]
    a = rng.uniform(*c.noise_a)
    noisy = linear + rng.standard_normal(linear.shape, dtype=np.float32) * np.sqrt(
        a * np.clip(linear, 0, None) + c.noise_b).astype(np.float32)
    out = np.clip(noisy, 0, 1) ** (1 / GAMMA)
    write_image(path, out.astype(np.float32), bit_depth=bit_depth)


def registration_error(entry: dict, lr_to_hr: np.ndarray, lr_window: Sequence[float], *, step: int = 4,
                       lr_distortion: dict | None = None) -> float:
    """RMS distance (LR pixels) between an estimated ``lr_to_hr`` and the truth over an LR window.

    Points on a ``step``-pixel grid of ``lr_window = [x0, y0, width, height]`` are mapped to the HR by both; their
    distance in HR pixels is divided by the true magnification at each point's neighbourhood (the HR distance of
    one LR pixel), so the figure is in LR pixels whatever the scale.
    """
    x0, y0, w, h = lr_window
    xs, ys = np.meshgrid(np.arange(x0, x0 + w, step, dtype=np.float64), np.arange(y0, y0 + h, step, dtype=np.float64))
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    truth = true_lr_to_hr(entry, points)
    estimate = map_lr_to_hr(lr_to_hr, RadialDistortion.from_dict(lr_distortion), points)
    one_px = np.linalg.norm(true_lr_to_hr(entry, points + [1.0, 0.0]) - truth, axis=1)
    return float(np.sqrt(np.mean((np.linalg.norm(estimate - truth, axis=1) / one_px) ** 2)))
