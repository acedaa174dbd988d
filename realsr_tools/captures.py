"""Capture discovery: group the files of a capture folder into scenes and plan LR/HR pairs.

Layout: one folder per scene, holding two or more captures of the same scene at different focal lengths; scene
folders may sit under camera folders (``Canon/scene_012/``). A scene is any folder that directly holds image files;
its name is its path relative to the capture root.

Pairing rule: the longest focal length is the HR capture; every shorter capture forms a pair with nominal scale
``round(f_hr / f_lr)`` when that ratio lies within :data:`SCALE_TOLERANCE` (relative) of a track in
:data:`TRACKS` (2, 3, 4: the AIM 2020 / DRealSR tracks). Other ratios are reported, never guessed.

An optional ``captures.csv`` at the root (columns ``path,focal_mm`` and optional ``camera``; ``path`` relative to
the root with forward slashes) supplies or overrides EXIF metadata, for exports that lost it.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

from .errors import InputError
from .imaging import IMAGE_EXTENSIONS, check_complete

TRACKS = (2, 3, 4)
SCALE_TOLERANCE = 0.10  # |f_hr / f_lr / scale - 1|: 105/28 mm = 3.75 is x4 (6% off); 2.3 or 2.5 is no track
CAPTURES_CSV = "captures.csv"


@dataclass(frozen=True)
class Capture:
    """One file of a scene. ``path`` is relative to the capture root, forward slashes."""

    path: str
    focal_mm: float | None
    camera: str | None
    focal_source: str | None  # "exif", "captures.csv" or None
    error: str | None = None
    curve: str | None = None  # the transfer curve a JPEG/PNG/TIFF states (imaging.transfer); None for RAW files
    primaries: str | None = None  # the primaries stated beside it (realsr_tools.colour names)

    @property
    def encoding(self) -> str | None:
        """The stated curve, and the primaries where they are not sRGB's (``power:2.19922 adobe-rgb``)."""
        if self.curve is None:
            return None
        return self.curve + (f" {self.primaries}" if self.primaries not in (None, "srgb") else "")


@dataclass(frozen=True)
class PlannedPair:
    """An LR capture and the scene's HR capture, with the nominal scale from the focal ratio."""

    scene: str
    lr: str
    hr: str
    scale: int
    focal_ratio: float
    camera: str | None

    @property
    def id(self) -> str:
        """Stable, filesystem-safe id: scene path and LR file stem (``Canon/s012`` + ``IMG_1`` -> ``Canon_s012__IMG_1``)."""
        scene = self.scene.replace("/", "_") if self.scene != "." else "root"
        return f"{scene}__{PurePosixPath(self.lr).stem}"


@dataclass
class Scene:
    name: str
    captures: list[Capture]
    hr: str | None = None
    camera: str | None = None
    pairs: list[PlannedPair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class CaptureSet:
    root: Path
    scenes: list[Scene]
    csv_used: bool

    @property
    def pairs(self) -> list[PlannedPair]:
        return [pair for scene in self.scenes for pair in scene.pairs]

    @property
    def problems(self) -> list[str]:
        return [f"{scene.name}: {problem}" for scene in self.scenes for problem in scene.problems]

    @property
    def blocked(self) -> list[tuple[str, str, str]]:
        """``(id, capture path, reason)`` of unreadable captures whose focal length is unknown: their scene has no
        pairs, since any of them might be its HR capture."""
        return [(f"{s.name.replace('/', '_') if s.name != '.' else 'root'}__{PurePosixPath(c.path).stem}", c.path,
                 f"{c.error}; its focal length is unknown, so the HR capture of scene {s.name} cannot be chosen and "
                 f"none of its pairs was aligned (fix or remove the file, or give its focal length in "
                 f"{CAPTURES_CSV})")
                for s in self.scenes for c in s.captures if c.error and c.focal_mm is None]

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "captures_csv": self.csv_used,
            "tracks": list(TRACKS),
            "scale_tolerance": SCALE_TOLERANCE,
            "scenes": [
                {
                    "name": s.name,
                    "camera": s.camera,
                    "hr": s.hr,
                    "captures": [asdict(c) for c in s.captures],
                    "pairs": [asdict(p) | {"id": p.id} for p in s.pairs],
                    "problems": s.problems,
                }
                for s in self.scenes
            ],
            "pair_count": len(self.pairs),
            "problem_count": len(self.problems),
        }


def nominal_scale(focal_ratio: float, tracks: Iterable[int] = TRACKS) -> int | None:
    """The track whose scale is within :data:`SCALE_TOLERANCE` of ``focal_ratio``, else ``None``."""
    best = min(tracks, key=lambda s: abs(focal_ratio / s - 1))
    return best if abs(focal_ratio / best - 1) <= SCALE_TOLERANCE else None


def read_captures_csv(root: Path) -> dict[str, dict[str, object]]:
    """Rows of ``root/captures.csv`` keyed by path; an empty dict when there is no such file."""
    path = root / CAPTURES_CSV
    if not path.is_file():
        return {}
    rows: dict[str, dict[str, object]] = {}
    with open(path, newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        if reader.fieldnames is None or not {"path", "focal_mm"} <= set(reader.fieldnames):
            raise InputError(f"{path}: needs a header row with columns 'path,focal_mm' (and optional 'camera'), "
                             f"got {reader.fieldnames}")
        for number, row in enumerate(reader, start=2):
            rel = (row.get("path") or "").strip()
            if not rel or "\\" in rel or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
                raise InputError(f"{path}:{number}: 'path' must be relative to the capture root with forward "
                                 f"slashes, got {rel!r}")
            focal_text = (row.get("focal_mm") or "").strip()
            try:
                focal = float(focal_text) if focal_text else None
            except ValueError:
                raise InputError(f"{path}:{number}: focal_mm {focal_text!r} is not a number") from None
            if focal is not None and focal <= 0:
                raise InputError(f"{path}:{number}: focal_mm must be positive, got {focal_text}")
            camera = (row.get("camera") or "").strip() or None
            rows[rel] = {"focal_mm": focal, "camera": camera}
    return rows


def discover(root: Path | str, *, tracks: Iterable[int] = TRACKS) -> CaptureSet:
    """Find scenes under ``root``, read each capture's metadata and plan the LR/HR pairs."""
    from .imaging import is_raw
    from .imaging.exif import read_metadata
    from .imaging.transfer import stated_curve
    from .errors import RealsrError

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; pass the capture folder that holds one folder per scene")
    overrides = read_captures_csv(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise InputError(f"{root}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    known = {p.relative_to(root).as_posix() for p in files}
    by_folder: dict[str, list[Capture]] = {}
    for file in files:
        rel = file.relative_to(root).as_posix()
        override = overrides.get(rel, {})
        error = None
        focal = camera = source = curve = primaries = None
        # A damaged file still takes its place in the scene (its focal length from EXIF, which sits at the start of
        # the file, or from captures.csv): it must never let another capture silently become the HR. Its pairs fail
        # in align with the reason.
        try:
            check_complete(file)
        except RealsrError as exc:
            error = str(exc)
        try:
            meta = read_metadata(file)
            focal, camera = meta.focal_mm, meta.camera
            source = "exif" if focal is not None else None
        except RealsrError as exc:
            error = error or str(exc)
        if not is_raw(file) and error is None:
            stated = stated_curve(file)
            curve, primaries = stated.curve, stated.primaries
        if override.get("focal_mm") is not None:
            focal, source = override["focal_mm"], CAPTURES_CSV
        camera = override.get("camera") or camera
        folder = PurePosixPath(rel).parent.as_posix()
        by_folder.setdefault(folder, []).append(Capture(rel, focal, camera, source, error, curve, primaries))
    scenes = [_plan_scene(name, captures, tuple(tracks), root) for name, captures in sorted(by_folder.items())]
    missing = sorted(set(overrides) - known)
    if missing:
        scenes.insert(0, Scene(name=CAPTURES_CSV, captures=[],
                               problems=[f"lists {len(missing)} file(s) not found: {', '.join(missing[:5])}"]))
    return CaptureSet(root=root, scenes=scenes, csv_used=bool(overrides))


def _frame_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of a capture as stored (0, 0 when unreadable); read only to break focal-length ties."""
    try:
        from .imaging import is_raw

        if is_raw(path):
            import rawpy

            with rawpy.imread(str(path)) as raw:
                return int(raw.sizes.width), int(raw.sizes.height)
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
            return int(shape[1]), int(shape[0])
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        return (8 * image.shape[1], 8 * image.shape[0]) if image is not None else (0, 0)
    except Exception:  # noqa: BLE001 - any unreadable file simply loses the tie
        return 0, 0


def _plan_scene(name: str, captures: list[Capture], tracks: tuple[int, ...], root: Path | None = None) -> Scene:
    scene = Scene(name=name, captures=captures)
    for capture in captures:
        if capture.error:
            scene.problems.append(f"unreadable: {capture.error}")
        elif capture.focal_mm is None:
            scene.problems.append(f"{capture.path}: no focal length in EXIF; add it to {CAPTURES_CSV}")
    unknown = [c for c in captures if c.error and c.focal_mm is None]
    if unknown:
        scene.problems.append(f"{len(unknown)} unreadable capture(s) without a known focal length "
                              f"({', '.join(c.path for c in unknown[:3])}): the HR capture cannot be chosen, no pair "
                              "is planned")
        return scene
    # Unreadable captures of known focal length keep their place: align records their pairs as failed, naming them.
    usable = [c for c in captures if c.focal_mm is not None]
    cameras = sorted({c.camera for c in usable if c.camera})
    if len(cameras) > 1:
        scene.problems.append(f"mixed cameras in one scene ({', '.join(cameras)}); only captures of the HR "
                              "capture's camera are paired")
    encodings = sorted({c.encoding for c in usable if c.encoding})
    if len(encodings) > 1:
        scene.problems.append(f"the captures state different encodings ({', '.join(encodings)}): each is registered "
                              "in its own linear light and the written LR is re-encoded into the HR's")
    if len(usable) < 2:
        scene.problems.append(f"only {len(usable)} usable capture(s); a scene needs two focal lengths")
        return scene
    longest = max(c.focal_mm for c in usable)
    tied = [c for c in usable if c.focal_mm == longest]
    hr = max(tied, key=lambda c: c.path)
    if len(tied) > 1:  # the same focal length: the larger frame is the HR capture (not the file name)
        sizes = {c.path: _frame_size(root / c.path) if root is not None else (0, 0) for c in tied}
        hr = max(tied, key=lambda c: (sizes[c.path][0] * sizes[c.path][1], c.path))
        others = ", ".join(f"{c.path} ({sizes[c.path][0]}x{sizes[c.path][1]})" for c in tied if c is not hr)
        scene.problems.append(f"{len(tied)} captures share the longest focal length {longest:g} mm; the HR "
                              f"capture is the largest frame, {hr.path} ({sizes[hr.path][0]}x{sizes[hr.path][1]} "
                              f"px), not {others}")
    scene.hr = hr.path
    scene.camera = hr.camera
    for capture in usable:
        if capture is hr:
            continue
        if capture.camera and hr.camera and capture.camera != hr.camera:
            scene.problems.append(f"{capture.path}: camera {capture.camera} differs from the HR capture's "
                                  f"({hr.camera}); not paired")
            continue
        ratio = hr.focal_mm / capture.focal_mm
        if ratio < 1 + 1e-6:
            scene.problems.append(f"{capture.path}: same focal length as the HR capture ({capture.focal_mm:g} mm)")
            continue
        scale = nominal_scale(ratio, tracks)
        if scale is None:
            scene.problems.append(
                f"{capture.path}: focal ratio {hr.focal_mm:g}/{capture.focal_mm:g} mm = {ratio:.2f} is off every "
                f"track (x{', x'.join(map(str, tracks))} within {SCALE_TOLERANCE:.0%})")
            continue
        scene.pairs.append(PlannedPair(name, capture.path, hr.path, scale, round(ratio, 4), scene.camera))
    return scene
