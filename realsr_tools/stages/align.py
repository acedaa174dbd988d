"""The ``align`` stage: register every planned pair of a capture folder, write aligned pairs and the manifest.

The order of the work: every pair (:mod:`.align_pair`, one worker task each), then the passes over scenes
(:mod:`.align_scene`: the curve pass, the scene check, the chains), each replacing the records it changes. The
algorithms are :mod:`realsr_tools.registration`, :mod:`realsr_tools.geometry` and :mod:`realsr_tools.photometric`.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from ..imaging import DEFAULT_RAW, RawRendering
from ..pipeline.output import holds_output
from ..pipeline.runner import TaskLost
from ..registration.estimate import MAX_UNCERTAINTY
from ..registration.luma import decoder
from .align_pair import OUTPUT_KEYS, AlignSettings, align_pair, new_record
from .align_scene import chain_refused, check_scenes, decode_with_scene_curves, refuse_unconfirmed, scene_curves

# A resume with other values of these would mix two datasets.
RESUME_PARAMS = ("bit_depth", "photometric", "raw_rendering", "max_uncertainty", "raster_curve")
PATH_KEYS = ("lr", "hr", "mask")


@dataclass(frozen=True)
class AlignSummary:
    """Counts of one ``run_align`` call and where its manifest is."""

    ok: int
    failed: int
    skipped: int
    manifest: Path
    failures: tuple[tuple[str, str], ...] = field(default=())  # (pair id, reason) of this run's failures
    unmeasurable: int = 0  # of this run's ok pairs: the verifier could not measure their displacement field


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
                record = new_record(todo[index]) | {"error": record.reason}
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
        for record in decode_with_scene_curves(runner, writer.records, settings, show_progress):
            rewritten(record)
        for record in (check_scenes(runner, writer.records, settings, show_progress) if scene_check
                       else refuse_unconfirmed(writer.records, settings)):
            rewritten(record)
            if (record.get("consistency") or {}).get("verdict") == "unconfirmed" and record["status"] != "ok":
                unconfirmed.add(record["id"])
        if scene_check:
            # Pairs this run refused on their own or left unconfirmed (not outvoted, not lost): the chain of their
            # scene's narrowest capture, where one qualifies.
            refused = unconfirmed | {record["id"] for record in writer.records if record["id"] in new
                                     and record["status"] != "ok" and record["id"] not in lost
                                     and record.get("consistency") is None}
            for record in chain_refused(runner, writer.records, refused, settings, show_progress):
                writer.add(record)
                if record["status"] == "ok":
                    del failures[record["id"]]
                    ok, failed = ok + 1, failed - 1
                    unmeasurable += record["verification"]["verdict"] == "unmeasurable"
                else:
                    failures[record["id"]] = record["error"]
    return AlignSummary(ok, failed, skipped, out_dir / "manifest.jsonl", tuple(failures.items()), unmeasurable)
