"""The ``align`` stage's passes over scenes, once their pairs are written (each a worker task per scene or pair):

1. the curve pass: a pair whose exposures could not tell the captures' transfer curve takes its scene's, or its
   camera's, and is aligned again with it (:func:`scene_curves`, :func:`decode_with_scene_curves`);
2. the scene check: a scene's LR captures registered to each other judge each pair; a pair they outvote is
   registered again from where they put it, or written with the chain of the scene's narrowest capture
   (:func:`check_scene`);
3. the chains: a pair refused on its own is offered its scene's chain (:func:`chain_refused_pair`).

The algorithms are :mod:`realsr_tools.registration.consistency` and :mod:`realsr_tools.registration.curves`; one
pair's work is :mod:`.align_pair`'s. docs/align.md, "The scene check" and "Transfer curves".
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import RegistrationError
from ..geometry import RadialDistortion, apply_homography, local_zoom, map_lr_to_hr, output_window, term_power, warp_hr
from ..pipeline.runner import TaskLost
from ..registration import check_registration, register_captures
from ..registration.curves import CurveEstimate, camera_curve, scene_curve
from ..registration.estimate import HYPOTHESIS_ALONE, _round, texture_refusal
from ..registration.luma import linear
from .align_pair import (FIELD_P95_FACTOR, MAX_FIELD_DISPLACEMENT, AlignSettings, align_pair, capture_curve,
                         in_hr_primaries, planned_pair, remove_outputs)

CAMERA_FROM_LISTED = 3  # deciding pairs a camera's curve names in a taker's record (all are counted)
# The scene check's direct registrations (_misaligned_direct) are judged on the point estimate: there "misaligned"
# discards a disagreement's evidence, so the doubt goes to the evidence.
DIRECT_FIELD_SIGMAS = 0.0


def scene_curves(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The written pairs of an align manifest that take the curve their scene's exposures found
    (:func:`.curves.scene_curve`), or, in a scene where none decided, their camera's (:func:`.curves.camera_curve`):
    pair id -> ``{"curve", "from"`` (the pairs that found it; a camera's first CAMERA_FROM_LISTED)``, "deciders"``
    (how many found it)``, "own"`` (the pair's own estimate)``, "camera"`` (``None`` for the scene's curve)``}``.
    Pairs already decoded with it are named too (a resumed run decodes them the same way). A camera is its name and
    the file types of its scenes' captures: another writer of the same camera's files may use another curve."""
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


def decode_with_scene_curves(runner, records: list[dict[str, Any]], settings: AlignSettings,
                              show_progress: bool) -> list[dict[str, Any]]:
    """Align again each written pair that takes its scene's curve (``settings.scene_curves``) and is not yet decoded
    with it, before the scene check: returns their new records (written, or refused with the curve)."""
    from ..pipeline.runner import run_items

    todo = [record for record in records if record["id"] in settings.scene_curves  # written pairs only
            and record.get("consistency") is None
            and not {"scene_curve", "camera_curve"} & set(record["registration"]["grey"])]
    results = run_items(runner, functools.partial(align_pair, settings=settings), [planned_pair(r) for r in todo],
                        name="scene curves", labels=[record["id"] for record in todo], show_progress=show_progress)
    # A lost task leaves the pair as it was.
    return [result for _, result in results if not isinstance(result, TaskLost)]


def check_scenes(runner, records: list[dict[str, Any]], settings: AlignSettings,
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


def refuse_unconfirmed(records: list[dict[str, Any]], settings: AlignSettings) -> list[dict[str, Any]]:
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


def chain_refused(runner, records: list[dict[str, Any]], refused: set[str], settings: AlignSettings,
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


def _texture_reason(record: dict[str, Any], settings: AlignSettings) -> str:
    return texture_refusal(record["registration"]["uncertainty"], f"{settings.max_uncertainty:g}")


def _refuse(record: dict[str, Any], reason: str, settings: AlignSettings) -> None:
    """Turn a written pair's record into a refusal: its outputs removed, ``failed`` with ``reason``."""
    remove_outputs(record, settings.out_dir)
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


def read_comparable(record: dict[str, Any], settings: AlignSettings) -> np.ndarray:
    """A record's LR capture, read for comparison with the other captures of its scene
    (:func:`.align_pair.in_hr_primaries`)."""
    from ..imaging import read_pixels

    lr, hr = (settings.capture_dir / record[key] for key in ("lr_source", "hr_source"))
    return in_hr_primaries(read_pixels(lr, raw=settings.raw), capture_curve(lr, settings), capture_curve(hr, settings))


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
    record = align_pair(planned_pair(members[index]), settings, scene_start=start)
    if record["status"] != "ok":
        return note | {"outcome": f"refused ({record['error']})"}, None, comparisons
    again, agrees, medians = _compared_again(members, index, record, comparisons, directs)
    if agrees:
        return note | {"outcome": f"agrees ({medians} LR px)"}, record, again
    remove_outputs(record, settings.out_dir)  # refused as before: the outputs it wrote go
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
    pair = planned_pair(own)
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
    """:func:`.align_pair.align_pair` with the chain's mapping (fitted over ``window``, corner uncertainty
    ``carried``) as the pair's registration, recorded with the pair's ``own`` registration (``None``: it has none
    written)."""
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
    written = _written_with_chain(planned_pair(record), lr_to_hr, distortion, window, carried, direct.correlation,
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
