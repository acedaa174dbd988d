"""The ``align`` stage: register every planned pair of a capture folder, write aligned pairs and the manifest.

The algorithms are :mod:`realsr_tools.registration`, :mod:`realsr_tools.geometry` and
:mod:`realsr_tools.photometric`; this module reads captures, writes outputs and records.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..colour import conversion, convert_encoding
from ..errors import RegistrationError
from ..geometry import (RadialDistortion, apply_homography, local_zoom, map_lr_to_hr, output_window, term_power,
                        warp_hr)
from ..imaging import DEFAULT_RAW, RawRendering
from ..imaging.transfer import StatedCurve, stated_curve
from ..pipeline.output import holds_output
from ..pipeline.runner import TaskLost
from ..registration import check_registration, distortion_check, register_captures
from ..registration.curves import CurveEstimate, camera_curve, exposure_curve, scene_curve
from ..registration.estimate import (HYPOTHESIS_ALONE, MAX_CONFIRMED_UNCERTAINTY, MAX_RESIDUAL_MEDIAN,
                                    MAX_UNCERTAINTY, _round, texture_refusal)
from ..registration.luma import grey_weights as luma_weights
from ..registration.luma import decoder, linear, linear_area_downscale

QUALITY_SIZE = 1024  # SSIM and residual shift are measured on the central QUALITY_SIZE^2 LR pixels at most
OUTPUT_KEYS = ("lr", "hr")
# A resume with other values of these would mix two datasets.
RESUME_PARAMS = ("bit_depth", "photometric", "raw_rendering", "max_uncertainty", "raster_curve")
PATH_KEYS = ("lr", "hr", "mask")
PNG_COMPRESSION = 1  # zlib level: 1 writes a 20-MP PNG in about half the time of level 3, files ~5 % larger
# LR px: the verifier's limit on the fitted displacement field anywhere on the measured area (and FIELD_P95_FACTOR x
# on the tile p95 beyond noise). A refusal here loses the pair, and a field is largest at the window's corners, so a
# pair registered to 0.22 LR px RMS (simulated hard set, seed 1) shows 0.46 px at a corner. 0.5 is the issue's "no
# ok pair worse than 0.5 px". A pair is written only where the field is within the limit at one standard error above
# its estimate (FIELD_SIGMAS = -1: its upper bound; wash judges the lower bound, DEFAULT_SIGMAS): judged on the point
# estimate, a generator photograph on a 5136-px frame read 0.45 +- 0.21 px and was written `ok` 0.67 px RMS off the
# truth (2.8 px at a corner); a sparse pair whose corner the verifier cannot pin is refused, not given the doubt.
MAX_FIELD_DISPLACEMENT = 0.5
FIELD_SIGMAS = -1.0
# The scene check's direct registrations (_misaligned_direct) are judged on the point estimate: there "misaligned"
# discards a disagreement's evidence, so the doubt goes to the evidence.
DIRECT_FIELD_SIGMAS = 0.0
FIELD_P95_FACTOR = 2.5


@dataclass(frozen=True)
class AlignSummary:
    """Counts of one ``run_align`` call and where its manifest is."""

    ok: int
    failed: int
    skipped: int
    manifest: Path
    failures: tuple[tuple[str, str], ...] = field(default=())  # (pair id, reason) of this run's failures
    unmeasurable: int = 0  # of this run's ok pairs: the verifier could not measure their displacement field


@dataclass(frozen=True)
class AlignSettings:
    """What every pair and scene task of one ``run_align`` call needs to know (workers receive it pickled)."""

    capture_dir: Path
    out_dir: Path
    preview: bool
    bit_depth: int
    photometric: bool
    raw: RawRendering = DEFAULT_RAW
    max_uncertainty: float = MAX_UNCERTAINTY
    scene_check: bool = False  # with it, pairs above the gate up to MAX_CONFIRMED_UNCERTAINTY are written provisionally
    raster_curve: str = "auto"  # JPEG/PNG/TIFF captures: "auto" (each file's own, imaging.transfer) or one curve name
    # pair id -> the curve its scene's exposures found, for the pairs that take it (:func:`scene_curves`)
    scene_curves: dict[str, dict[str, Any]] = field(default_factory=dict)


@holds_output()
def run_align(capture_dir: Path | str, out_dir: Path | str, *, scales: Sequence[int] = (2, 3, 4),
              workers: int | None = None, preview: bool = False, overwrite: bool = False, bit_depth: int = 8,
              photometric: bool = True, raw: RawRendering = DEFAULT_RAW, max_uncertainty: float = MAX_UNCERTAINTY,
              show_progress: bool = True, scheduler: str | None = None,
              scheduler_file: Path | str | None = None, scene_check: bool = True,
              raster_curve: str = "auto") -> AlignSummary:
    """Register every planned pair of a capture folder and write aligned LR/HR pairs and the ``align`` manifest.

    Parameters
    ----------
    capture_dir : capture root (scene folders, optional ``captures.csv``); pairs come from
        :func:`realsr_tools.captures.discover`.
    out_dir : output folder: ``LR/x<s>/<id>.png``, ``HR/x<s>/<id>.png`` (BasicSR's folder names, as crop and
        wash; manifests of earlier versions with ``lr/``, ``hr/`` still read, since records store their paths),
        ``preview/<id>.png``, ``manifest.jsonl``.
    scales : nominal tracks to align; pairs of other tracks are left out.
    workers : pairs aligned in parallel (local processes); default: every CPU this process may use.
    preview : write a small checkerboard / difference PNG per pair.
    overwrite : redo pairs already aligned (default: skip them, i.e. resume).
    bit_depth : 8 or 16 bits per channel for the output PNGs.
    photometric : correct the LR towards the HR (:mod:`realsr_tools.photometric`); ``False`` keeps the LR
        pixels bit-exact (crop only).
    raw : how RAW captures are rendered (:class:`realsr_tools.imaging.RawRendering`; every capture alike).
    max_uncertainty : LR px of corner standard deviation above which a pair is refused for too little texture
        (:func:`realsr_tools.registration.check_registration`) unless the scene check confirms it (up to
        :data:`MAX_CONFIRMED_UNCERTAINTY`); lower keeps fewer, better pinned pairs.
    show_progress : draw a progress bar.
    scheduler, scheduler_file : run the pairs on this Dask cluster instead
        (:func:`realsr_tools.pipeline.runner.open_runner`).
    scene_check : once a scene's pairs are written, register its LR captures to each other and refuse a pair that
        disagrees with every other capture of its scene (:mod:`realsr_tools.registration.consistency`; about one
        more registration per pair in scenes of three LR captures). A pair above the texture gate, up to
        :data:`MAX_CONFIRMED_UNCERTAINTY`, is written provisionally and kept only if a capture of its scene that
        passed the gate agrees with it; without the check the gate alone decides. With it, a pair is written with
        the mapping its scene's narrowest capture implies where that is the better pinned, and a pair refused on
        its own is offered that mapping (docs/align.md, "The scene check", steps 5 and 6).
    raster_curve : the transfer curve JPEG, PNG and TIFF captures are decoded with for registration: ``"auto"``
        (the one each file states, :func:`realsr_tools.imaging.transfer.stated_curve`; sRGB where it states none)
        or one name of :func:`realsr_tools.registration.luma.decoder` for all (``"power:2.2"``). RAW files are
        decoded with ``raw.gamma``.
    """
    from ..captures import discover
    from ..errors import ConfigError, InputError
    from ..pipeline.manifest import StageWriter, make_header
    from ..pipeline.resume import prepare_stage_output
    from ..pipeline.runner import input_order, open_runner, run_items

    capture_dir, out_dir = Path(capture_dir), Path(out_dir)
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit depth must be 8 or 16, got {bit_depth}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if not max_uncertainty > 0:
        raise ConfigError(f"--max-uncertainty must be a positive number of LR px, got {max_uncertainty}")
    if raster_curve != "auto":
        try:
            decoder(raster_curve)
        except ValueError as exc:
            raise ConfigError(f"--raster-curve: {exc}, or auto") from None
    found = discover(capture_dir)
    pairs = [pair for pair in found.pairs if pair.scale in set(scales)]
    blocked = found.blocked  # unreadable captures that leave their scene without an HR: failed records
    if not pairs and not blocked:
        raise InputError(f"{capture_dir}: no LR/HR pair at scale(s) {', '.join(map(str, scales))}; run "
                         "'realsr inspect' to see the scenes, focal lengths and problems")
    header = make_header("align", params={
        "capture_root": str(capture_dir.resolve()), "scales": list(scales), "bit_depth": bit_depth,
        "photometric": photometric, "preview": preview, "mask": None, "raw_rendering": asdict(raw),
        "max_uncertainty": max_uncertainty, "scene_check": scene_check, "raster_curve": raster_curve,
        "convention": "lr_to_hr maps LR source px to HR source px; (x, y), pixel centres at integers, (0, 0) the "
                      "top-left pixel centre, images as decoded (EXIF orientation applied)",
    }, path_keys=PATH_KEYS)
    # A resume keeps the scales and previews free (other scales' pairs are simply not in this run's manifest).
    done = prepare_stage_output(out_dir, "align", source=capture_dir, inside_source=False,
                                source_name="capture folder", owned=("LR", "HR", "preview"), output_keys=OUTPUT_KEYS,
                                optional_keys=("preview",),
                                params={key: header["params"][key] for key in RESUME_PARAMS},
                                overwrite=overwrite).done
    wanted = {pair.id for pair in pairs}
    keep = [record for key, record in done.items() if key in wanted]
    todo = [pair for pair in pairs if pair.id not in done]
    settings = AlignSettings(capture_dir, out_dir, preview, bit_depth, photometric, raw, max_uncertainty, scene_check,
                             raster_curve)
    ok = failed = unmeasurable = 0
    failures: dict[str, str] = {}  # pair id -> why, in the order they failed
    lost = set()
    unconfirmed = set()  # left unconfirmed by this run's scene check (a resumed run's earlier pairs too)
    # The runner first: a cluster is refused (unreachable, another realsr) before anything is written.
    order = input_order([pair_id for pair_id, _, _ in blocked] + [pair.id for pair in pairs])
    with open_runner(workers, scheduler=scheduler, scheduler_file=scheduler_file) as runner, \
            StageWriter(out_dir, header, keep=keep, order=order) as writer:
        for pair_id, path, reason in blocked:
            writer.add({"id": pair_id, "status": "failed", "error": reason, "lr_source": path, "scale": None,
                        "lr": None, "hr": None, "mask": None})
            failed += 1
            failures[pair_id] = reason
        for index, record in run_items(runner, functools.partial(align_pair, settings=settings), todo, name="align",
                                       labels=[pair.id for pair in todo], show_progress=show_progress):
            if isinstance(record, TaskLost):
                record = _new_record(todo[index]) | {"error": record.reason}
                lost.add(record["id"])
            writer.add(record)
            if record["status"] == "ok":
                ok += 1
                unmeasurable += record["verification"]["verdict"] == "unmeasurable"
            else:
                failed += 1
                failures[record["id"]] = record["error"]
        skipped = len(pairs) - len(todo)
        new = {pair.id for pair in todo}
        verified = {record["id"]: record["verification"] and record["verification"]["verdict"]
                    for record in writer.records}

        def rewritten(record: dict[str, Any]) -> None:
            """A written pair's record replaced after the pair loop (aligned again, or refused): the counts follow."""
            nonlocal ok, failed, skipped, unmeasurable
            writer.add(record)
            pair_id, written = record["id"], record["status"] == "ok"
            if pair_id in new:
                unmeasurable += ((written and record["verification"]["verdict"] == "unmeasurable")
                                 - (verified[pair_id] == "unmeasurable"))
                ok -= not written
            elif not written:
                skipped -= 1
            if not written:
                failed += 1
                failures[pair_id] = record["error"]
            verified[pair_id] = record["verification"] and record["verification"]["verdict"]

        # Pairs whose exposures could not tell the captures' curve take the one their scene's other pairs found;
        # every later task (the scene check's registrations, the chains) decodes them with it.
        settings = replace(settings, scene_curves=scene_curves(writer.records))
        for record in _decode_with_scene_curves(runner, writer.records, settings, show_progress):
            rewritten(record)
        for record in (_check_scenes(runner, writer.records, settings, show_progress) if scene_check
                       else _unconfirmed(writer.records, settings)):
            rewritten(record)
            if (record.get("consistency") or {}).get("verdict") == "unconfirmed" and record["status"] != "ok":
                unconfirmed.add(record["id"])
        if scene_check:
            # Pairs this run refused on their own or left unconfirmed (not outvoted, not lost): the chain of their
            # scene's narrowest capture, where one qualifies.
            refused = unconfirmed | {record["id"] for record in writer.records if record["id"] in new
                                     and record["status"] != "ok" and record["id"] not in lost
                                     and record.get("consistency") is None}
            for record in _chain_refused(runner, writer.records, refused, settings, show_progress):
                writer.add(record)
                if record["status"] == "ok":
                    del failures[record["id"]]
                    ok, failed = ok + 1, failed - 1
                    unmeasurable += record["verification"]["verdict"] == "unmeasurable"
                else:
                    failures[record["id"]] = record["error"]
    return AlignSummary(ok, failed, skipped, out_dir / "manifest.jsonl", tuple(failures.items()), unmeasurable)


CAMERA_FROM_LISTED = 3  # deciding pairs a camera's curve names in a taker's record (all are counted)


def scene_curves(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The written pairs of an align manifest that take the curve their scene's exposures found
    (:func:`.curves.scene_curve`), or, in a scene where none decided, their camera's (:func:`.curves.camera_curve`):
    pair id -> ``{"curve", "from"`` (the pairs that found it; a camera's first CAMERA_FROM_LISTED)``, "deciders"``
    (how many found it)``, "own"`` (the pair's own estimate)``, "camera"`` (``None`` for the scene's curve)``}``. Pairs already decoded with it are named too (a resumed run decodes them the same way). A camera
    is its name and the file types of its scenes' captures: another writer of the same camera's files may use
    another curve."""
    chosen = {}
    cameras: dict[tuple, list[tuple[list[dict[str, Any]], list[CurveEstimate | None]]]] = {}
    for members in written_scenes(records).values():
        recorded = [(record["registration"].get("grey") or {}).get("curve_estimate") for record in members]
        estimates = [None if e is None else CurveEstimate.from_dict(e) for e in recorded]
        curve, takers = scene_curve(estimates)
        found = [record["id"] for record, e in zip(members, estimates) if e is not None and e.curve == curve]
        for index in takers:
            chosen[members[index]["id"]] = {"curve": curve, "from": found, "deciders": len(found),
                                            "own": recorded[index], "camera": None}
        if members[0].get("camera"):
            file_types = sorted({Path(record[key]).suffix.lower() for record in members
                                 for key in ("lr_source", "hr_source")})
            cameras.setdefault((members[0]["camera"], *file_types), []).append((members, estimates))
    for (camera, *_), scenes in cameras.items():
        curve, takers = camera_curve([estimates for _, estimates in scenes])
        found = [record["id"] for members, estimates in scenes for record, e in zip(members, estimates)
                 if e is not None and e.curve == curve]
        for i, j in takers:
            record = scenes[i][0][j]
            chosen[record["id"]] = {"curve": curve, "from": found[:CAMERA_FROM_LISTED], "deciders": len(found),
                                    "own": record["registration"]["grey"]["curve_estimate"], "camera": camera}
    return chosen


def _decode_with_scene_curves(runner, records: list[dict[str, Any]], settings: AlignSettings,
                              show_progress: bool) -> list[dict[str, Any]]:
    """Align again each written pair that takes its scene's curve (``settings.scene_curves``) and is not yet decoded
    with it, before the scene check: returns their new records (written, or refused with the curve)."""
    from ..pipeline.runner import run_items

    todo = [record for record in records if record["id"] in settings.scene_curves  # written pairs only
            and record.get("consistency") is None
            and not {"scene_curve", "camera_curve"} & set(record["registration"]["grey"])]
    results = run_items(runner, functools.partial(align_pair, settings=settings), [_planned(r) for r in todo],
                        name="scene curves", labels=[record["id"] for record in todo], show_progress=show_progress)
    # A lost task leaves the pair as it was.
    return [result for _, result in results if not isinstance(result, TaskLost)]


def _check_scenes(runner, records: list[dict[str, Any]], settings: AlignSettings,
                  show_progress: bool) -> list[dict[str, Any]]:
    """The scene check (:mod:`realsr_tools.registration.consistency`) of every scene with a written pair not checked
    yet (this run's, or one a killed run wrote before its check): returns the scene's ok records with their
    ``consistency`` field, the refused ones ``failed`` with their outputs removed."""
    from ..pipeline.runner import run_items

    todo = [members for members in written_scenes(records).values()
            if any(r.get("consistency") is None for r in members)]
    checked = []
    for index, result in run_items(runner, functools.partial(check_scene, settings=settings), todo, name="scenes",
                                   labels=[members[0]["scene"] for members in todo], show_progress=show_progress):
        members = todo[index]
        if isinstance(result, TaskLost):
            # Unchecked rather than refused: the pairs passed every check of their own (but the provisional ones).
            result = [(field, None) for field in _scene_fields(members, [], lost=result.reason)]
        for record, (judged, realigned) in zip(members, result):
            record = dict(realigned or record, consistency=judged)
            if judged["verdict"] == "inconsistent":
                _refuse(record, judged["reason"], settings)
            elif judged["verdict"] == "unconfirmed":
                _refuse(record, f"{_texture_reason(record, settings)}, and {judged['reason']}", settings)
            checked.append(record)
    return checked


def written_scenes(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The written (``ok``) pair records of an align manifest by scene, in manifest order: what the scene check
    judges together."""
    scenes: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record["status"] == "ok":
            scenes.setdefault(record["scene"], []).append(record)
    return scenes


def is_provisional(record: dict[str, Any]) -> bool:
    """Whether a written pair is above the texture gate, kept only if its scene confirms it
    (``registration.needs_confirmation``)."""
    return bool(record["registration"].get("needs_confirmation"))


def _unconfirmed(records: list[dict[str, Any]], settings: AlignSettings) -> list[dict[str, Any]]:
    """Without the scene check: the pairs a run with it wrote provisionally and was killed before confirming
    (``registration.needs_confirmation``, no ``consistency``), refused for too little texture as the gate refuses
    them, their outputs removed."""
    refused = []
    for record in records:
        if record["status"] == "ok" and is_provisional(record) and record.get("consistency") is None:
            record = dict(record)
            _refuse(record, f"{_texture_reason(record, settings)}; written provisionally for the scene check, which "
                    "this run leaves out", settings)
            refused.append(record)
    return refused


def _texture_reason(record: dict[str, Any], settings: AlignSettings) -> str:
    return texture_refusal(record["registration"]["uncertainty"], f"{settings.max_uncertainty:g}")


def _refuse(record: dict[str, Any], reason: str, settings: AlignSettings) -> None:
    """Turn a written pair's record into a refusal: its outputs removed, ``failed`` with ``reason``."""
    for key in OUTPUT_KEYS:
        (settings.out_dir / record[key]).unlink(missing_ok=True)
    record.update(status="failed", lr=None, hr=None, error=reason)


def check_scene(members: list[dict[str, Any]], settings: AlignSettings) -> list[tuple[dict[str, Any], dict | None]]:
    """Register a scene's written LR captures to each other, judge each pair by them, and register a pair they
    outvote again from where they put it (a worker task; :func:`_realign_from_scene`). Returns each member's
    ``consistency`` record field with, for a pair registered again, its new record (else ``None``)."""
    from ..pipeline.runner import one_blas_thread
    from ..registration import consistency

    plan = consistency.comparison_plan([r["focal_ratio"] for r in members])
    failures = _failures()

    comparisons = []
    directs: dict[tuple[int, int], Any] = {}  # (wide, narrow) -> the direct registration
    shapes: dict[int, tuple[int, int]] = {}
    pixels: dict[int, np.ndarray] = {}
    with one_blas_thread():
        for wide, narrow in plan:
            try:
                # Only the two captures this comparison needs are held (24-MP frames).
                pixels = {i: pixels[i] if i in pixels else read_comparable(members[i], settings)
                          for i in (wide, narrow)}
            except failures as exc:
                comparisons.append(consistency.Comparison(wide, narrow, error=str(exc)))
                continue
            shapes.update({i: pixels[i].shape[:2] for i in (wide, narrow)})
            comparison, direct = _measured(members, pixels, wide, narrow, settings)
            comparisons.append(comparison)
            if direct is not None:
                directs[(wide, narrow)] = direct
        pixels.clear()
        def judged():
            return consistency.judge_scene(len(members), comparisons,
                                           provisional=[i for i, r in enumerate(members) if is_provisional(r)])

        verdicts = judged()
        members = list(members)
        realigned: dict[int, dict[str, Any]] = {}
        for index in [i for i, verdict in enumerate(verdicts) if verdict == "inconsistent"]:
            outcome = _realign_from_scene(index, members, verdicts, comparisons, directs, shapes, settings)
            if outcome is not None:
                realigned[index], record, comparisons = outcome
                if record is not None:
                    members[index] = record
        verdicts = judged()  # after the pairs registered again
        transferred: dict[int, dict[str, Any]] = {}
        # The pairs the scene outvotes first: once one is written with the chain, its siblings' chains are measured
        # against its new mapping.
        for index in sorted(range(len(members)), key=lambda i: verdicts[i] != "inconsistent"):
            outcome = _transfer_from_scene(index, members, verdicts, comparisons, directs, shapes, settings,
                                           registered_again=set(realigned))
            if outcome is not None:
                transferred[index], record, comparisons = outcome
                if record is not None:
                    members[index] = record
    fields = _scene_fields(members, comparisons)
    for index, note in realigned.items():
        fields[index]["realigned"] = note
        if fields[index]["verdict"] == "inconsistent":
            fields[index]["reason"] += f"; registered again from where {note['from']} puts it: {note['outcome']}"
    for index, note in transferred.items():
        fields[index]["transferred"] = note
        if fields[index]["verdict"] == "inconsistent":
            fields[index]["reason"] += f"; the chain through {note['from']} was {note['outcome']}"
    replaced = set(realigned) | set(transferred)
    return [(field, members[i] if i in replaced and members[i]["status"] == "ok" else None)
            for i, field in enumerate(fields)]


def _failures() -> tuple[type[BaseException], ...]:
    """What a registration of two captures of a scene can raise on their content (a failed comparison, not a bug)."""
    import cv2

    from ..errors import RealsrError

    return RegistrationError, RealsrError, ArithmeticError, ValueError, IndexError, cv2.error


def capture_curve(path: Path, settings: AlignSettings) -> StatedCurve:
    """The transfer curve registration decodes the capture at ``path`` with: a RAW file's rendering curve, else
    ``--raster-curve``, else the one the file states (sRGB where it states none)."""
    from ..imaging import is_raw

    if is_raw(path):
        return StatedCurve(settings.raw.gamma, "RAW rendering (--raw-gamma)", settings.raw.primaries)
    if settings.raster_curve != "auto":
        return StatedCurve(settings.raster_curve, "--raster-curve", stated_curve(path).primaries)
    return stated_curve(path)


def in_hr_primaries(pixels: np.ndarray, own: StatedCurve, hr: StatedCurve) -> np.ndarray:
    """An LR capture's pixels with its scene HR's primaries (its own curve; uint16, or float32 for float input),
    where the two state different ones: registration, the scene check and the verifier compare the captures' linear
    light channel by channel, and the grey of an Adobe RGB capture is not that of an sRGB one (a simulator pair
    registered 0.13 LR px off, 0.007 compared in one set of primaries). ``pixels`` itself where nothing differs."""
    if conversion(own.primaries, hr.primaries) is None:
        return pixels
    return convert_encoding(pixels, (own.curve, own.primaries), (own.curve, hr.primaries),
                            dtype=np.float32 if pixels.dtype == np.float32 else np.uint16)


def read_comparable(record: dict[str, Any], settings: AlignSettings) -> np.ndarray:
    """A record's LR capture, read for comparison with the other captures of its scene (:func:`in_hr_primaries`)."""
    from ..imaging import read_pixels

    lr, hr = (settings.capture_dir / record[key] for key in ("lr_source", "hr_source"))
    return in_hr_primaries(read_pixels(lr, raw=settings.raw), capture_curve(lr, settings), capture_curve(hr, settings))


def _reencoding(stated: tuple[StatedCurve, StatedCurve]) -> dict[str, list[str] | None] | None:
    """What moves the LR (``stated[0]``) into the HR's encoding: the two curves where they differ, the two primaries
    where they differ and both are known; None where nothing does."""
    lr, hr = stated
    curve = [lr.curve, hr.curve] if lr.curve != hr.curve else None
    primaries = [lr.primaries, hr.primaries] if conversion(lr.primaries, hr.primaries) is not None else None
    return {"curve": curve, "primaries": primaries} if curve or primaries else None


def _curve(record: dict[str, Any], settings: AlignSettings) -> str:
    """The curve a written pair's LR capture was decoded with (its exposures' where its file states none)."""
    grey = (record.get("registration") or {}).get("grey") or {}
    return (grey.get("decoded_curve") or {}).get("lr") or capture_curve(settings.capture_dir / record["lr_source"],
                                                                        settings).curve


def _direct_registration(pixels: dict[int, np.ndarray], wide: dict[str, Any], narrow: dict[str, Any], indices,
                         settings: AlignSettings, hypothesis: np.ndarray | None, alone_if_found: bool):
    """Register the LR frame of pair ``wide`` to that of the narrower ``narrow`` (``pixels`` by ``indices``) and
    check it as a pair's registration (magnification against ``hypothesis``'s where it agrees, else the ratio of
    the focal lengths). Returns ``(registration or None, why it failed or None)``: no registration when it failed,
    one with the reason when the check refused it."""
    from ..registration import consistency

    i, j = indices
    ratio = wide["focal_ratio"] / narrow["focal_ratio"]
    try:
        direct, _ = register_captures(pixels[i], pixels[j], ratio=ratio,
                                      curves=(_curve(wide, settings), _curve(narrow, settings)),
                                      hypothesis=hypothesis, hypothesis_alone_if_found=alone_if_found)
    except _failures() as exc:  # the registration with every start failed (register_captures falls back to it)
        return None, str(exc)
    try:
        window = output_window(direct.lr_to_hr, pixels[i].shape, pixels[j].shape, distortion=direct.distortion)
        centre = (window[0] + (window[2] - 1) / 2, window[1] + (window[3] - 1) / 2)
        expected = ratio if hypothesis is None else consistency.expected_magnification(direct.zoom, ratio,
                                                                                       hypothesis, centre)
        check_registration(direct, ratio=expected, window=window, lr_shape=pixels[i].shape[:2],
                           hr_shape=pixels[j].shape[:2])
    except _failures() as exc:
        return direct, str(exc)
    return direct, None


def _measured(members: list[dict[str, Any]], pixels: dict[int, np.ndarray], wide: int, narrow: int,
              settings: AlignSettings):
    """Members ``wide`` and ``narrow`` compared through their direct registration (:func:`_direct_registration`,
    from the chain of their mappings): ``(Comparison, direct registration or None)``.

    Where the search finds the chain's own match, refining the chain alone decides an agreement; anything else (a
    disagreement, a failure) is decided by the registration with every start. A disagreement counts only where
    the verifier does not find that registration itself misaligned (:func:`_misaligned_direct`)."""
    from ..registration import consistency

    chain = consistency.chain_hypothesis(members[wide]["lr_to_hr"], members[narrow]["lr_to_hr"])
    for alone_if_found in (True, False):
        direct, error = _direct_registration(pixels, members[wide], members[narrow], (wide, narrow), settings, chain,
                                             alone_if_found)
        if error is not None:
            comparison = consistency.Comparison(wide, narrow, start=direct and direct.coarse, error=error)
        else:
            comparison = _compared(members, wide, narrow, direct.map, start=direct.coarse)
        if comparison.agrees() or comparison.start != HYPOTHESIS_ALONE:
            break
    if error is not None:
        return comparison, None
    if comparison.agrees() is False:
        misaligned = _misaligned_direct(pixels[wide], pixels[narrow], direct,
                                        (_curve(members[wide], settings), _curve(members[narrow], settings)))
        if misaligned is not None:
            return consistency.Comparison(wide, narrow, start=direct.coarse, error=misaligned), None
    return comparison, direct


def _misaligned_direct(wide: np.ndarray, narrow: np.ndarray, direct, curves: tuple[str, str]) -> str | None:
    """Why the verifier finds a direct registration of two LR frames misaligned (the narrower frame warped onto
    the wider one's window and measured as a pair is, with align's limits), or ``None``.

    A comparison is only as good as its direct registration, and one can be wrong with every check passed: on
    generator hard seed 54's skimage_UNIS_EV0 (clipped plateaus, 1.9 % barrel on the x3 lens) the x3-to-x2
    registration was 0.54 LR px off the truth with a corner uncertainty of 0.017, and the scene check refused
    its x2 and x3 (0.012 and 0.059 px off) for disagreeing by 0.52; the verifier measures that registration
    0.65 px off (p95 1.8), and correct ones at most 0.12."""
    from ..verification import clipped_channels, measure_tiles, summarise

    window = output_window(direct.lr_to_hr, wide.shape, narrow.shape, distortion=direct.distortion)
    x0, y0, w, h = window
    crop = wide[y0:y0 + h, x0:x0 + w]
    warped = warp_hr(narrow, direct.lr_to_hr, window, 1, distortion=direct.distortion)
    tiles, tile, blur = measure_tiles(linear(crop, curves[0]), linear(warped, curves[1]),
                                      clipped=clipped_channels(crop, warped), linear_light=True)
    verification = summarise(tiles, tile, (h, w), limit=MAX_FIELD_DISPLACEMENT, sigmas=DIRECT_FIELD_SIGMAS,
                             p95_factor=FIELD_P95_FACTOR, blur=blur)
    if verification.verdict != "misaligned":
        return None
    return f"the verifier finds the direct registration misaligned: {verification.reason}"


def _mapping(record: dict[str, Any]):
    """A written pair's complete LR -> HR mapping (its record's homography and radial terms) as a point map."""
    return functools.partial(map_lr_to_hr, np.asarray(record["lr_to_hr"]),
                             RadialDistortion.from_dict(record["distortion"]))


def _compared(members: list[dict[str, Any]], wide: int, narrow: int, direct, start: str | None):
    """:func:`.consistency.compare` of two members' mappings through their direct registration ``direct``."""
    from ..registration import consistency

    a, b = members[narrow], members[wide]
    return consistency.compare(_mapping(b), _mapping(a), direct, b["lr_window"], b["registration"]["zoom"],
                               wide=wide, narrow=narrow, start=start)


def _compared_again(members: list[dict[str, Any]], index: int, record: dict[str, Any], comparisons, directs):
    """Pair ``index``'s comparisons measured again with ``record``'s mapping in its place, through the same direct
    registrations (the others as they were). Returns the scene's comparisons so updated, whether every measured one
    of the pair's with a capture that passed the gate on its own agrees (a provisional capture neither confirms nor
    contradicts, as in :func:`.consistency.judge_scene`), and those medians as text for a note."""
    def other(c):
        return c.narrow if c.wide == index else c.wide

    trial = [*members[:index], record, *members[index + 1:]]
    again = [_compared(trial, c.wide, c.narrow, directs[(c.wide, c.narrow)].map, c.start)
             if index in (c.wide, c.narrow) and (c.wide, c.narrow) in directs else c for c in comparisons]
    mine = [c for c in again if index in (c.wide, c.narrow) and c.median is not None]
    medians = ", ".join(f"{members[other(c)]['id']} by {c.median:.2f}" for c in mine)
    return again, all(c.agrees() for c in mine if not is_provisional(members[other(c)])), medians


def _planned(record: dict[str, Any]):
    """The :class:`~realsr_tools.captures.PlannedPair` a pair record was aligned from (to align it again)."""
    from ..captures import PlannedPair

    return PlannedPair(record["scene"], record["lr_source"], record["hr_source"], record["scale"],
                       record["focal_ratio"], record["camera"])


def _realign_from_scene(index: int, members: list[dict[str, Any]], verdicts: Sequence[str], comparisons, directs,
                        shapes, settings: AlignSettings):
    """Register pair ``index``, which every capture it was compared with contradicts, again from where one of them
    that its scene confirms puts it (:func:`.consistency.scene_start`; refined alone, no search), and compare it
    again through the same direct registrations. Returns ``None`` when no such sibling is measured against it, else
    ``(note, new record or None, comparisons)``: the comparisons with the new mapping when every one of its own
    agrees (the pair is kept: the record replaces the old one, its outputs already rewritten), the old ones
    otherwise (it is refused as before, the note saying what the attempt found).

    The captures that outvote it agree with each other through registrations of whole frames, where the pair's own
    window (a chart whose patches repeat) let its search take another match that fits it as well; refined from
    the right one, the same window holds the fit there. Kept only when its comparisons with the sibling it started
    from and with every other capture agree."""
    from ..registration import consistency

    def other(c):
        return c.narrow if c.wide == index else c.wide

    sources = [c for c in comparisons if index in (c.wide, c.narrow) and (c.wide, c.narrow) in directs
               and verdicts[other(c)] == "consistent" and not is_provisional(members[other(c)])]
    if not sources:
        return None
    source = min(sources, key=lambda c: c.median)
    sibling = other(source)
    start = consistency.scene_start(
        directs[(source.wide, source.narrow)].map, _mapping(members[sibling]), members[sibling]["lr_window"],
        sibling_is_wide=sibling == source.wide, wide_shape=shapes[source.wide], narrow_shape=shapes[source.narrow])
    if start is None:
        return None
    note = {"from": members[sibling]["id"], "before": {members[other(c)]["id"]: c.median for c in comparisons
                                                       if index in (c.wide, c.narrow) and c.median is not None}}
    record = align_pair(_planned(members[index]), settings, scene_start=start)
    if record["status"] != "ok":
        return note | {"outcome": f"refused ({record['error']})"}, None, comparisons
    again, agrees, medians = _compared_again(members, index, record, comparisons, directs)
    if agrees:
        return note | {"outcome": f"agrees ({medians} LR px)"}, record, again
    for path in OUTPUT_KEYS:  # refused as before: the outputs it wrote go
        (settings.out_dir / record[path]).unlink(missing_ok=True)
    return note | {"outcome": f"still disagrees ({medians} LR px)"}, None, comparisons


def _transfer_from_scene(index: int, members: list[dict[str, Any]], verdicts: Sequence[str], comparisons, directs,
                         shapes, settings: AlignSettings, registered_again: set[int]):
    """Write pair ``index`` with the mapping its scene's narrowest capture implies for it, where that chain is the
    better pinned (:func:`.consistency.chain_source`): the source's written mapping composed with their direct
    registration, fitted as the record's model over the pair's window (:func:`.consistency.fit_chain`), the
    pair's own registration kept in the record. Returns ``None`` when no source qualifies, else ``(note, new
    record or None, comparisons)``: the pair is written with the chain (its outputs replaced) only when every
    comparison it has, measured again through the same direct registrations, agrees and it passes every check of
    its own (the verifier on its window); otherwise it keeps its own mapping and outputs, the note saying why.

    A pair its scene outvotes (``inconsistent``, not saved by :func:`_realign_from_scene`) is given the chain too,
    and kept only by the same test: a chart x4 whose own window pulls every fit 0.95 LR px off (generator normal
    seed 9) is within 0.08 px of the truth through its x2."""
    from ..registration import consistency
    from ..registration.estimate import SCENE_CHAIN, SCENE_START

    own = members[index]
    sources = [j for j, r in enumerate(members) if j != index and j not in registered_again
               and not is_provisional(r) and r["registration"]["coarse"] not in (SCENE_START, SCENE_CHAIN)]
    zooms = [r["registration"]["zoom"] for r in members]
    # The scene's measure of the pair's error: the median excess for the chain's fit (session 42), the larger of it
    # and the p95's (an error growing towards the corners, as the corner uncertainty) for the margin (session 45).
    excess = consistency.excess_disagreement(index, comparisons, zooms)
    corner_excess = consistency.excess_disagreement(index, comparisons, zooms, statistic="p95")
    found = consistency.chain_source(
        index, [r["focal_ratio"] for r in members], verdicts, comparisons,
        [r["registration"]["uncertainty"] for r in members], zooms, sources=sources,
        excess=max(excess or 0.0, corner_excess or 0.0))
    if found is None or (index, found[0]) not in directs:
        return None
    source, carried = found
    direct = directs[(index, source)]

    def chain(points):
        return _mapping(members[source])(direct.map(points))

    frames = _chain_frames(own["distortion"], own["lr_to_hr"], own["registration"]["zoom"], members[source],
                           shapes[index])
    lr_to_hr, distortion, residual = consistency.fit_chain(chain, own["lr_window"], own["registration"]["zoom"],
                                                           frames)
    note = {"from": members[source]["id"], "uncertainty": {"own": own["registration"]["uncertainty"],
                                                           "chain": _round(carried),
                                                           "direct": _round(direct.uncertainty)},
            "fit_residual": _round(residual)}
    if excess is not None:
        note["excess_disagreement"] = _round(excess)
    if corner_excess is not None:
        note["excess_disagreement_p95"] = _round(corner_excess)
    # A pair its scene outvotes is refused without the chain: it replaces a refusal, as in step 6.
    tolerance = consistency.chain_fit_tolerance(
        None if verdicts[index] == "inconsistent" else own["registration"]["uncertainty"], carried, excess)
    if residual > tolerance:
        return note | {"outcome": f"not written with the chain ({consistency.unfitted_chain(tolerance)})"}, None, \
            comparisons
    trial = own | {"lr_to_hr": lr_to_hr.tolist(), "distortion": distortion and distortion.to_dict()}
    again, agrees, medians = _compared_again(members, index, trial, comparisons, directs)
    if not agrees:
        return note | {"outcome": f"not written with the chain (it disagrees: {medians} LR px)"}, None, comparisons
    old = own["registration"]
    pair = _planned(own)
    record = _written_with_chain(pair, lr_to_hr, distortion, own["lr_window"], carried, old["correlation"], settings,
                                 hr_channel_gains=old["hr_channel_gains"], grey_weights=tuple(old["grey_weights"]),
                                 own={key: own[key] for key in ("lr_to_hr", "distortion")} | {
                                     key: old[key] for key in ("uncertainty", "zoom", "coarse", "model")})
    if record["status"] == "ok":
        return note | {"outcome": f"written with the chain ({medians} LR px)"}, record, again
    # Refused with the chain (the verifier on its window): written again with its own registration, as before
    # (a pair its scene outvotes is refused anyway).
    if verdicts[index] != "inconsistent":
        align_pair(pair, settings)
    return note | {"outcome": f"not written with the chain ({record['error']})"}, None, comparisons


def _written_with_chain(pair, lr_to_hr: np.ndarray, distortion: RadialDistortion | None, window: Sequence[int],
                        carried: float, correlation: float, settings: AlignSettings, *,
                        hr_channel_gains: Sequence[float] | None, grey_weights: tuple[float, ...] | None,
                        own: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`align_pair` with the chain's mapping (fitted over ``window``, corner uncertainty ``carried``) as the
    pair's registration, recorded with the pair's ``own`` registration (``None``: it has none written)."""
    from ..registration import ModelChoice, Registration
    from ..registration.estimate import SCENE_CHAIN
    from ..registration.gauss_newton import corner_bend

    x0, y0, w, h = window
    centre = (x0 + (w - 1) / 2, y0 + (h - 1) / 2)
    # The model is the chain's, fitted to it rather than chosen by the pair's window (no evidence); its corner bend
    # is measured against the closest similarity.
    model = ModelChoice("radial" if distortion else "homography", {}, 0,
                        corner_bend(lr_to_hr, distortion, (x0, y0, x0 + w, y0 + h), None), {})
    registration = Registration(lr_to_hr, local_zoom(lr_to_hr, centre), SCENE_CHAIN, None, None, 0, correlation, 0,
                                carried, distortion, model, hr_channel_gains and tuple(hr_channel_gains))
    return align_pair(pair, settings, fixed={"registration": registration, "grey_weights": grey_weights, "own": own})


def _chain_frames(own_distortion: dict | None, own_lr_to_hr, own_zoom: float, source: dict[str, Any],
                  lr_shape: tuple[int, int]) -> np.ndarray | None:
    """The radial terms' frames (rows ``cx, cy, R[, n]`` in the pair's LR px) a chain is fitted with: the pair's own
    where it has radial terms, else those of :func:`.geometry.distortion_frames` where the source has them (the HR
    lens' frame carried from the source's through the pair's homography ``own_lr_to_hr`` and magnification
    ``own_zoom``), else ``None`` (a homography)."""
    if own_distortion:
        # rows (cx, cy, R, n): n the term's power (the HR lens's fifth order, where it was fitted)
        terms = RadialDistortion.from_dict(own_distortion).terms
        return np.array([(*t[1:4], term_power(t)) for t in terms])
    if not source["distortion"]:
        return None
    _, cx, cy, radius, *_ = RadialDistortion.from_dict(source["distortion"]).terms[1]
    hr_centre = apply_homography(np.asarray(source["lr_to_hr"]), np.array([[cx, cy]]))
    own_h = np.asarray(own_lr_to_hr)
    centre = apply_homography(np.linalg.inv(own_h), hr_centre)[0]
    height, width = lr_shape[:2]
    return np.array([[(width - 1) / 2, (height - 1) / 2, np.hypot(width, height) / 2],
                     [centre[0], centre[1], radius * source["registration"]["zoom"] / own_zoom]])


def _chain_refused(runner, records: list[dict[str, Any]], refused: set[str], settings: AlignSettings,
                   show_progress: bool) -> list[dict[str, Any]]:
    """The scene check's step 6: each pair of ``refused`` (refused on its own: too little texture, a verified
    misalignment, no match) whose scene's narrowest written capture qualifies as a source
    (:func:`_refused_chain_source`) is offered that capture's chain (:func:`chain_refused_pair`). Returns the new
    records of the pairs it was offered to (written, or still refused with what the chain found)."""
    from ..pipeline.runner import run_items

    scenes = written_scenes(records)
    todo = [(record, scenes[record["scene"]]) for record in records if record["id"] in refused
            and _refused_chain_source(record, scenes.get(record["scene"], [])) is not None]
    results = run_items(runner, functools.partial(chain_refused_pair, settings=settings), todo, name="chains",
                        labels=[record["id"] for record, _ in todo], show_progress=show_progress)
    # A lost task leaves the pair refused as it was.
    return [result for _, result in results if not isinstance(result, TaskLost)]


def _refused_chain_source(record: dict[str, Any], members: Sequence[dict[str, Any]]) -> int | None:
    """The index in ``members`` (a scene's written pairs, checked) of the capture whose chain a pair refused on its
    own is offered: the scene's narrowest, where it is narrower than the pair, ``consistent`` (another capture
    confirmed it), passed the texture gate on its own and was not itself registered from its scene; else ``None``.
    The conditions of step 5's source (:func:`.consistency.chain_source`)."""
    from ..registration.estimate import SCENE_CHAIN, SCENE_START

    if not members:
        return None
    index = min(range(len(members)), key=lambda i: members[i]["focal_ratio"])
    source = members[index]
    qualifies = (source["focal_ratio"] < record["focal_ratio"] and not is_provisional(source)
                 and (source.get("consistency") or {}).get("verdict") == "consistent"
                 and source["registration"]["coarse"] not in (SCENE_START, SCENE_CHAIN))
    return index if qualifies else None


def chain_refused_pair(task: tuple[dict[str, Any], list[dict[str, Any]]], settings: AlignSettings) -> dict[str, Any]:
    """Offer a pair refused on its own its scene's chain (a worker task; ``task``: its failed record and its scene's
    written pairs): register its LR frame to the source's (:func:`_refused_chain_source`), fit the source's mapping
    composed with it as the record's model over the window it implies, compare that mapping with every other
    written capture of the scene through their direct registrations, and write the pair with it when the chain's
    corner uncertainty passes the texture gate, no comparison disagrees and every check of the pair's own passes
    (the verifier on its window). Returns its new record: written (``registration.coarse`` ``"scene chain"``,
    ``registration.own`` ``None``), or refused with its first reason and what the chain found.

    Its window's own content could not fix the pair (too flat, or it matched wrong); the source's window covers
    the same HR field at a finer LR scale, and the two LR frames are registered over the whole of their overlap:
    generator hard seed 40's canon_g2 chart x4, refused for texture (0.89 LR px at the corners), through its x2."""
    from ..pipeline.runner import one_blas_thread
    from ..registration import consistency

    record, members = task
    index = len(members)
    source = _refused_chain_source(record, members)
    lender = members[source]
    note: dict[str, Any] = {"from": lender["id"], "refused_alone": record["error"]}

    def refused(outcome: str, **fields) -> dict[str, Any]:
        checked = fields.get("consistency") or record.get("consistency") or {}
        return record | fields | {"error": f"{record['error']}; the chain through {lender['id']} was {outcome}",
                                  "consistency": checked | {"transferred": note | {"outcome": outcome}}}

    def read(i: int) -> np.ndarray:
        return read_comparable([*members, record][i], settings)

    with one_blas_thread():
        try:
            pixels = {index: read(index), source: read(source)}
        except _failures() as exc:
            return refused(f"not tried (reading failed: {exc})")
        direct, error = _direct_registration(pixels, record, lender, (index, source), settings, None, False)
        if error is not None:
            return refused(f"not written (the LR frames could not be registered to each other: {error})")
        carried = lender["registration"]["uncertainty"] / direct.zoom
        zoom = lender["registration"]["zoom"] * direct.zoom
        note["uncertainty"] = {"own": None, "chain": _round(carried), "direct": _round(direct.uncertainty)}
        if carried > settings.max_uncertainty:
            return refused(f"not written (its corner uncertainty {carried:.2f} LR px is above the gate too)")

        def chain(points):
            return _mapping(lender)(direct.map(points))

        window = _window_through(direct.lr_to_hr, lender["lr_window"], pixels[index].shape)
        if min(window[2:]) < 2:
            return refused(f"not written (the source's window falls outside this frame: {window})")
        try:
            first, _, _ = consistency.fit_chain(chain, window, zoom)
            frames = _chain_frames(None, first, zoom, lender, pixels[index].shape)
            lr_to_hr, distortion, residual = consistency.fit_chain(chain, window, zoom, frames)
        except _failures() as exc:
            return refused(f"not written (the chain could not be fitted: {exc})")
        note["fit_residual"] = _round(residual)
        tolerance = consistency.chain_fit_tolerance(None)
        if residual > tolerance:
            return refused(f"not written ({consistency.unfitted_chain(tolerance)})")
        trial = [*members, record | {"lr_to_hr": lr_to_hr.tolist(), "distortion": distortion and distortion.to_dict(),
                                     "lr_window": list(window), "registration": {"zoom": zoom}}]
        comparisons = []
        # Every other capture that passed the gate on its own (a provisional one confirms nothing).
        for other in (j for j, r in enumerate(members) if j != source and not is_provisional(r)):
            wide, narrow = sorted((index, other), key=lambda i: -trial[i]["focal_ratio"])
            try:
                pixels = {index: pixels[index], other: read(other)}
            except _failures() as exc:
                comparisons.append(consistency.Comparison(wide, narrow, error=str(exc)))
                continue
            comparisons.append(_measured(trial, pixels, wide, narrow, settings)[0])
        pixels.clear()
    field = consistency.consistency_fields([r["id"] for r in trial], comparisons)[index]
    field.pop("reason", None)
    if any(c.agrees() is False for c in comparisons):
        medians = ", ".join(f"{trial[c.narrow if c.wide == index else c.wide]['id']} by {c.median:.2f}"
                            for c in comparisons if c.median is not None)
        return refused(f"not written (it disagrees with its scene: {medians} LR px)", consistency=field)
    written = _written_with_chain(_planned(record), lr_to_hr, distortion, window, carried, direct.correlation,
                                  settings, hr_channel_gains=None, grey_weights=None, own=None)
    if written["status"] != "ok":
        return refused(f"not written ({written['error']})", **{key: written[key] for key in
                                                              ("verification", "preview")}, consistency=field)
    return written | {"consistency": field | {"transferred": note | {"outcome": "written with the chain"}}}


def _window_through(wide_to_narrow: np.ndarray, narrow_window: Sequence[int],
                    shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest LR window of a wider capture inside a narrower one's ``narrow_window`` (its corners through the
    inverse of the direct homography ``wide_to_narrow``) and its frame of ``shape``: where a chain is fitted before
    the pair's own output window is known (the narrower window lies inside the HR field, as the pair's will)."""
    x0, y0, w, h = narrow_window
    corners = np.array([[x0, y0], [x0 + w - 1, y0], [x0 + w - 1, y0 + h - 1], [x0, y0 + h - 1]], np.float64)
    (tl, tr, br, bl) = apply_homography(np.linalg.inv(np.asarray(wide_to_narrow, np.float64)), corners)
    height, width = shape[:2]
    left, top = max(0, int(np.ceil(max(tl[0], bl[0])))), max(0, int(np.ceil(max(tl[1], tr[1]))))
    right = min(width - 1, int(np.floor(min(tr[0], br[0]))))
    bottom = min(height - 1, int(np.floor(min(bl[1], br[1]))))
    return left, top, right - left + 1, bottom - top + 1


def _scene_fields(members: list[dict[str, Any]], comparisons, lost: str | None = None) -> list[dict[str, Any]]:
    """Each member's ``consistency`` field from the scene's comparisons (:func:`.consistency.consistency_fields`),
    its provisional pairs named."""
    from ..registration import consistency

    return consistency.consistency_fields([r["id"] for r in members], comparisons, lost=lost,
                                          provisional=[i for i, r in enumerate(members) if is_provisional(r)])


def _new_record(pair) -> dict[str, Any]:
    """A pair's record before any work: ``failed`` until it is aligned."""
    return {
        "id": pair.id, "scene": pair.scene, "camera": pair.camera, "scale": pair.scale, "status": "failed",
        "error": None, "lr_source": pair.lr, "hr_source": pair.hr, "focal_ratio": pair.focal_ratio,
        "lr_to_hr": None, "lr_window": None, "lr": None, "hr": None, "mask": None, "preview": None,
        "photometric": None, "quality": None, "registration": None, "distortion": None, "verification": None,
        "consistency": None,
    }


def align_pair(pair, settings: AlignSettings, scene_start: np.ndarray | None = None,
               fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Align one :class:`~realsr_tools.captures.PlannedPair` and write its outputs; returns its manifest record.
    ``scene_start``: register from this LR -> HR homography alone (:func:`_realign_from_scene`). ``fixed``: write
    with this registration instead of registering (:func:`_transfer_from_scene`: ``registration``, the
    ``grey_weights`` and the pair's ``own`` registration, recorded beside it).

    Runs on a worker (:mod:`realsr_tools.pipeline.runner`): it writes only this pair's files, atomically."""
    import cv2

    from ..errors import OutputLocationError, RealsrError

    record = _new_record(pair)
    try:
        record.update(_align_pair(pair, settings, scene_start, fixed))
        record["status"] = "ok"
    except OutputLocationError:
        raise  # a full disk or read-only --out stops the run; it is not this pair's failure
    except RegistrationError as exc:
        record["error"] = str(exc)
        record["verification"] = exc.verification
        record["preview"] = exc.preview
    except RealsrError as exc:
        record["error"] = str(exc)
    except (ArithmeticError, ValueError, IndexError, cv2.error) as exc:
        # A numerical failure on one pair's data (a least-squares solve that does not converge on degenerate
        # content) is that pair's failure, not the batch's: it once ended a 36-pair run after 22.
        record["error"] = f"registration failed unexpectedly ({type(exc).__name__}: {exc}); please report it"
    return record


def _align_pair(pair, s: AlignSettings, scene_start: np.ndarray | None = None,
                fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    # Decoding and PNG encoding release the GIL and are the slowest single steps on large frames: the two reads run
    # at once, and the HR output is encoded while the photometric fit and the quality measures run.
    from ..pipeline.runner import one_blas_thread

    with one_blas_thread(), ThreadPoolExecutor(max_workers=2) as io_pool:
        return _align_pair_with(pair, s, io_pool, scene_start, fixed)


def _align_pair_with(pair, s: AlignSettings, io_pool: ThreadPoolExecutor,
                     scene_start: np.ndarray | None, fixed: dict[str, Any] | None) -> dict[str, Any]:
    import cv2

    from ..imaging import read_pixels, to_float, write_image
    from ..metrics import psnr, ssim
    from ..photometric import PhotometricModel, fit_photometric
    from ..quality import residual_shift
    from ..verification import clipped_channels, measure_tiles, summarise

    hr_read = io_pool.submit(read_pixels, s.capture_dir / pair.hr, raw=s.raw)
    lr_captured = read_pixels(s.capture_dir / pair.lr, raw=s.raw)
    hr_pixels = hr_read.result()
    # Registration compares linear light (blur acts there): each capture is decoded with its own transfer curve,
    # in the HR's primaries.
    stated = tuple(capture_curve(s.capture_dir / path, s) for path in (pair.lr, pair.hr))
    curves = tuple(curve.curve for curve in stated)
    # Where neither file states its curve, the two exposures are asked for it at the coarse match (docs/align.md,
    # "A curve no file states"); a pair written with its scene's chain asks where the chain puts it.
    ask = all(curve.assumed for curve in stated) and s.raster_curve == "auto"
    taken = s.scene_curves.get(pair.id)
    if taken is not None:  # neither file states its curve; its scene's or camera's exposures found one (scene_curves)
        named = ", ".join(taken["from"]) + (", ..." if len(taken["from"]) < taken["deciders"] else "")
        found = (f"its scene's exposures are a gain apart as {taken['curve']} ({named}), its own do not contradict it"
                 if taken["camera"] is None else
                 f"no pair of its scene could tell; {taken['deciders']} of its camera's ({taken['camera']}) are a "
                 f"gain apart as {taken['curve']} ({named}) and none as another curve, its own exposures do not lean "
                 "the other way")
        stated = tuple(replace(curve, curve=taken["curve"], source=f"{curve.source}; {found}") for curve in stated)
        curves = tuple(curve.curve for curve in stated)
        ask = False
    lr_pixels = in_hr_primaries(lr_captured, *stated)
    if fixed is None:
        registration, grey_weights = register_captures(lr_pixels, hr_pixels, ratio=pair.focal_ratio, curves=curves,
                                                       scene_start=scene_start, ask_exposures=ask)
        curve_estimate = registration.curve_estimate
    else:
        registration, grey_weights = fixed["registration"], fixed["grey_weights"] or luma_weights(lr_pixels, hr_pixels)
        curve_estimate = (exposure_curve(lr_pixels, hr_pixels, registration.lr_to_hr, ratio=pair.focal_ratio)
                          if ask else None)
    if curve_estimate is not None and curve_estimate.curve is not None:
        bends = curve_estimate.bend
        stated = tuple(replace(curve, curve=curve_estimate.curve, source=(
            f"{curve.source}; the two exposures are a gain apart as {curve_estimate.curve} (bend "
            f"{bends[curve_estimate.curve]:.3f}, as sRGB {bends['srgb']:.3f})")) for curve in stated)
        curves = tuple(curve.curve for curve in stated)
    window = output_window(registration.lr_to_hr, lr_pixels.shape, hr_pixels.shape,
                           distortion=registration.distortion)
    check_registration(registration, ratio=pair.focal_ratio, window=window, lr_shape=lr_pixels.shape[:2],
                       hr_shape=hr_pixels.shape[:2], max_uncertainty=s.max_uncertainty,
                       confirmable=MAX_CONFIRMED_UNCERTAINTY if s.scene_check else None)
    x0, y0, w, h = window
    scale = pair.scale
    hr_out = warp_hr(hr_pixels, registration.lr_to_hr, window, scale, distortion=registration.distortion)
    del hr_pixels
    stem = f"x{scale}/{pair.id}.png"
    written = {kind: s.out_dir / kind.upper() / stem for kind in OUTPUT_KEYS}
    hr_write = io_pool.submit(write_image, written["hr"], hr_out, bit_depth=s.bit_depth,
                              png_compression=PNG_COMPRESSION)
    lr_write = None
    try:
        lr_crop, captured_crop = (pixels[y0:y0 + h, x0:x0 + w] for pixels in (lr_pixels, lr_captured))
        hr_on_lr = cv2.resize(to_float(hr_out), (w, h), interpolation=cv2.INTER_AREA)
        lr_float = to_float(lr_crop)
        # The corrected LR is written in the HR's encoding (its primaries are already the HR's): where the two
        # captures state different curves or primaries (an Adobe RGB camera JPEG beside an sRGB one) no per-channel
        # gain and offset maps one onto the other (at an encoded 0.1 Adobe RGB's curve gives 0.63 times the light
        # sRGB's does).
        reencoded = _reencoding(stated) if s.photometric else None
        if reencoded and reencoded["curve"]:
            lr_float = convert_encoding(lr_float, (curves[0], stated[1].primaries), (curves[1], stated[1].primaries))
        lr_curve = curves[1] if reencoded and reencoded["curve"] else curves[0]
        model = fit_photometric(lr_float, hr_on_lr) if s.photometric else PhotometricModel.identity()
        lr_out = model.apply(lr_float) if s.photometric else captured_crop
        lr_check = np.clip(lr_out, 0, 1) if s.photometric else lr_float
        # Geometry is checked in linear light, as registered: the HR integrated over each LR pixel's area as the LR
        # sensor does. Area-averaging encoded values widens a bright edge on a dark surround towards the dark side,
        # which read as 0.59 LR px of misalignment on a generator chart pair registered to 0.044 px (0.05 in linear
        # light).
        lr_light = linear(lr_check, lr_curve)
        hr_light_on_lr = linear_area_downscale(hr_out, curves[1], scale)
        # Quality on the central QUALITY_SIZE^2 LR pixels at most (SSIM and tile registration are the slow parts).
        cy, cx = max(0, (h - QUALITY_SIZE) // 2), max(0, (w - QUALITY_SIZE) // 2)
        centre = (slice(cy, cy + QUALITY_SIZE), slice(cx, cx + QUALITY_SIZE))
        shift = residual_shift(hr_light_on_lr[centre], lr_light[centre])
        # The independent verifier over the whole window: refuse a pair whose displacement field exceeds the limit
        # anywhere it can be measured. An unmeasurable pair (flat or one-directional content that registration
        # still accepted) is kept and recorded as such: nothing contradicts its registration, and nothing confirms it.
        # Channels saturated in either capture, from their own values (the correction moves the LR's top value).
        tiles, tile, blur = measure_tiles(lr_light, hr_light_on_lr, clipped=clipped_channels(captured_crop, hr_out),
                                          linear_light=True)
        verification = summarise(tiles, tile, lr_light.shape[:2], limit=MAX_FIELD_DISPLACEMENT, sigmas=FIELD_SIGMAS,
                                 p95_factor=FIELD_P95_FACTOR, blur=blur)
        # A refused pair's preview is the picture of why (its outputs are not written).
        preview = functools.partial(_write_preview, s, pair, lr_check, hr_on_lr, tiles, verification)
        if verification.verdict == "misaligned":
            raise RegistrationError(f"verified misalignment: {verification.reason}",
                                    verification=verification.to_dict(), preview=preview())
        # The central tiles' median shift is the backstop for what the verifier cannot measure (a registration tens
        # of pixels off leaves no tile it can match). Where the verifier measured the whole window aligned, it is
        # the better judge: the plain tile median also reads the edge of a plateau that one capture clips and the
        # other does not (simulated hard seed 3: skimage_UNIS_EV0 x3 / x4 registered to 0.08 / 0.04 px against the
        # truth, tile median 0.60 / 0.54 px, verifier 0.10 / 0.14 px).
        if (verification.verdict != "aligned" and shift.median is not None
                and shift.median > MAX_RESIDUAL_MEDIAN):
            raise RegistrationError(f"residual misalignment too large: tile shifts median {shift.median:.2f} LR px "
                                    f"(limit {MAX_RESIDUAL_MEDIAN}; worst {shift.worst:.2f}; the verifier found the "
                                    f"pair {verification.verdict})", verification=verification.to_dict(),
                                    preview=preview())
        lr_write = io_pool.submit(write_image, written["lr"], lr_out, bit_depth=s.bit_depth,
                                  png_compression=PNG_COMPRESSION)
        distortion = distortion_check(hr_light_on_lr[centre], lr_light[centre])
        del lr_light, hr_light_on_lr
        quality = {
            "psnr": round(psnr(hr_on_lr, lr_check, data_range=1.0), 3),
            "ssim": round(ssim(hr_on_lr[centre], lr_check[centre], data_range=1.0), 4),
            "shift_median": _round(shift.median), "shift_worst": _round(shift.worst),
            "shift_tiles": shift.tiles, "shift_total_tiles": shift.total_tiles,
            "distortion": distortion.to_dict(),
            "region": "psnr: whole window; ssim, shifts, distortion: central "
                      f"{min(w, QUALITY_SIZE)}x{min(h, QUALITY_SIZE)} LR px",
            "reference": "HR output area-downscaled to the LR grid vs corrected LR (shifts, distortion and "
                         "verification in linear light)",
        }
        hr_write.result()
        lr_write.result()
    except BaseException:
        # A pair refused after its warp (or interrupted) leaves no output behind; its record says why.
        wait([job for job in (hr_write, lr_write) if job is not None])
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    preview_path = preview()
    return {
        "lr_to_hr": np.round(registration.lr_to_hr, 10).tolist(),
        "distortion": registration.distortion.to_dict() if registration.distortion else None,
        "lr_window": [int(x0), int(y0), int(w), int(h)],
        "lr": f"LR/{stem}", "hr": f"HR/{stem}", "mask": None, "preview": preview_path,
        "photometric": model.to_dict() | {
            "applied": s.photometric,
            "reencoded": reencoded},
        "quality": quality,
        "registration": registration.to_dict() | {
            # A pair written with its scene's chain keeps its own window's verdict (and its own registration).
            "needs_confirmation": bool((fixed["own"]["uncertainty"] if fixed and fixed["own"]
                                        else registration.uncertainty) > s.max_uncertainty),
            "grey_weights": [round(w, 4) for w in grey_weights],
            "grey": {"light": "linear", "decoded_curve": {"lr": curves[0], "hr": curves[1]},
                     "curve_source": {"lr": stated[0].source, "hr": stated[1].source},
                     "curve_estimate": taken["own"] if taken else curve_estimate and curve_estimate.to_dict(),
                     "primaries": {"lr": stated[0].primaries, "hr": stated[1].primaries},
                     "dark_noise": _dark_noise_record(registration.dark_noise)}
            | _taken_curve_record(taken)}
        | ({"own": fixed["own"]} if fixed else {}),
        "verification": verification.to_dict() | {"region": "whole window", "reference": quality["reference"]},
    }


def _taken_curve_record(taken: dict[str, Any] | None) -> dict[str, dict]:
    """``registration.grey``'s field naming the curve a pair took from its scene or camera (:func:`scene_curves`)."""
    if taken is None:
        return {}
    if taken["camera"] is None:
        return {"scene_curve": {key: taken[key] for key in ("curve", "from")}}
    return {"camera_curve": {key: taken[key] for key in ("curve", "from", "deciders", "camera")}}


def _dark_noise_record(noise) -> dict | None:
    """``registration.grey.dark_noise``: per capture, each channel's dark noise clipped at zero whose bias was taken
    out of the grey (linear light; null: too little clipped to tell, or the channel not used); null for a pair
    registered before it was measured."""
    if noise is None:
        return None
    return {name: [None if sigma is None else round(float(sigma), 6) for sigma in sigmas]
            for name, sigmas in zip(("lr", "hr"), noise)}


def _write_preview(s: AlignSettings, pair, lr: np.ndarray, hr_on_lr: np.ndarray, tiles, verification) -> str | None:
    """With ``--preview``: write ``preview/<id>.png`` (:func:`realsr_tools.previews.preview_image`) and return its
    path for the record; without, remove one an earlier run wrote for this pair (its record is being replaced)."""
    from ..imaging import write_image
    from ..previews import preview_image

    path = f"preview/{pair.id}.png"
    if not s.preview:
        (s.out_dir / path).unlink(missing_ok=True)
        return None
    write_image(s.out_dir / path, preview_image(lr, hr_on_lr, tiles=tiles, verification=verification), bit_depth=8)
    return path
