"""Wash a paired dataset: score every LR/HR pair for misalignment and damage, keep the good ones, report the rest.

Definition of the wash PSNR (what ``--min-psnr`` thresholds)
-----------------------------------------------------------
A real LR is legitimately blurrier than its HR, so a plain PSNR of an upscaled LR against the HR mostly measures that
blur (25-28 dB on good RealSR/DRealSR pairs). The wash PSNR instead asks how well the HR *predicts* the LR under the
dataset's own degradation, on the LR grid:

1. The degradation of each camera and scale is estimated from the dataset (:mod:`realsr_tools.degradation`): a
   3S x 3S HR-pixel blur kernel and a per-channel colour relation, fitted by least squares on up to
   ``FIT_PAIRS`` pairs and aggregated with an element-wise median (robust to a minority of bad pairs).
2. The HR is blurred with that kernel, sampled on the LR grid and passed through the colour relation; then one
   tone curve (a cubic polynomial, ``TONE_DEGREE``) shared by the three channels is fitted per pair by least
   squares: it absorbs exposure and tone-curve differences between the two captures, but a colour cast that
   differs from the dataset's colour relation is *not* fitted away.
3. Both images are low-passed with a Gaussian of ``LOWPASS_SIGMA`` LR px (sensor noise and JPEG/demosaicking residue
   are not misalignment), ``CROP_BORDER`` LR px are dropped on every side, and the MSE is taken over the *textured*
   pixels only: where the 7x7 local standard deviation of the grey level in either image is at least
   ``TEXTURE_STD``. Flat areas cannot show misalignment and would only dilute the error. A pair with less than
   ``MIN_TEXTURED`` of its pixels textured is ``flat``: its PSNR uses all pixels and it is reported separately.
4. ``psnr = 10 log10(1 / MSE)`` on the [0, 1] scale (the same number as on 0-255 with peak 255).

SSIM (``--min-ssim``) is the MATLAB/BasicSR SSIM (:func:`realsr_tools.metrics.ssim`) between the LR and the
tone-fitted prediction (no low-pass). ``shift`` is :func:`realsr_tools.quality.residual_shift` between the same
two images: the median residual shift over textured 64 px tiles, in LR pixels (``shift_worst``: the largest).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

import numpy as np

from ..degradation import (CROP_BORDER, DEFAULT_SAMPLES, DEFAULT_SUPPORT, Degradation, LOWPASS_SIGMA, MIN_TEXTURED,
                           PairFit, PairScore, RIDGE, TEXTURE_STD, TEXTURE_WINDOW, TONE_DEGREE, aggregate, apply,
                           fit_exposure, fit_pair, score_pair, verdict)
from ..errors import ConfigError, InputError, OutputExistsError, RealsrError
from ..imaging import atomic_output
from ..pipeline.manifest import MANIFEST_NAME, StageWriter, atomic_write_text, make_header
from ..pipeline.pairs import PairRef, PairSource, check_meta_info_names, check_pairs_fit, check_scale, infer_scale, open_pairs
from ..pipeline.output import holds_output
from ..pipeline.resume import prepare_stage_output
from ..pipeline.runner import one_blas_thread
from ..verification import (DEFAULT_LIMIT, DEFAULT_P95_FACTOR, DEFAULT_SIGMAS, VERSION as VERIFIER_VERSION,
                            Verification)

FIT_PAIRS = 32  # pairs per camera and scale used to estimate the degradation
# Everything a cached per-pair result depends on besides its files and model (see _Cache): bump "version" when
# the scoring code changes.
SCORING = {"version": 2, "verifier": VERIFIER_VERSION, "lowpass_sigma": LOWPASS_SIGMA, "texture_std": TEXTURE_STD,
           "texture_window": TEXTURE_WINDOW,
           "min_textured": MIN_TEXTURED, "tone_degree": TONE_DEGREE, "crop_border": CROP_BORDER,
           "support": DEFAULT_SUPPORT, "samples": DEFAULT_SAMPLES, "ridge": RIDGE}
DRY_RUN_OFFSETS = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
WORST_SHOWN = 8


@dataclass(frozen=True)
class WashSummary:
    """What ``run_wash`` found and wrote (``dry_run``: nothing written, paths are where outputs would go)."""

    out_dir: Path
    manifest: Path | None
    meta_info: Path | None
    report: Path | None
    pairs: int
    kept: int
    dropped: int
    failed: int
    flat: int  # textureless pairs (kept or not): too few textured pixels for the wash PSNR
    unmeasurable: int = 0  # pairs (kept or not) whose displacement field the verifier could not measure
    misaligned: int = 0  # pairs the verifier found misaligned (all dropped)
    by_reason: dict[str, int] = field(default_factory=dict)
    sweep: tuple[tuple[float, int], ...] = ()  # (min_psnr, pairs it would keep with the other thresholds)
    groups: tuple[str, ...] = ()  # camera/scale groups that got their own degradation


# ----------------------------------------------------------------------------------------------------------------
# Pure functions


# ----------------------------------------------------------------------------------------------------------------
# The stage


@dataclass(frozen=True)
class _Item:
    pair: PairRef
    group: tuple[str, int] | None  # (camera, scale); None when the pair could not be read
    hr_shape: tuple[int, int] | None
    error: str | None


@holds_output()
@one_blas_thread()
def run_wash(source: Path | str, out_dir: Path | str, *, min_psnr: float = 29.0, scale: int | None = None,
             min_ssim: float | None = None, max_shift: float | None = None,
             max_misalignment: float | None = DEFAULT_LIMIT, drop_unmeasurable: bool = False, dry_run: bool = False,
             workers: int | None = None, show_progress: bool = True, scheduler: str | None = None,
             scheduler_file: Path | str | None = None) -> WashSummary:
    """Score every pair of ``source``, keep those passing the thresholds, write manifest, kept pairs and report.

    Parameters
    ----------
    source : a crop/align/wash output folder (or its manifest) or an ``HR/``+``LR/`` folder.
    out_dir : output folder: ``manifest.jsonl`` (one record per input pair), ``HR/`` + ``LR/`` with the kept pairs
        (hard links to the source files, copies where linking fails), ``meta_info.txt`` and ``report/``. A re-run
        into the same folder replaces an earlier wash there, reusing its per-pair results for unchanged files
        (``.wash-cache.jsonl``, see :class:`_Cache`): resuming an interrupted wash or trying another threshold
        costs only the new work. A folder with other files is refused.
    min_psnr : wash PSNR floor in dB (module docstring).
    scale : only pairs of this scale (a folder's pairs must then be exactly this scale); default: inferred per pair.
    min_ssim, max_shift : optional SSIM floor and residual-shift ceiling (LR px).
    max_misalignment : limit of the independent verifier (:mod:`realsr_tools.verification`, LR px): a pair whose
        fitted displacement field exceeds it anywhere on its measurable area by more than
        :data:`~realsr_tools.verification.DEFAULT_SIGMAS` standard errors (or whose tile p95 beyond noise exceeds
        :data:`~realsr_tools.verification.DEFAULT_P95_FACTOR` times it) is dropped as ``misaligned: ...``; ``None``
        turns the check off. Unmeasurable pairs (flat or
        one-directional content) are counted and listed; the PSNR floor alone decides them, unless
    drop_unmeasurable : drop them too (``unmeasurable: ...``): keep only pairs the verifier measured aligned. Where
        nothing can be measured nothing confirms the pair either: of align's pairs on the independent generator's
        and realsr's simulated captures (1,123), those its verifier called unmeasurable missed the accuracy target
        2.7 times as often as those it measured aligned (7 of 95 against 28 of 1,028), one by 0.95 LR px.
    dry_run : score, print nothing here, write nothing; ``WashSummary.sweep`` says how many pairs several PSNR floors
        would keep.
    workers : local processes scoring pairs in parallel; default: every CPU this process may use.
    scheduler, scheduler_file : score the pairs on this Dask cluster instead
        (:func:`realsr_tools.pipeline.runner.open_runner`). Workers only compute; this process writes every file.
    """
    from ..pipeline.runner import TaskLost, open_runner, run_items

    source, out_dir = Path(source), Path(out_dir)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    _check_thresholds(scale=scale, min_psnr=min_psnr, min_ssim=min_ssim, max_shift=max_shift)
    pairs = open_pairs(source, scale=scale)
    if not pairs.pairs:
        raise InputError(f"{source}: no usable pairs (all failed or dropped upstream)")
    check_pairs_fit(pairs, scale=scale)
    if not dry_run:
        check_meta_info_names(pairs)
        output = prepare_stage_output(out_dir, "wash", policy="replace", source=pairs.root,
                                      owned=("HR", "LR", "report"), clear=("HR", "LR", "report"))

    cache = _Cache(out_dir / CACHE_NAME, writable=not dry_run)
    with open_runner(workers, scheduler=scheduler, scheduler_file=scheduler_file) as runner:
        def cached(kind: str, fn: Callable, jobs: list[tuple], keys: list[str], description: str) -> list:
            """``fn`` over ``jobs`` in order; results an earlier run computed for the same key are reused. A task
            lost with its worker gives ``lost(job, reason)`` and is not cached (a re-run tries it again)."""
            todo = [i for i, key in enumerate(keys) if (kind, key) not in cache]
            lost_now: dict[int, Any] = {}
            for index, result in run_items(runner, fn, [jobs[i] for i in todo], name=description,
                                           labels=[jobs[i][0].id for i in todo], show_progress=show_progress):
                if isinstance(result, TaskLost):
                    lost_now[todo[index]] = _LOST[kind](jobs[todo[index]], result.reason)
                else:
                    cache.put(kind, keys[todo[index]], result)
            return [lost_now[i] if i in lost_now else cache.get(kind, key) for i, key in enumerate(keys)]

        identity = {p.id: _identity(p) for p in pairs.pairs}
        items = [replace(item, pair=p) for p, item in zip(pairs.pairs, cached(
            "read", _inspect, [(p, scale, pairs.kind) for p in pairs.pairs],
            [f"{identity[p.id]}|{scale}|{pairs.kind}|{_camera(p)}" for p in pairs.pairs], "wash: read"))]
        groups: dict[tuple[str, int], list[_Item]] = {}
        for item in items:
            if item.group is not None:
                groups.setdefault(item.group, []).append(item)
        models: dict[tuple[str, int], Degradation] = {}
        for key, members in groups.items():
            chosen = [members[i] for i in np.unique(np.linspace(0, len(members) - 1, min(FIT_PAIRS, len(members)))
                                                    .round().astype(int))]
            fits = [f for f in cached("fit", _fit, [(m.pair, key[1]) for m in chosen],
                                      [f"{identity[m.pair.id]}|{key[1]}" for m in chosen],
                                      f"wash: fit {key[0]} x{key[1]}") if f is not None]
            if fits:
                models[key] = aggregate(fits, scale=key[1])
        readable = [item for item in items if item.error is None]
        model_of = {key: _digest(model.to_dict()) for key, model in models.items()}
        scores = dict(zip([item.pair.id for item in readable], cached(
            "score", _score, [(item.pair, models.get(item.group)) for item in readable],
            [f"{identity[item.pair.id]}|{model_of.get(item.group)}" for item in readable], "wash: score")))

    records = []
    for item in items:
        result = scores.get(item.pair.id)
        records.append(_record(item, result, pairs, min_psnr=min_psnr, min_ssim=min_ssim, max_shift=max_shift,
                               max_misalignment=max_misalignment, drop_unmeasurable=drop_unmeasurable))
    sweep = tuple((round(min_psnr + d, 2), sum(1 for r in records if r["status"] == "ok" and not r["misaligned"]
                                               and not any(x.startswith("unmeasurable: ") for x in r["reasons"])
                                               and not verdict(_as_score(r), min_psnr=min_psnr + d,
                                                               min_ssim=min_ssim, max_shift=max_shift)))
                  for d in DRY_RUN_OFFSETS)
    by_reason = Counter(reason.split(":")[0] for r in records for reason in r["reasons"])
    counts = dict(pairs=len(records), kept=sum(r["kept"] for r in records),
                  dropped=sum(not r["kept"] and r["status"] == "ok" for r in records),
                  failed=sum(r["status"] == "failed" for r in records),
                  flat=sum(bool(r.get("flat")) for r in records),
                  unmeasurable=sum(r["status"] == "ok" and r["verification"]["verdict"] == "unmeasurable"
                                   for r in records if r.get("verification")),
                  misaligned=sum(bool(r.get("misaligned")) for r in records))
    names = tuple(f"{camera} x{s}" for camera, s in models)
    if dry_run:
        return WashSummary(out_dir=out_dir, manifest=None, meta_info=None, report=None, by_reason=dict(by_reason),
                           sweep=sweep, groups=names, **counts)

    params = {"min_psnr": min_psnr, "min_ssim": min_ssim, "max_shift": max_shift,
              "max_misalignment": max_misalignment, "drop_unmeasurable": drop_unmeasurable,
              "verifier_version": VERIFIER_VERSION, "scale": scale,
              "lowpass_sigma": LOWPASS_SIGMA, "texture_std": TEXTURE_STD, "min_textured": MIN_TEXTURED,
              "crop_border": CROP_BORDER, "fit_pairs": FIT_PAIRS}
    header = make_header("wash", params=params, path_keys=("lr_kept", "hr_kept"),
                         upstream=pairs.manifest.path if pairs.manifest else None, out_dir=out_dir)
    header["source"] = str(pairs.root.resolve())
    header["degradation"] = {f"{camera} x{s}": model.to_dict() for (camera, s), model in models.items()}
    cache.compact()
    output.clear()
    shape_of = {item.pair.id: item.hr_shape for item in items}
    meta_lines = []
    with StageWriter(out_dir, header) as writer:
        for item, record in zip(items, records):
            if record["kept"]:
                name = f"{item.pair.id}{item.pair.hr.suffix.lower()}"
                lr_name = f"{item.pair.id}{item.pair.lr.suffix.lower()}"
                _link(item.pair.hr, out_dir / "HR" / name)
                _link(item.pair.lr, out_dir / "LR" / lr_name)
                record["hr_kept"], record["lr_kept"] = f"HR/{name}", f"LR/{lr_name}"
                h, w = shape_of[item.pair.id]
                meta_lines.append(f"{name} ({h},{w},3)")
            writer.add(record)
    meta = atomic_write_text(out_dir / "meta_info.txt", "".join(line + "\n" for line in sorted(meta_lines)))
    report = write_report(out_dir / "report", records, items, models, min_psnr=min_psnr, by_reason=by_reason,
                          counts=counts, drop_unmeasurable=drop_unmeasurable)
    return WashSummary(out_dir=out_dir, manifest=out_dir / MANIFEST_NAME, meta_info=meta, report=report,
                       by_reason=dict(by_reason), sweep=sweep, groups=names, **counts)


def _check_thresholds(*, scale: int | None, min_psnr: float, min_ssim: float | None,
                      max_shift: float | None) -> None:
    """Refuse thresholds that make no sense (NaN compares false with everything: it would drop every pair)."""
    import math

    problems = []
    if scale is not None and scale < 1:
        problems.append(f"--scale must be a positive integer, got {scale}")
    if not (math.isfinite(min_psnr) and min_psnr >= 0):
        problems.append(f"--min-psnr must be a finite number of dB >= 0, got {min_psnr}")
    if min_ssim is not None and not 0 <= min_ssim <= 1:
        problems.append(f"--min-ssim must be between 0 and 1, got {min_ssim}")
    if max_shift is not None and not (math.isfinite(max_shift) and max_shift > 0):
        problems.append(f"--max-shift must be a positive number of LR pixels, got {max_shift}")
    if problems:
        raise ConfigError("; ".join(problems))


def _as_score(record: dict[str, Any]) -> PairScore:
    return PairScore(psnr=record["psnr"], ssim=record["ssim"], shift=record["shift"],
                     shift_worst=record.get("shift_worst"), textured=record.get("textured", 1.0),
                     flat=bool(record.get("flat")), exposure=())


def _record(item: _Item, result: tuple[PairScore, Verification] | str | None, pairs: PairSource, *,
            min_psnr: float, min_ssim: float | None, max_shift: float | None,
            max_misalignment: float | None, drop_unmeasurable: bool = False) -> dict[str, Any]:
    pair = item.pair
    record: dict[str, Any] = {"id": pair.id, "hr": _as_in_source(pair, "hr", pairs),
                              "lr": _as_in_source(pair, "lr", pairs), "scale": item.group[1] if item.group else None}
    error = item.error or (result if isinstance(result, str) else None)
    if error is not None or not isinstance(result, tuple):
        error = error or "no degradation could be estimated for this pair's camera and scale"
        record.update(status="failed", error=error, psnr=None, ssim=None, shift=None, kept=False,
                      reasons=[f"failed: {error}"], verification=None, misaligned=False)
        return record
    result, verification = result
    reasons = verdict(result, min_psnr=min_psnr, min_ssim=min_ssim, max_shift=max_shift)
    misaligned = False
    if max_misalignment is not None:
        verification = verification.with_limit(max_misalignment)
        misaligned = verification.verdict == "misaligned"
        if misaligned:
            reasons.append(f"misaligned: {verification.reason}")
    if drop_unmeasurable and verification.verdict == "unmeasurable":
        reasons.append(f"unmeasurable: {verification.reason}")
    record.update(status="ok", psnr=round(result.psnr, 3), ssim=round(result.ssim, 4),
                  shift=None if result.shift is None else round(result.shift, 3),
                  shift_worst=None if result.shift_worst is None else round(result.shift_worst, 3),
                  textured=round(result.textured, 3), flat=result.flat, camera=item.group[0],
                  exposure=[round(v, 4) for v in result.exposure], kept=not reasons, reasons=reasons,
                  misaligned=misaligned, verification=verification.to_dict())
    if pair.record.get("quality") is not None:
        record["align_quality"] = pair.record["quality"]
    return record


def _as_in_source(pair: PairRef, key: str, pairs: PairSource) -> str:
    """The pair's file as its source names it: the manifest's own path, or ``HR/name`` in a folder."""
    if pairs.kind == "manifest":
        from ..pipeline.pairs import PAIR_KEYS

        lr_key, hr_key = PAIR_KEYS[pairs.manifest.stage]
        return pair.record[hr_key if key == "hr" else lr_key]
    path = pair.hr if key == "hr" else pair.lr
    return PurePosixPath(path.parent.name, path.name).as_posix()


def _link(source: Path, target: Path) -> None:
    """Hard link ``target`` to ``source``; copy when the file system refuses (other device, no link support).

    An existing ``target`` is an error, never written to: it may be a hard link to a source file (writing through it
    would change the source). The copy goes to a new temporary file that is then renamed onto ``target``.
    """
    from ..pipeline.output import location_error

    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(target):
        raise OutputExistsError(f"{target}: already exists; wash writes each kept pair once (are two pair ids the "
                                "same?)")
    try:
        os.link(source, target)
        return
    except FileExistsError:
        raise OutputExistsError(f"{target}: already exists; wash writes each kept pair once") from None
    except OSError as exc:
        if location_error(exc, target) is not None and exc.errno not in (errno.EPERM, errno.EACCES):
            raise location_error(exc, target) from None
    with atomic_output(target) as tmp:  # other device or no hard links: copy into a fresh file
        shutil.copy2(source, tmp)


# ----------------------------------------------------------------------------------------------------------------
# Per-pair work (runs in worker processes)


CACHE_NAME = ".wash-cache.jsonl"


def _identity(pair: PairRef) -> str:
    """A pair's two files as they are now (path, size, modification time): a changed file is scored again."""
    parts = []
    for path in (pair.lr, pair.hr):
        try:
            stat = path.stat()
            parts.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}:missing")
    return "|".join(parts)


def _digest(value: Any) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class _Cache:
    """Per-pair results of earlier washes into the same folder, so a re-run (after an interruption, or with other
    thresholds) only reads and scores what changed.

    One JSON line per result, appended and flushed as each arrives (a killed run keeps what it finished; a torn
    last line is ignored). Entries are keyed by the pair's file identity, the degradation model it was scored
    with and :data:`SCORING` (the constants of the definition): change any and the pair is recomputed. Delete the
    file to force a full re-score.
    """

    def __init__(self, path: Path, *, writable: bool):
        import json

        self.path, self.writable = path, writable
        self.entries: dict[tuple[str, str], Any] = {}
        self.used: set[tuple[str, str]] = set()
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    if entry["scoring"] == SCORING:
                        self.entries[entry["kind"], entry["key"]] = _decode(entry["kind"], entry["value"])
                except (ValueError, KeyError, TypeError):
                    continue

    def __contains__(self, kind_key: tuple[str, str]) -> bool:
        return kind_key in self.entries

    def get(self, kind: str, key: str) -> Any:
        self.used.add((kind, key))
        return self.entries[kind, key]

    def put(self, kind: str, key: str, value: Any) -> None:
        self.entries[kind, key] = value
        self.used.add((kind, key))
        if self.writable:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as stream:
                stream.write(self._line(kind, key))

    def compact(self) -> None:
        """Keep only what this run used (atomically): stale results and a torn last line do not pile up."""
        if self.writable:
            atomic_write_text(self.path, "".join(self._line(kind, key) for kind, key in sorted(self.used)))

    def _line(self, kind: str, key: str) -> str:
        import json

        return json.dumps({"scoring": SCORING, "kind": kind, "key": key,
                           "value": _encode(self.entries[kind, key])}) + "\n"


def _encode(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], PairScore):
        return _encode(value[0]) | {"verification": value[1].to_dict()}
    if isinstance(value, _Item):
        return {"group": value.group, "hr_shape": value.hr_shape, "error": value.error}
    if isinstance(value, PairFit):
        return {"kernel": value.kernel.tolist(), "colour": value.colour.tolist()}
    if isinstance(value, PairScore):
        return {"score": [value.psnr, value.ssim, value.shift, value.shift_worst, value.textured, value.flat,
                          list(value.exposure)]}
    return value  # None (no fit) or a failure message


def _decode(kind: str, value: Any) -> Any:
    if kind == "read":
        group, shape = value["group"], value["hr_shape"]
        return _Item(None, tuple(group) if group else None, tuple(shape) if shape else None, value["error"])
    if kind == "fit" and value is not None:
        return PairFit(np.asarray(value["kernel"]), np.asarray(value["colour"]))
    if kind == "score" and isinstance(value, dict):
        psnr, ssim, shift, worst, textured, flat, exposure = value["score"]
        return (PairScore(psnr, ssim, shift, worst, textured, flat, tuple(exposure)),
                Verification.from_dict(value["verification"]))
    return value


# What a task lost with its worker (see realsr_tools.pipeline.runner.TaskLost) stands for, per phase: an unreadable
# pair, no fit, a failed score.
_LOST: dict[str, Callable[[tuple, str], Any]] = {
    "read": lambda job, reason: _Item(job[0], None, None, reason),
    "fit": lambda job, reason: None,
    "score": lambda job, reason: reason,
}


def _read(pair: PairRef, scale: int | None, kind: str) -> tuple[np.ndarray, np.ndarray, int]:
    from ..imaging import read_image

    lr, hr = read_image(pair.lr), read_image(pair.hr)
    wanted = scale or pair.scale
    if wanted is not None and kind == "folder":
        check_scale(hr.shape, lr.shape, wanted, hr=pair.hr, lr=pair.lr)
        return lr, hr, wanted
    found = infer_scale(hr.shape, lr.shape, hr=pair.hr, lr=pair.lr)
    if wanted is not None and found != wanted:
        raise InputError(f"{pair.hr}: the manifest says scale {wanted} but HR is {found}x its LR")
    return lr, hr, found


def _camera(pair: PairRef) -> str:
    return str(pair.record.get("camera") or "all")


def _inspect(args: tuple[PairRef, int | None, str]) -> _Item:
    pair, scale, kind = args
    try:
        lr, hr, found = _read(pair, scale, kind)
    except RealsrError as exc:
        return _Item(pair, None, None, str(exc))
    return _Item(pair, (_camera(pair), found), hr.shape[:2], None)


def _fit(args: tuple[PairRef, int]) -> PairFit | None:
    pair, scale = args
    try:
        lr, hr, _ = _read(pair, scale, "manifest")
    except RealsrError:
        return None
    return fit_pair(lr, hr, scale=scale)


def _score(args: tuple[PairRef, Degradation | None]) -> tuple[PairScore, Verification] | str:
    """The wash PSNR (against the dataset's degradation) and the independent verifier's displacement field (LR
    against the HR area-downscaled to the LR grid: no fitted kernel can absorb a shift common to the dataset; the
    channels either file holds at its top value measured around, not read as displacement)."""
    from ..verification import clipped_channels, verify

    pair, model = args
    if model is None:
        return "no degradation could be estimated for this pair's camera and scale"
    try:
        lr, hr, _ = _read(pair, model.scale, "manifest")
    except RealsrError as exc:
        return str(exc)
    return score_pair(lr, hr, model), verify(lr, _on_lr_grid(hr, lr), limit=DEFAULT_LIMIT, sigmas=DEFAULT_SIGMAS,
                                             p95_factor=DEFAULT_P95_FACTOR, clipped=clipped_channels(lr, hr))


def _on_lr_grid(hr: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """The HR area-downscaled to the LR grid: what the verifier compares the LR with (no fitted kernel)."""
    import cv2

    return cv2.resize(hr, lr.shape[1::-1], interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------------------------------------------
# Report


def write_report(folder: Path, records: list[dict[str, Any]], items: Iterable[_Item],
                 models: dict[tuple[str, int], Degradation], *, min_psnr: float, by_reason: Counter,
                 counts: dict[str, int], drop_unmeasurable: bool = False) -> Path:
    """``report/summary.txt`` (counts by reason), ``psnr_histogram.png`` (with the threshold), ``worst.png`` and
    ``misaligned.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    scored = [r for r in records if r["status"] == "ok"]
    values = np.array([r["psnr"] for r in scored if np.isfinite(r["psnr"])])
    figure, axes = plt.subplots(figsize=(7, 4))
    if len(values):
        axes.hist(values, bins=max(10, min(60, len(values) // 3)), color="#4477aa")
    axes.axvline(min_psnr, color="#cc3311", linestyle="--", label=f"--min-psnr {min_psnr:g}")
    axes.set_xlabel("wash PSNR (dB): LR vs HR under the dataset's degradation, textured pixels")
    axes.set_ylabel("pairs")
    axes.set_title(f"{counts['kept']} kept, {counts['dropped']} dropped, {counts['failed']} failed")
    axes.legend()
    figure.tight_layout()
    with atomic_output(folder / "psnr_histogram.png") as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)

    lines = [f"pairs {counts['pairs']}", f"kept {counts['kept']}", f"dropped {counts['dropped']}",
             f"failed {counts['failed']}", f"misaligned (verifier) {counts['misaligned']}",
             f"unmeasurable (verifier: flat or one-directional; "
             f"{'dropped: --drop-unmeasurable' if drop_unmeasurable else 'PSNR floor alone decides'}) "
             f"{counts['unmeasurable']}",
             f"flat (under {MIN_TEXTURED:.0%} textured pixels for the wash PSNR) {counts['flat']}", "",
             "dropped by reason (a pair may have several):"]
    lines += [f"  {reason}: {n}" for reason, n in by_reason.most_common()] or ["  none"]
    lines += ["", "flat pairs:"] + [f"  {r['id']} psnr {r['psnr']}" for r in scored if r.get("flat")]
    lines += ["", "unmeasurable pairs:"] + [
        f"  {r['id']} psnr {r['psnr']} {'kept' if r['kept'] else 'dropped'}: {r['verification']['reason']}"
        for r in scored if r["verification"]["verdict"] == "unmeasurable"]
    atomic_write_text(folder / "summary.txt", "\n".join(lines) + "\n")

    by_id = {item.pair.id: item for item in items}
    worst = sorted(scored, key=lambda r: r["psnr"])[:WORST_SHOWN]
    if worst:
        _contact_sheet(folder / "worst.png", [(r, by_id[r["id"]].pair, models[(r["camera"], r["scale"])])
                                              for r in worst])
    misaligned = sorted((r for r in scored if r["misaligned"]), key=lambda r: -(r["verification"]["field"] or 0))
    if misaligned:
        _verifier_sheet(folder / "misaligned.png", [(r, by_id[r["id"]].pair) for r in misaligned[:WORST_SHOWN]])
    return folder


def _verifier_sheet(path: Path, rows: list[tuple[dict[str, Any], PairRef]]) -> None:
    """One align-style preview per pair the verifier dropped (LR | HR checkerboard, difference, the verifier's tile
    shifts), largest field first, under a line with the id and the verifier's reason: the picture of why."""
    import cv2

    from ..imaging import read_image, to_integer, write_image
    from ..previews import preview_image
    from ..verification import measure_tiles

    sheet = []
    for record, pair in rows:
        lr = read_image(pair.lr)
        on_lr = _on_lr_grid(read_image(pair.hr), lr)
        # The tiles are measured again as _score did (the cache keeps the verdict, not the tiles); the verdict drawn
        # is the record's, judged against this run's --max-misalignment.
        tiles, _, _ = measure_tiles(lr, on_lr)
        verification = Verification.from_dict(record["verification"])
        preview = to_integer(preview_image(lr, on_lr, tiles=tiles, verification=verification))
        banner = np.full((22, preview.shape[1], 3), 235, np.uint8)
        text = f"{record['id']}: {verification.reason}"
        cv2.putText(banner, text[:150], (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        sheet.append(np.concatenate([banner, preview], axis=0))
    width = max(r.shape[1] for r in sheet)
    sheet = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in sheet]
    write_image(path, np.concatenate(sheet, axis=0))


def _contact_sheet(path: Path, rows: list[tuple[dict[str, Any], PairRef, Degradation]], *, tile: int = 160) -> None:
    """One row per pair: LR, the HR's prediction, 4x the absolute difference; with id, PSNR and reasons."""
    import cv2

    from ..imaging import read_image, to_integer, write_image

    sheet = []
    for record, pair, model in rows:
        lr, hr = read_image(pair.lr), read_image(pair.hr)
        fitted, _ = fit_exposure(lr, apply(hr, model))
        panels = [lr, fitted, np.clip(4 * np.abs(lr - fitted), 0, 1)]
        panels = [cv2.resize(p, (tile, tile * p.shape[0] // p.shape[1]), interpolation=cv2.INTER_AREA)
                  for p in panels]
        row = np.concatenate(panels, axis=1)
        banner = np.full((22, row.shape[1], 3), 255, np.uint8)
        text = f"{record['id']}  {record['psnr']:.1f} dB  {' '.join(record['reasons']) or 'kept'}"
        cv2.putText(banner, text[:60], (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        sheet.append(np.concatenate([banner, to_integer(row)], axis=0))
    labels = np.full((22, sheet[0].shape[1], 3), 235, np.uint8)
    for i, text in enumerate(("LR", "HR, fitted degradation", "4 x |difference|")):
        cv2.putText(labels, text, (4 + i * tile, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    sheet.insert(0, labels)
    width = max(r.shape[1] for r in sheet)
    sheet = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in sheet]
    write_image(path, np.concatenate(sheet, axis=0))
