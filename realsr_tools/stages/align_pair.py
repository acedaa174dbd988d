"""One pair of the ``align`` stage: read its two captures, register them, correct the LR's light, verify the
result and write the pair (a worker task, :func:`align_pair`); also what the scene passes
(:mod:`.align_scene`) ask of one pair's captures (the curve each is decoded with, in the HR's primaries).

The algorithms are :mod:`realsr_tools.registration`, :mod:`realsr_tools.geometry`, :mod:`realsr_tools.photometric`
and :mod:`realsr_tools.verification`; this module reads captures, writes outputs and builds the record.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..colour import conversion, convert_encoding
from ..errors import RegistrationError
from ..geometry import output_window, warp_hr
from ..imaging import DEFAULT_RAW, RawRendering
from ..imaging.transfer import StatedCurve, stated_curve
from ..registration import check_registration, distortion_check, register_captures
from ..registration.curves import MIN_CAMERA_DECIDERS, exposure_curve
from ..registration.estimate import MAX_CONFIRMED_UNCERTAINTY, MAX_RESIDUAL_MEDIAN, MAX_UNCERTAINTY, _round
from ..registration.luma import grey_weights as luma_weights
from ..registration.luma import linear, linear_area_downscale

QUALITY_SIZE = 1024  # SSIM and residual shift are measured on the central QUALITY_SIZE^2 LR pixels at most
OUTPUT_KEYS = ("lr", "hr")
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
FIELD_P95_FACTOR = 2.5


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
    # pair id -> the curve its scene's exposures found, for the pairs that take it (:func:`.align_scene.scene_curves`)
    scene_curves: dict[str, dict[str, Any]] = field(default_factory=dict)


def new_record(pair) -> dict[str, Any]:
    """A pair's record before any work: ``failed`` until it is aligned."""
    return {
        "id": pair.id, "scene": pair.scene, "camera": pair.camera, "scale": pair.scale, "status": "failed",
        "error": None, "lr_source": pair.lr, "hr_source": pair.hr, "focal_ratio": pair.focal_ratio,
        "lr_to_hr": None, "lr_window": None, "lr": None, "hr": None, "mask": None, "preview": None,
        "photometric": None, "quality": None, "registration": None, "distortion": None, "verification": None,
        "consistency": None,
    }


def remove_outputs(record: dict[str, Any], out_dir: Path) -> None:
    """Delete the LR / HR files ``record`` names under ``out_dir`` (a pair the scene pass refuses after it was
    written leaves none behind; its record, or the record it was written for, says why)."""
    for key in OUTPUT_KEYS:
        if record.get(key):
            (out_dir / record[key]).unlink(missing_ok=True)


def planned_pair(record: dict[str, Any]):
    """The :class:`~realsr_tools.captures.PlannedPair` a pair record was aligned from (to align it again)."""
    from ..captures import PlannedPair

    return PlannedPair(record["scene"], record["lr_source"], record["hr_source"], record["scale"],
                       record["focal_ratio"], record["camera"])


def align_pair(pair, settings: AlignSettings, scene_start: np.ndarray | None = None,
               fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Align one :class:`~realsr_tools.captures.PlannedPair` and write its outputs; returns its manifest record.
    ``scene_start``: register from this LR -> HR homography alone (:func:`.align_scene._realign_from_scene`).
    ``fixed``: write with this registration instead of registering (:func:`.align_scene._transfer_from_scene`:
    ``registration``, the ``grey_weights`` and the pair's ``own`` registration, recorded beside it).

    Runs on a worker (:mod:`realsr_tools.pipeline.runner`): it writes only this pair's files, atomically."""
    import cv2

    from ..errors import OutputLocationError, RealsrError

    record = new_record(pair)
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
    from ..photometric import LINEAR_FLOOR, PhotometricModel, fit_photometric
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
                 f"no pair of its scene could tell; {taken['deciders']} of its camera's ({taken['camera']}) "
                 f"{'are' if taken['deciders'] > 1 else 'is'} a gain apart as {taken['curve']} ({named}) and none as "
                 "another curve, its own exposures "
                 + ("do not lean the other way" if taken["deciders"] >= MIN_CAMERA_DECIDERS else "lean that way"))
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
        # light). The LR's light is matched to the HR's there by a correction of its own: in linear light vignetting
        # and exposure are gains, which the written LR's correction (fitted on encoded values, where they are not:
        # a curve's offset turns a gain surface into a varying offset, and its linear toe holds the dark pixels)
        # leaves as tone differences inside tiles, read as displacement (generator hard 119's x4, 35 % of it dark,
        # decoded with its files' curve: median tile 0.17 LR px on the true mapping, 0.06 matched in linear light).
        hr_light_on_lr = linear_area_downscale(hr_out, curves[1], scale)
        lr_light = linear(lr_float, lr_curve)
        if s.photometric:
            check = fit_photometric(lr_light, hr_light_on_lr, relative=LINEAR_FLOOR)
            lr_light = np.clip(check.apply(lr_light), 0, 1)
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
                         "verification in linear light, the LR matched to the HR there by a fit of their own)",
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


def _reencoding(stated: tuple[StatedCurve, StatedCurve]) -> dict[str, list[str] | None] | None:
    """What moves the LR (``stated[0]``) into the HR's encoding: the two curves where they differ, the two primaries
    where they differ and both are known; None where nothing does."""
    lr, hr = stated
    curve = [lr.curve, hr.curve] if lr.curve != hr.curve else None
    primaries = [lr.primaries, hr.primaries] if conversion(lr.primaries, hr.primaries) is not None else None
    return {"curve": curve, "primaries": primaries} if curve or primaries else None


def _taken_curve_record(taken: dict[str, Any] | None) -> dict[str, dict]:
    """``registration.grey``'s field naming the curve a pair took from its scene or camera
    (:func:`.align_scene.scene_curves`)."""
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
