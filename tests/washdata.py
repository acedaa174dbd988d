"""Real RealSR/DRealSR x4 pairs mixed with deliberately damaged copies: the ground truth of the wash tests."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

DAMAGES = ("shift", "rotate", "swap", "cast")
SCALE = 4


def damage_hr(hr: np.ndarray, kind: str, index: int, other: np.ndarray) -> np.ndarray:
    """A damaged copy of an HR (uint8 BGR as OpenCV reads it); ``index`` varies the damage deterministically."""
    rng = np.random.default_rng(index)
    h, w = hr.shape[:2]
    if kind == "shift":  # 2-3 LR pixels in a random direction
        length, angle = rng.uniform(2.0, 3.0) * SCALE, rng.uniform(0, 2 * np.pi)
        matrix = np.float32([[1, 0, length * np.cos(angle)], [0, 1, length * np.sin(angle)]])
        return cv2.warpAffine(hr, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    if kind == "rotate":  # 1-2 degrees about the centre
        degrees = rng.uniform(1.0, 2.0) * rng.choice([-1, 1])
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
        return cv2.warpAffine(hr, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    if kind == "swap":  # another scene's HR
        return other
    if kind == "cast":  # strong colour cast: red and blue gains 25% apart in opposite directions
        gains = np.float32([0.75, 1.0, 1.25]) if index % 2 else np.float32([1.25, 1.0, 0.75])  # B, G, R
        return np.clip(np.rint(hr.astype(np.float32) * gains), 0, 255).astype(np.uint8)
    raise ValueError(kind)


def build_mixed(pairs_dir: Path, out: Path, *, per_dataset: int | None = None) -> Path:
    """``out/HR`` + ``out/LR``: real pairs (hard links) and, for every second real pair, one damaged copy (kinds in
    turn), so a third of the set is damaged.

    Real pairs keep their names; damaged ones are named ``dmg_<kind>_<name>``. ``per_dataset`` takes that many
    pairs, evenly spaced, from each of realsr_x4 and drealsr_x4 (default: all).
    """
    (out / "HR").mkdir(parents=True, exist_ok=True)
    (out / "LR").mkdir(parents=True, exist_ok=True)
    names = []
    for dataset in ("realsr_x4", "drealsr_x4"):
        files = sorted((pairs_dir / dataset / "HR").iterdir())
        if per_dataset is not None:
            files = [files[i] for i in np.linspace(0, len(files) - 1, per_dataset).round().astype(int)]
        names += [(dataset, f.name) for f in files]
    for index, (dataset, name) in enumerate(names):
        for sub in ("HR", "LR"):
            target = out / sub / name
            if not target.exists():
                try:
                    os.link(pairs_dir / dataset / sub / name, target)
                except OSError:
                    target.write_bytes((pairs_dir / dataset / sub / name).read_bytes())
        if index % 2:
            continue
        kind = DAMAGES[(index // 2) % len(DAMAGES)]
        other_set, other_name = names[(index + len(names) // 2) % len(names)]
        hr = cv2.imread(str(pairs_dir / dataset / "HR" / name), cv2.IMREAD_COLOR)
        other = cv2.imread(str(pairs_dir / other_set / "HR" / other_name), cv2.IMREAD_COLOR)
        damaged = f"dmg_{kind}_{name}"
        cv2.imwrite(str(out / "HR" / damaged), damage_hr(hr, kind, index, cv2.resize(other, hr.shape[1::-1])))
        (out / "LR" / damaged).write_bytes((pairs_dir / dataset / "LR" / name).read_bytes())
    return out


MISALIGNMENTS = ("shift", "roll", "scale")


def misalign_hr(hr: np.ndarray, kind: str, amount: float, *, angle: float = 0.0, sign: int = 1,
                scale: int = SCALE) -> np.ndarray:
    """An HR (any dtype OpenCV warps) moved the way registration errors move it, about the window centre.

    ``shift``: ``amount`` LR px in direction ``angle`` (radians; HR content moves by ``amount * scale`` HR px);
    ``roll``: ``amount`` degrees (``sign`` gives the direction); ``scale``: magnified by ``1 + sign * amount``
    (0.005: 0.5 %). Bicubic (Lanczos) resampling, mirrored borders. The LR-grid convention: the window centre
    ``(W - 1) / 2, (H - 1) / 2`` in HR px is the LR window's centre, so a roll or scale leaves the centre in place.
    """
    h, w = hr.shape[:2]
    centre = ((w - 1) / 2, (h - 1) / 2)
    if kind == "shift":
        matrix = np.float64([[1, 0, amount * scale * np.cos(angle)], [0, 1, amount * scale * np.sin(angle)]])
    elif kind == "roll":
        matrix = cv2.getRotationMatrix2D(centre, sign * amount, 1.0)
    elif kind == "scale":
        matrix = cv2.getRotationMatrix2D(centre, 0.0, 1.0 + sign * amount)
    else:
        raise ValueError(kind)
    return cv2.warpAffine(hr, matrix, (w, h), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT_101)
