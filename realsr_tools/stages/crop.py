"""Cut LR/HR pairs into training patches at exactly corresponding places (AIM 2020 patch sizes).

Convention
----------
Boxes are given on the LR grid as ``(x, y)`` of the top-left pixel (column, row; origin at the top-left pixel of the
image) and a side ``size`` in LR pixels. The HR patch of the LR box ``(x, y, size)`` at scale ``S`` is the HR box
``(S x, S y, S size)``: LR pixel ``(x, y)`` covers HR pixels ``S x .. S x + S - 1`` (the pixel-area convention of
every x2/x3/x4 dataset), so the two patches show exactly the same part of the scene.

Placement rule: along each axis the patch starts are ``0, step, 2 step, ...`` while the patch fits, and when the
last one stops short of the border one more patch is placed flush with the border (start ``length - size``). With
``step <= size`` every pixel of the image therefore lies in at least one patch; the last row/column overlaps its
neighbour instead of being dropped. This is the rule of BasicSR's ``extract_subimages`` with ``thresh_size=0``.
An image smaller than one patch gives no patch (recorded as ``skipped``). With a validity mask (from ``realsr
align``) the grid is laid over the bounding box of the valid pixels and a patch that touches any invalid pixel is
skipped and counted.

Outputs: ``DIR/HR/<pair id>_s<NNN>.png`` and ``DIR/LR/<pair id>_s<NNN>.png`` (same name in both folders, the
source pair id kept as is), ``DIR/meta_info.txt`` in BasicSR's ``PairedImageDataset`` format (one line per patch,
``<name> (<h>,<w>,<c>)`` of the HR patch) and ``DIR/manifest.jsonl`` (stage ``crop``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError, InputError, OutputLocationError, RealsrError
from ..patches import AIM_PATCH, PatchPlan, patch_name, plan_patches
from ..pipeline.manifest import MANIFEST_NAME, StageWriter, check_relative_path, make_header
from ..pipeline.pairs import PairRef, check_meta_info_names, check_pairs_fit, check_scale, infer_scale, open_pairs
from ..pipeline.output import holds_output
from ..pipeline.resume import prepare_stage_output

OUTPUT_KEYS = ("lr", "hr")
META_INFO = "meta_info.txt"


@dataclass(frozen=True)
class CropSummary:
    """What ``run_crop`` did: counts of pairs and patches, and where the outputs are."""

    out_dir: Path
    manifest: Path
    meta_info: Path
    pairs: int  # pairs in the source
    pairs_done: int  # pairs cut in this run
    pairs_resumed: int  # pairs already complete from an earlier run
    pairs_failed: int
    pairs_empty: int  # pairs that gave no patch (smaller than a patch, or no patch fully valid)
    patches: int  # patches in the output (this run and resumed)
    patches_skipped_invalid: int  # patches left out because they touch invalid (unfilled) pixels, this run
    failures: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------------------------
# The stage


@holds_output()
def run_crop(source: Path | str, out_dir: Path | str, *, scale: int | None = None, size: int | None = None,
             step: int | None = None, workers: int | None = None, png_compression: int = 3, overwrite: bool = False,
             show_progress: bool = True, scheduler: str | None = None,
             scheduler_file: Path | str | None = None) -> CropSummary:
    """Cut every pair of ``source`` into LR/HR patches in ``out_dir`` (see the module docstring for the layout).

    Parameters
    ----------
    source : an align/crop/wash output folder (or its manifest) or a folder with ``HR/`` and ``LR/``.
    out_dir : output folder; must not be ``source``.
    scale : HR/LR scale. Required for an ``HR/``+``LR/`` folder (each HR must then be exactly ``scale`` times its
        LR); for a manifest it selects that scale's pairs.
    size : LR patch side; default the AIM 2020 size of the scale (380 x2, 272 x3, 192 x4).
    step : LR distance between patch starts; default ``size`` (no overlap except the flush last row/column).
    workers : pairs cut in parallel (local processes; each writes its patches on :data:`PATCH_THREADS` threads);
        default: the CPUs this process may use.
    png_compression : zlib level 0-9 of the written PNGs (3 is BasicSR's default); rows use the Paeth filter
        (:func:`realsr_tools.imaging.png_params`).
    overwrite : redo everything, removing the patches an earlier run listed; otherwise a re-run resumes. Files
        that no earlier crop listed are never deleted: an output folder holding such files is refused.
    scheduler, scheduler_file : cut the pairs on this Dask cluster instead
        (:func:`realsr_tools.pipeline.runner.open_runner`).
    """
    source, out_dir = Path(source), Path(out_dir)
    if not 0 <= png_compression <= 9:
        raise ConfigError(f"--png-compression must be 0-9, got {png_compression}")
    if scale is not None and scale < 1:
        raise ConfigError(f"--scale must be a positive integer (HR = scale x LR), got {scale}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    pairs = open_pairs(source, scale=scale)
    if pairs.kind == "folder" and scale is None:
        raise ConfigError(f"{source}: an HR/+LR/ folder does not say its scale; pass --scale")
    scale = scale or pairs.scale
    if scale is None:
        raise ConfigError(f"{source}: its pairs have several scales; pass --scale to cut one of them")
    size = size if size is not None else AIM_PATCH.get(scale)
    if size is None:
        raise ConfigError(f"no AIM 2020 patch size for scale {scale}; pass --size")
    step = step if step is not None else size
    if size < 1 or step < 1:
        raise ConfigError(f"--size and --step must be positive, got size={size}, step={step}")
    check_pairs_fit(pairs, scale=scale, size=size)
    check_meta_info_names(pairs)
    params = {"scale": scale, "size": size, "step": step, "png_compression": png_compression}
    # Patch records carry their scale and size: a killed run's journal is checked against them too.
    done = prepare_stage_output(out_dir, "crop", params=params, source=pairs.root, owned=("HR", "LR"),
                                output_keys=OUTPUT_KEYS, overwrite=overwrite,
                                record_params=lambda r: {"scale": r.get("scale"),
                                                         "size": (r.get("lr_box") or [0, 0, None])[2]}).done

    by_pair: dict[str, list[dict[str, Any]]] = {}
    for record in done.values():
        by_pair.setdefault(str(record.get("pair")), []).append(record)
    finished = {pid for pid, records in by_pair.items() if len(records) == records[0].get("pair_patches")}
    keep = [r for pid in finished for r in by_pair[pid]]
    todo = [p for p in pairs.pairs if p.id not in finished]

    header = make_header("crop", params=params, path_keys=OUTPUT_KEYS,
                         upstream=pairs.manifest.path if pairs.manifest else None, out_dir=out_dir)
    header["source"] = str(pairs.root.resolve())
    tasks = [_Task(pair=p, root=pairs.root, kind=pairs.kind, scale=scale, size=size, step=step,
                   out_dir=out_dir, png_compression=png_compression) for p in todo]
    done_now = failed = empty = skipped_invalid = 0
    failures: list[str] = []
    from ..pipeline.runner import TaskLost, input_order, open_runner, run_items

    with open_runner(workers, scheduler=scheduler, scheduler_file=scheduler_file) as runner, \
            StageWriter(out_dir, header, keep=keep, order=input_order([p.id for p in pairs.pairs], key="pair")) \
            as writer:
        (out_dir / "HR").mkdir(parents=True, exist_ok=True)  # once the runner is up: a refused cluster leaves none
        (out_dir / "LR").mkdir(parents=True, exist_ok=True)
        for index, result in run_items(runner, cut_pair, tasks, name="crop", labels=[t.pair.id for t in tasks],
                                       show_progress=show_progress):
            if isinstance(result, TaskLost):
                result = _Result([{"id": tasks[index].pair.id, **_base(tasks[index]), "status": "failed",
                                   "error": result.reason}], failure=result.reason)
            for record in result.records:
                writer.add(record)
            skipped_invalid += result.skipped_invalid
            if result.failure:
                failed += 1
                failures.append(result.failure)
            elif not result.records or result.records[0].get("status") == "skipped":
                empty += 1
            else:
                done_now += 1
        patch_records = [r for r in writer.records if r.get("status") == "ok"]
    meta = write_meta_info(out_dir, patch_records)
    return CropSummary(out_dir=out_dir, manifest=out_dir / MANIFEST_NAME, meta_info=meta, pairs=len(pairs.pairs),
                       pairs_done=done_now, pairs_resumed=len(finished), pairs_failed=failed, pairs_empty=empty,
                       patches=len(patch_records), patches_skipped_invalid=skipped_invalid,
                       failures=tuple(failures))


def write_meta_info(out_dir: Path, records: Iterable[dict[str, Any]]) -> Path:
    """BasicSR's ``meta_info_file``: one ``<name> (<h>,<w>,<c>)`` line per HR patch, sorted by name."""
    from ..pipeline.manifest import atomic_write_text

    lines = sorted(f"{Path(r['hr']).name} ({r['hr_box'][3]},{r['hr_box'][2]},3)" for r in records)
    return atomic_write_text(out_dir / META_INFO, "".join(line + "\n" for line in lines))


# ----------------------------------------------------------------------------------------------------------------
# Work on one pair (runs on a worker: a local process or a Dask worker)


@dataclass(frozen=True)
class _Task:
    pair: PairRef
    root: Path
    kind: str
    scale: int
    size: int
    step: int
    out_dir: Path
    png_compression: int


@dataclass(frozen=True)
class _Result:
    records: list[dict[str, Any]]
    skipped_invalid: int = 0
    failure: str | None = None


# Threads writing one pair's patches: OpenCV releases the GIL while it encodes PNG, so a pair's patches are encoded
# two at a time while its task's process (or Dask worker thread) would otherwise wait on one encoder.
PATCH_THREADS = 2


def cut_pair(task: _Task) -> _Result:
    """Read, check and cut one pair, writing each patch atomically; runs on a worker
    (:mod:`realsr_tools.pipeline.runner`). A pair that cannot be cut comes back as a failed or skipped result."""
    from concurrent.futures import ThreadPoolExecutor

    decoded = _decode(task)
    if not isinstance(decoded, _Decoded):
        return decoded
    with ThreadPoolExecutor(max_workers=PATCH_THREADS, thread_name_prefix="realsr-crop") as pool:
        patches = [pool.submit(_write_patch, decoded, index, box)
                   for index, box in enumerate(decoded.plan.boxes, start=1)]
        return _collect(decoded, patches)


def _source_path(path: Path, root: Path) -> str:
    """A source file as the manifest shows it: relative to the source folder when inside it."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class _Decoded:
    """A pair read, checked and planned, in OpenCV's BGR order, ready to be cut."""

    task: _Task
    base: dict[str, Any]
    lr_bgr: np.ndarray
    hr_bgr: np.ndarray
    plan: PatchPlan
    quality: Any


def _base(task: _Task) -> dict[str, Any]:
    """The fields every record of a pair starts with."""
    return {"pair": task.pair.id, "source_lr": _source_path(task.pair.lr, task.root),
            "source_hr": _source_path(task.pair.hr, task.root), "scale": task.scale}


def _decode(task: _Task) -> _Decoded | _Result:
    """Read and check one pair; a pair that cannot be cut comes back as its final (failed/skipped) result."""
    import cv2

    from ..imaging import read_pixels

    pair, s = task.pair, task.scale
    base = _base(task)
    try:
        lr = read_pixels(pair.lr)
        hr = read_pixels(pair.hr)
        if task.kind == "folder":
            check_scale(hr.shape, lr.shape, s, hr=pair.hr, lr=pair.lr)
        elif infer_scale(hr.shape, lr.shape, hr=pair.hr, lr=pair.lr) != s:
            raise ConfigError(f"{pair.hr.name}: manifest says scale {s} but HR {hr.shape[1]}x{hr.shape[0]} is "
                              f"{hr.shape[0] // lr.shape[0]}x its LR {lr.shape[1]}x{lr.shape[0]}")
        valid = _read_mask(pair, task.root, lr.shape)
    except RealsrError as exc:
        return _failed(pair.id, base, exc)
    plan = plan_patches(lr.shape[0], lr.shape[1], size=task.size, step=task.step, valid=valid)
    if not plan.boxes:
        why = (f"no patch of {task.size} px is fully valid" if valid is not None else
               f"LR {lr.shape[1]}x{lr.shape[0]} is smaller than one {task.size} px patch")
        return _Result([{"id": pair.id, **base, "status": "skipped", "reason": why}], plan.skipped_invalid)
    # OpenCV encodes BGR: convert each image once (cvtColor is several times faster than a numpy channel flip).
    return _Decoded(task, base, cv2.cvtColor(lr, cv2.COLOR_RGB2BGR), cv2.cvtColor(hr, cv2.COLOR_RGB2BGR), plan,
                    pair.record.get("quality"))


def _write_patch(decoded: _Decoded, index: int, box: tuple[int, int]) -> dict[str, Any]:
    """Write the ``index``-th LR/HR patch of a pair; return its manifest record."""
    task, (x, y) = decoded.task, box
    s, size = task.scale, task.size
    n = size * s
    name = patch_name(task.pair.id, index)
    _write_png(task.out_dir / "LR" / name, decoded.lr_bgr[y : y + size, x : x + size], task.png_compression)
    _write_png(task.out_dir / "HR" / name, decoded.hr_bgr[s * y : s * y + n, s * x : s * x + n],
               task.png_compression)
    return {"id": Path(name).stem, "lr": f"LR/{name}", "hr": f"HR/{name}", **decoded.base, "status": "ok",
            "lr_box": [x, y, size, size], "hr_box": [s * x, s * y, n, n],
            "pair_patches": len(decoded.plan.boxes), "quality": decoded.quality}


def _collect(decoded: _Decoded | _Result, patches: list) -> _Result:
    """A pair's result once all its patches are written (a pair whose patch could not be written has failed)."""
    if isinstance(decoded, _Result):
        return decoded
    try:
        records = [future.result() for future in patches]
    except OutputLocationError:
        raise  # a full disk or read-only --out stops the run; it is not this pair's failure
    except RealsrError as exc:
        return _failed(decoded.task.pair.id, decoded.base, exc)
    return _Result(records, decoded.plan.skipped_invalid)


def _failed(pair_id: str, base: dict[str, Any], exc: RealsrError) -> _Result:
    return _Result([{"id": pair_id, **base, "status": "failed", "error": str(exc)}], failure=str(exc))


def _write_png(path: Path, bgr: np.ndarray, level: int) -> None:
    """Encode a BGR(-ordered) patch as PNG and write it atomically (temporary name in the folder, then rename)."""
    import cv2

    from ..imaging import atomic_output, png_params

    ok, encoded = cv2.imencode(".png", bgr, png_params(level))
    if not ok:
        raise InputError(f"{path}: OpenCV could not encode a {bgr.shape} {bgr.dtype} patch as PNG")
    with atomic_output(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def _read_mask(pair: PairRef, root: Path, lr_shape: tuple[int, ...]) -> np.ndarray | None:
    """The align stage's validity mask on the LR grid (255 = valid), or None when the pair has none."""
    mask_ref = pair.record.get("mask")
    if not mask_ref:
        return None
    from ..imaging import read_pixels

    path = root / check_relative_path(mask_ref, root / MANIFEST_NAME)
    mask = read_pixels(path)[..., 0]
    if mask.shape != lr_shape[:2]:
        raise InputError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its LR {pair.lr} is "
                         f"{lr_shape[1]}x{lr_shape[0]}; re-run realsr align")
    return mask >= (128 if mask.dtype == np.uint8 else 32768)
