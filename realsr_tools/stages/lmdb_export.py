"""Export LR/HR pairs as BasicSR LMDB databases (``io_backend: lmdb``).

Layout (BasicSR's ``make_lmdb_from_imgs`` / ``paired_paths_from_lmdb``)::

    DIR/HR.lmdb/{data.mdb, lock.mdb, meta_info.txt}
    DIR/LR.lmdb/{data.mdb, lock.mdb, meta_info.txt}
    DIR/manifest.jsonl                                  (stage ``lmdb``)

Every pair is stored under the same key in both databases: the file name without its extension, ASCII-encoded.
The value is the image as PNG bytes (re-encoded from the decoded pixels at zlib level ``compression``; 8- or
16-bit as the source). ``meta_info.txt`` holds one line per key, sorted: ``<key>.png (<h>,<w>,<c>) <compression>``.

BasicSR reads the key back as ``line.split('.')[0]`` and the file name as ``line.split(' ')[0]``, and encodes keys
as ASCII, so a name with a dot, whitespace or a non-ASCII character would come back as another key (or not at
all): :func:`key_problem` refuses such names before anything is written, and so are two pairs with the same key.

Resume: pairs are written in LMDB transactions (both databases), and a pair is journalled only once both
transactions holding it committed; a re-run skips journalled pairs whose keys are in both databases. At the end
keys that no record lists (left by a killed run) are deleted, so the two databases always hold the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, InputError, RealsrError
from ..pipeline.manifest import MANIFEST_NAME, StageWriter, atomic_write_text, make_header
from ..pipeline.output import holds_output
from ..pipeline.resume import prepare_stage_output
from ..pipeline.pairs import PairRef, infer_scale, check_scale, open_pairs

DATABASES = ("HR", "LR")
META_INFO = "meta_info.txt"
DEFAULT_COMPRESSION = 1  # BasicSR's make_lmdb_from_imgs default
BATCH_BYTES = 256 << 20  # commit a transaction after about this many value bytes
INITIAL_MAP_SIZE = 1 << 30  # grows (doubles) whenever a transaction fills it


@dataclass(frozen=True)
class LmdbSummary:
    out_dir: Path
    manifest: Path
    pairs: int  # pairs in the source
    written: int  # pairs written in this run
    resumed: int  # pairs already in the databases from an earlier run
    failed: int
    failures: tuple[str, ...] = ()


def key_problem(name: str) -> str | None:
    """Why BasicSR could not read ``name`` (a file name without extension) back as the same LMDB key, or None."""
    if not name:
        return "empty name"
    if not name.isascii():
        return "non-ASCII character (BasicSR encodes keys as ASCII)"
    if "." in name:
        return "dot (BasicSR takes the key as the text before the first '.')"
    if any(c.isspace() for c in name):
        return "whitespace (BasicSR splits meta_info.txt lines on spaces)"
    if not name.isprintable():
        return "control character"
    return None


def meta_info_line(key: str, shape: Sequence[int], compression: int) -> str:
    """One ``meta_info.txt`` line: ``<key>.png (<h>,<w>,<c>) <compression>``."""
    h, w = shape[:2]
    c = shape[2] if len(shape) > 2 else 1
    return f"{key}.png ({h},{w},{c}) {compression}"


def encode_png(pixels: np.ndarray, compression: int) -> bytes:
    """RGB (or grey) uint8/uint16 pixels to PNG bytes, as BasicSR's cv2.imencode does (its arrays are BGR)."""
    import cv2

    bgr = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    ok, buffer = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise InputError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} image as PNG")
    return buffer.tobytes()


@holds_output()
def run_lmdb(source: Path | str, out_dir: Path | str, *, compression: int = DEFAULT_COMPRESSION,
             scale: int | None = None, overwrite: bool = False, show_progress: bool = True) -> LmdbSummary:
    """Write every pair of ``source`` into ``out_dir/HR.lmdb`` and ``out_dir/LR.lmdb`` (see the module docstring).

    Parameters
    ----------
    source : an align/crop/wash output folder (or its manifest) or a folder with ``HR/`` and ``LR/``.
    out_dir : output folder; must not be ``source``.
    compression : PNG zlib level 0-9 of the stored values (BasicSR's default 1).
    scale : keep only pairs of this scale (a manifest); for a folder, each HR must be exactly ``scale`` x LR
        (default: each pair's own integer scale, which must be exact).
    overwrite : start over, deleting this stage's databases, manifest and journal; otherwise a re-run resumes.
    """
    import lmdb

    source, out_dir = Path(source), Path(out_dir)
    if not 0 <= compression <= 9:
        raise ConfigError(f"--compression must be a PNG zlib level 0-9, got {compression}")
    pairs = open_pairs(source, scale=scale)
    keyed = _keys(pairs.pairs, source)
    params = {"compression": compression, "scale": scale}
    databases = tuple(f"{name}.lmdb" for name in DATABASES)
    done = prepare_stage_output(out_dir, "lmdb", params=params, source=pairs.root, owned=databases, clear=databases,
                                record_params=lambda r: {"compression": r.get("compression")},
                                overwrite=overwrite).done

    header = make_header("lmdb", params=params, upstream=pairs.manifest.path if pairs.manifest else None,
                         out_dir=out_dir)
    header["source"] = str(pairs.root.resolve())
    out_dir.mkdir(parents=True, exist_ok=True)
    envs = {name: lmdb.open(str(out_dir / f"{name}.lmdb"), map_size=INITIAL_MAP_SIZE) for name in DATABASES}
    try:
        present = _common_keys(envs)
        keep = [r for key, r in done.items() if key in present and key in keyed]
        kept = {r["id"] for r in keep}
        todo = [(key, pair) for key, pair in keyed.items() if key not in kept]
        failures: list[str] = []
        written = 0
        from ..pipeline.progress import track

        with StageWriter(out_dir, header, keep=keep) as writer:
            batch: list[tuple[dict[str, Any], bytes, bytes]] = []
            size = 0
            for key, pair in track(todo, description="lmdb", enabled=show_progress):
                try:
                    record, hr_png, lr_png = _encode_pair(key, pair, pairs.root, scale, compression)
                except RealsrError as exc:  # one bad pair fails, the batch goes on
                    failures.append(f"{key}: {exc}")
                    writer.add({"id": key, "status": "failed", "error": str(exc)})
                    continue
                batch.append((record, hr_png, lr_png))
                size += len(hr_png) + len(lr_png)
                if size >= BATCH_BYTES:
                    written += _commit(envs, batch, writer)
                    batch, size = [], 0
            written += _commit(envs, batch, writer)
            ok = {r["id"]: r for r in writer.records if r.get("status") == "ok"}
            _drop_unlisted(envs, set(ok))
        for name in DATABASES:
            side = name.lower()
            lines = [meta_info_line(key, ok[key][f"{side}_shape"], ok[key]["compression"]) for key in sorted(ok)]
            atomic_write_text(out_dir / f"{name}.lmdb" / META_INFO, "".join(line + "\n" for line in lines))
    finally:
        for env in envs.values():
            env.close()
    return LmdbSummary(out_dir=out_dir, manifest=out_dir / MANIFEST_NAME, pairs=len(keyed), written=written,
                       resumed=len(keep), failed=len(failures), failures=tuple(failures))


def _keys(pairs: Sequence[PairRef], source: Path) -> dict[str, PairRef]:
    """Each pair's LMDB key (the HR file name without extension), refusing names BasicSR cannot round-trip."""
    keyed: dict[str, PairRef] = {}
    problems: list[str] = []
    for pair in pairs:
        key = PurePosixPath(pair.hr.name).stem
        why = key_problem(key)
        if why:
            problems.append(f"{pair.hr.name!r}: {why}")
        elif PurePosixPath(pair.lr.name).stem != key:
            problems.append(f"{pair.hr.name!r} is paired with LR {pair.lr.name!r}; BasicSR pairs by identical key")
        elif key in keyed:
            problems.append(f"{key!r} twice ({keyed[key].hr} and {pair.hr}); keys must be unique")
        else:
            keyed[key] = pair
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise InputError(f"{source}: {len(problems)} name(s) BasicSR cannot read back as LMDB keys: "
                         f"{'; '.join(problems[:3])}{more}. Rename them to letters, digits, '_' and '-'")
    if not keyed:
        raise InputError(f"{source}: no usable pairs to export")
    return keyed


def _encode_pair(key: str, pair: PairRef, root: Path, scale: int | None,
                 compression: int) -> tuple[dict[str, Any], bytes, bytes]:
    from ..imaging import read_pixels

    hr, lr = read_pixels(pair.hr), read_pixels(pair.lr)
    wanted = scale or pair.scale
    if wanted is not None:
        check_scale(hr.shape, lr.shape, wanted, hr=pair.hr, lr=pair.lr)
    else:
        wanted = infer_scale(hr.shape, lr.shape, hr=pair.hr, lr=pair.lr)
    record = {"id": key, "pair": pair.id, "status": "ok", "scale": int(wanted), "compression": compression,
              "hr_shape": list(hr.shape), "lr_shape": list(lr.shape), "dtype": str(hr.dtype),
              "hr_source": _shown(pair.hr, root), "lr_source": _shown(pair.lr, root)}
    return record, encode_png(hr, compression), encode_png(lr, compression)


def _shown(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _commit(envs: dict[str, Any], batch: list[tuple[dict[str, Any], bytes, bytes]], writer: StageWriter) -> int:
    """Put a batch into both databases (HR, then LR), growing the map when full; journal it once both committed."""
    import lmdb

    if not batch:
        return 0
    for index, name in enumerate(DATABASES):
        env = envs[name]
        while True:
            try:
                with env.begin(write=True) as txn:
                    for record, *values in batch:
                        txn.put(record["id"].encode("ascii"), values[index])
                break
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
    for record, *_ in batch:
        writer.add(record)
    return len(batch)


def _common_keys(envs: dict[str, Any]) -> set[str]:
    sets = []
    for env in envs.values():
        with env.begin() as txn:
            sets.append({key.decode("ascii") for key in txn.cursor().iternext(keys=True, values=False)})
    return set.intersection(*sets)


def _drop_unlisted(envs: dict[str, Any], listed: set[str]) -> None:
    """Delete keys no ok record lists (a killed run's half-written batch), so both databases hold the same keys."""
    for env in envs.values():
        with env.begin(write=True) as txn:
            stray = [k for k in txn.cursor().iternext(keys=True, values=False) if k.decode("ascii") not in listed]
            for key in stray:
                txn.delete(key)
