"""Paired datasets as the later stages read them: a stage manifest, or a BasicSR-style ``HR/`` + ``LR/`` folder.

Both give a list of :class:`PairRef`. A folder pairs files by identical name (``HR/x.png`` with ``LR/x.png``), like
the RealSR and DRealSR downloads. A manifest gives its usable records (status ``ok``, not dropped by wash) and the
output paths named by :data:`PAIR_KEYS` for its stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Sequence

from ..errors import ConfigError, InputError
from ..imaging import IMAGE_EXTENSIONS
from .manifest import MANIFEST_NAME, Manifest, check_upstream, iter_ok, read_manifest

# Which record keys hold a stage's LR and HR output files (relative to its manifest).
PAIR_KEYS: dict[str, tuple[str, str]] = {
    "align": ("lr", "hr"),
    "crop": ("lr", "hr"),
    "wash": ("lr_kept", "hr_kept"),
}


@dataclass(frozen=True)
class PairRef:
    """One LR/HR pair. ``id`` is unique in its source and safe in file names; ``record`` is the upstream record."""

    id: str
    lr: Path
    hr: Path
    scale: int | None = None
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PairSource:
    root: Path
    kind: Literal["manifest", "folder"]
    pairs: list[PairRef]
    manifest: Manifest | None = None

    @property
    def scale(self) -> int | None:
        scales = {p.scale for p in self.pairs if p.scale is not None}
        return scales.pop() if len(scales) == 1 else None

    def one_scale(self) -> int | None:
        """The pairs' one scale (None when unknown); several are refused: a mean over scales means nothing."""
        scales = sorted({p.scale for p in self.pairs if p.scale is not None})
        if len(scales) > 1:
            raise ConfigError(f"{self.root}: several scales ({', '.join(f'x{s}' for s in scales)}); pass --scale "
                              "to use one of them")
        return scales[0] if scales else None


def open_pairs(source: Path | str, *, scale: int | None = None,
               stages: Sequence[str] = tuple(PAIR_KEYS)) -> PairSource:
    """Open ``source`` (a stage output folder, its manifest, or an ``HR/``+``LR/`` folder) as a list of pairs.

    ``scale`` filters a manifest's records to that scale and is attached to every pair of a folder.
    """
    source = Path(source)
    if source.is_file() and source.name == MANIFEST_NAME or (source / MANIFEST_NAME).is_file():
        manifest = read_manifest(source, stage=stages)
        check_upstream(manifest)  # every stage reads pairs here: a stale output is refused before any work
        return _from_manifest(manifest, scale)
    if (source / "HR").is_dir() and (source / "LR").is_dir():
        return _from_folder(source, scale)
    raise InputError(f"{source}: neither a realsr stage output (no {MANIFEST_NAME}) nor a folder with HR/ and LR/ "
                     "subfolders; pass one of those")


def _from_manifest(manifest: Manifest, scale: int | None) -> PairSource:
    lr_key, hr_key = PAIR_KEYS[manifest.stage]
    default_scale = manifest.header.get("params", {}).get("scale")
    pairs = []
    for record in iter_ok(manifest):
        pair_scale = record.get("scale", default_scale)
        if scale is not None and pair_scale is not None and int(pair_scale) != scale:
            continue
        if record.get(lr_key) is None or record.get(hr_key) is None:
            continue
        pairs.append(PairRef(id=str(record["id"]), lr=manifest.resolve(record[lr_key]),
                             hr=manifest.resolve(record[hr_key]),
                             scale=int(pair_scale) if pair_scale is not None else scale, record=record))
    return PairSource(root=manifest.root, kind="manifest", pairs=pairs, manifest=manifest)


def _images(folder: Path) -> dict[str, Path]:
    # Hidden files are skipped: they include the temporary files of an interrupted atomic write.
    return {p.name: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")}


def _from_folder(root: Path, scale: int | None) -> PairSource:
    hr, lr = _images(root / "HR"), _images(root / "LR")
    only_hr, only_lr = sorted(set(hr) - set(lr)), sorted(set(lr) - set(hr))
    if only_hr or only_lr:
        parts = []
        if only_hr:
            parts.append(f"{len(only_hr)} in HR/ without an LR partner ({', '.join(only_hr[:5])})")
        if only_lr:
            parts.append(f"{len(only_lr)} in LR/ without an HR partner ({', '.join(only_lr[:5])})")
        raise InputError(f"{root}: HR/ and LR/ must hold the same file names; " + "; ".join(parts))
    if not hr:
        raise InputError(f"{root}: HR/ and LR/ hold no images")
    pairs = [PairRef(id=PurePosixPath(name).stem, lr=lr[name], hr=hr[name], scale=scale) for name in sorted(hr)]
    stems = [p.id for p in pairs]
    if len(set(stems)) != len(stems):
        raise InputError(f"{root}: two files share a name stem (e.g. x.png and x.jpg); rename one")
    return PairSource(root=root, kind="folder", pairs=pairs)


def check_scale(hr_shape: Sequence[int], lr_shape: Sequence[int], scale: int, *, hr: Path, lr: Path) -> None:
    """Refuse a pair whose HR is not exactly ``scale`` times its LR, saying what was expected."""
    hr_h, hr_w = hr_shape[:2]
    lr_h, lr_w = lr_shape[:2]
    if (hr_h, hr_w) != (lr_h * scale, lr_w * scale):
        raise ConfigError(f"{hr.name}: HR is {hr_w}x{hr_h} but LR {lr_w}x{lr_h} at scale {scale} needs "
                          f"{lr_w * scale}x{lr_h * scale} (HR {hr}, LR {lr})")


def infer_scale(hr_shape: Sequence[int], lr_shape: Sequence[int], *, hr: Path, lr: Path) -> int:
    """The integer scale between an HR and an LR image, refusing anything that is not exact."""
    ratio = hr_shape[0] / lr_shape[0]
    scale = round(ratio)
    if scale < 1:
        raise ConfigError(f"{hr}: HR ({hr_shape[1]}x{hr_shape[0]}) is smaller than its LR ({lr_shape[1]}x"
                          f"{lr_shape[0]}); check that HR/ and LR/ are not swapped")
    check_scale(hr_shape, lr_shape, scale, hr=hr, lr=lr)
    return scale


def header_size(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` of an image file from its header (nothing decoded); None when it cannot be told (RAW,
    damaged or not an image: the stage reports those per pair)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    return height, width


def check_pairs_fit(source: PairSource, *, scale: int | None = None, size: int | None = None) -> None:
    """Refuse before any work a ``scale`` (folder sources) or LR patch ``size`` that no pair fits.

    Reads only the image headers. Pairs whose size cannot be told are left to the stage; the check refuses only when
    every pair whose size is known contradicts the option, and says what would fit ("HR is 4x LR in every pair;
    pass --scale 4").
    """
    sizes = [(header_size(p.lr), header_size(p.hr)) for p in source.pairs]
    known = [(lr, hr) for lr, hr in sizes if lr is not None and hr is not None]
    if not known:
        return
    if scale is not None and source.kind == "folder":
        ratios = {hr[0] // lr[0] if lr[0] and hr[0] % lr[0] == 0 and hr[1] == lr[1] * (hr[0] // lr[0]) else None
                  for lr, hr in known}
        if scale not in ratios:
            if len(ratios) == 1 and None not in ratios:
                found = ratios.pop()
                raise ConfigError(f"{source.root}: --scale {scale}, but HR is {found}x LR in every pair; pass --scale "
                                  f"{found}")
            raise ConfigError(f"{source.root}: --scale {scale}, but no pair has an HR exactly {scale}x its LR; check "
                              "--scale and the HR/ and LR/ files")
    if size is not None and all(lr[0] < size or lr[1] < size for lr, _ in known):
        h, w = max((lr for lr, _ in known), key=lambda hw: min(hw))
        raise ConfigError(f"{source.root}: every LR is smaller than one --size {size} patch (the largest is {w}x{h}); "
                          f"pass --size {min(h, w)} or less")


def check_meta_info_names(source: PairSource) -> None:
    """Refuse pair ids with whitespace before any work: they name the files listed in BasicSR's ``meta_info.txt``,
    whose loader splits each line at the first space (``<name> (<h>,<w>,<c>)``)."""
    spaced = [p.id for p in source.pairs if any(ch.isspace() for ch in p.id)]
    if spaced:
        raise InputError(f"{source.root}: {len(spaced)} pair name(s) contain a space or other whitespace (e.g. "
                         f"{spaced[0]!r}), which BasicSR's meta_info.txt cannot hold (it splits each line at the "
                         "first space); rename those files, e.g. with '_' for the spaces")
