"""The independent verifier of the residual displacement field, on real LR/HR pairs moved by known amounts.

The real RealSR/DRealSR pairs carry their own small residual misalignment, so accuracy is checked on the *change*
of the measured field when the HR is moved by a known sub-pixel amount (``washdata.misalign_hr``).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realsr_tools.imaging import read_image
from realsr_tools.registration.luma import linear
from realsr_tools.photometric import LINEAR_FLOOR, fit_photometric
from realsr_tools.verification import (CLIPPED_REFERENCE, CLIPPED_TEST, DEFAULT_LIMIT, DEFAULT_P95_FACTOR,
                                       DEFAULT_SIGMAS, MIN_TILES, Verification, clipped_channels, measure_tiles,
                                       pyramid_factor, tile_origins, verify)
from realsr_tools.stages.align_pair import FIELD_P95_FACTOR, FIELD_SIGMAS, MAX_FIELD_DISPLACEMENT
from washdata import misalign_hr

ALIGN_GATE = dict(limit=MAX_FIELD_DISPLACEMENT, sigmas=FIELD_SIGMAS, p95_factor=FIELD_P95_FACTOR)
TEXTURED = [("realsr_x4", "Canon_033_LR4.png"), ("drealsr_x4", "panasonic_145_x1.png"),
            ("drealsr_x4", "sony_169_x1.png")]


def _pair(data_dir, dataset: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    root = data_dir / "pairs" / dataset
    return read_image(root / "LR" / name), read_image(root / "HR" / name)


def _on_lr(hr: np.ndarray, lr: np.ndarray) -> np.ndarray:
    return cv2.resize(hr, lr.shape[1::-1], interpolation=cv2.INTER_AREA)


def _translation(v: Verification) -> np.ndarray:
    return np.array([v.affine[2], v.affine[5]])


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.6, 1.0])
def test_known_subpixel_shifts_of_real_pairs_are_measured(data_dir, amount):
    for dataset, name in TEXTURED:
        lr, hr = _pair(data_dir, dataset, name)
        base = verify(lr, _on_lr(hr, lr))
        for angle in (0.3, 2.0, 4.0):
            moved = verify(lr, _on_lr(misalign_hr(hr, "shift", amount, angle=angle), lr))
            expected = amount * np.array([np.cos(angle), np.sin(angle)])
            error = np.hypot(*(_translation(moved) - _translation(base) - expected))
            # Measured while writing this test: 0.004-0.010 LR px on Canon_033 and panasonic_145.
            assert error < 0.03, (name, amount, angle, error)
            # 0.3 px sits at the limit (DEFAULT_LIMIT): its verdict depends on the pair's own residual.
            if amount <= 0.1:
                assert moved.verdict == "aligned", (name, amount, moved.reason)
            elif amount >= 0.6:
                assert moved.verdict == "misaligned", (name, amount, moved.reason)


@pytest.mark.parametrize("sign", [1, -1])
def test_roll_and_scale_errors_of_real_pairs_are_measured(data_dir, sign):
    for dataset, name in TEXTURED:
        lr, hr = _pair(data_dir, dataset, name)
        base = verify(lr, _on_lr(hr, lr))
        rolled = verify(lr, _on_lr(misalign_hr(hr, "roll", 0.3, sign=sign), lr))
        scaled = verify(lr, _on_lr(misalign_hr(hr, "scale", 0.005, sign=sign), lr))
        # OpenCV's positive angle turns the content counter-clockwise on screen; roll_deg counts clockwise.
        roll = rolled.roll_deg - base.roll_deg
        assert -0.32 < sign * roll < -0.27, (name, roll)
        growth = scaled.scale_error - base.scale_error
        assert 0.0046 < sign * growth < 0.0054, (name, growth)
        assert rolled.verdict == scaled.verdict == "misaligned", (rolled.reason, scaled.reason)


def test_a_corner_only_misalignment_is_caught_where_the_centre_is_aligned(data_dir):
    lr, hr = _pair(data_dir, "realsr_x4", "Canon_033_LR4.png")
    assert verify(lr, _on_lr(hr, lr)).verdict == "aligned"
    rolled = _on_lr(misalign_hr(hr, "roll", 0.3), lr)  # about the window centre
    tiles, tile, _ = measure_tiles(lr, rolled)
    h, w = lr.shape[:2]
    centre = [np.hypot(t.dx, t.dy) for t in tiles if t.kind == "measured"
              and abs(t.x - (w - 1) / 2) < tile / 2 and abs(t.y - (h - 1) / 2) < tile / 2]
    assert centre and max(centre) < 0.15  # the centre is right ...
    result = verify(lr, rolled)
    assert result.median < DEFAULT_LIMIT  # ... and so is the median: a median gate lets it through
    assert result.verdict == "misaligned" and "affine field" in result.reason, result.reason
    assert result.corner > DEFAULT_LIMIT



def test_a_scale_error_the_point_estimate_missed_is_dropped_and_the_untouched_pair_kept(data_dir):
    # DRealSR DSC_1137 reads +0.09 % scale of its own; a -0.5 % scale error leaves -0.40 %, which bends the window's
    # corners by 0.41 LR px: the former gate (point estimate of the fitted field, limit 0.42) kept it
    # (bench_wash_calibration on main 342f868). The confidence-bounded field over the lower limit drops it.
    lr, hr = _pair(data_dir, "drealsr_x4", "DSC_1137_x1.png")
    base = verify(lr, _on_lr(hr, lr))
    assert base.verdict == "aligned" and base.tiles >= 40, base.reason
    scaled = verify(lr, _on_lr(misalign_hr(hr, "scale", 0.005, sign=-1), lr))
    assert scaled.verdict == "misaligned" and "affine field" in scaled.reason, scaled.reason
    assert 0.0046 < base.scale_error - scaled.scale_error < 0.0054  # the change is the 0.5 % put in
    assert scaled.corner < 0.42 and scaled.field > DEFAULT_LIMIT  # caught at the corners, not by single tiles
    assert scaled.field == pytest.approx(scaled.corner - DEFAULT_SIGMAS * scaled.field_sigma, abs=0.01)
    assert scaled.p95_excess < DEFAULT_P95_FACTOR * DEFAULT_LIMIT


def test_a_corner_extrapolated_from_few_noisy_tiles_is_not_proof_of_misalignment(data_dir):
    # RealSR Nikon_023 (untouched): 18 measured tiles, the fitted field's corner reads 0.42 LR px with a standard
    # error of 0.10 there. The point estimate would drop it; the confidence bound keeps it.
    lr, hr = _pair(data_dir, "realsr_x4", "Nikon_023_LR4.png")
    result = verify(lr, _on_lr(hr, lr))
    assert result.verdict == "aligned" and result.tiles < 25, result.reason
    assert result.corner > DEFAULT_LIMIT and result.field_sigma > 0.07
    point = verify(lr, _on_lr(hr, lr), sigmas=0.0)
    assert point.verdict == "misaligned" and point.field == pytest.approx(point.corner), point.reason


def test_align_writes_a_field_near_its_limit_only_where_the_field_is_pinned(data_dir):
    # Align judges the field's upper bound (one standard error above): the same point estimate, 0.44 LR px against
    # the limit 0.5, is written where 49 tiles pin it and refused where 18 tiles leave it +- 0.10. Judged on the
    # point estimate, a generator photograph on a 5136-px frame read 0.45 +- 0.21 and was written 0.67 px RMS off.
    gate = ALIGN_GATE
    lr, hr = _pair(data_dir, "realsr_x4", "Canon_033_LR4.png")
    pinned = verify(lr, _on_lr(misalign_hr(hr, "shift", 0.4, angle=1.0), lr), **gate)
    lr, hr = _pair(data_dir, "realsr_x4", "Nikon_023_LR4.png")
    loose = verify(lr, _on_lr(misalign_hr(hr, "shift", 0.1, angle=1.0), lr), **gate)
    # 0.443 / 0.443 read when this was written, standard errors 0.024 / 0.105
    assert abs(pinned.corner - loose.corner) < 0.03 and loose.corner < MAX_FIELD_DISPLACEMENT - 0.03
    assert pinned.tiles > 40 and loose.tiles < 25 and loose.field_sigma > 0.07 > 0.03 > pinned.field_sigma
    assert pinned.verdict == "aligned", pinned.reason
    assert loose.verdict == "misaligned" and "at 1 standard error above" in loose.reason, loose.reason
    assert loose.field == pytest.approx(loose.corner + loose.field_sigma, abs=0.01)
    assert loose.with_limit(MAX_FIELD_DISPLACEMENT).verdict == "misaligned"  # the bound is kept with the record
    point = verify(lr, _on_lr(misalign_hr(hr, "shift", 0.1, angle=1.0), lr), **gate | dict(sigmas=0.0))
    assert point.verdict == "aligned", point.reason


def test_tiles_on_one_line_are_judged_by_their_mean_shift(data_dir):
    # DRealSR Canon_56: six measurable tiles, all in the top row, cannot fix an affine field.
    lr, hr = _pair(data_dir, "drealsr_x4", "Canon_56_x1.png")
    base = verify(lr, _on_lr(hr, lr))
    assert base.affine is None and base.tiles >= MIN_TILES and base.verdict == "aligned", base.reason
    moved = verify(lr, _on_lr(misalign_hr(hr, "shift", 0.5, angle=5.5), lr))
    assert moved.affine is None and moved.verdict == "misaligned", moved.reason
    # The mean tile shift alone judges it too (the single tiles' p95 gate, which may also fire, switched off).
    by_mean = moved.with_limit(DEFAULT_LIMIT, p95_factor=100.0)
    assert by_mean.verdict == "misaligned" and "mean tile shift" in by_mean.reason, by_mean.reason


def test_a_124_px_real_window_is_measured_with_overlapping_tiles_up_to_its_corners(data_dir):
    from realsr_tools.quality import tile_shifts

    lr, hr = _pair(data_dir, "drealsr_x4", "sony_169_x1.png")
    lr, hr = lr[2:126, 3:127], hr[8:504, 12:508]  # a 124 x 124 LR window and its 496 x 496 HR
    tiles, tile, _ = measure_tiles(lr, _on_lr(hr, lr))
    xs, ys = {t.x for t in tiles}, {t.y for t in tiles}
    assert len(tiles) >= 16 and len(xs) >= 4 and len(ys) >= 4
    assert min(xs) == min(ys) == (tile - 1) / 2 and max(xs) == max(ys) == 124 - 1 - (tile - 1) / 2  # corners
    assert np.diff(sorted(xs)).max() < tile  # overlapping
    _, before = tile_shifts(lr, _on_lr(hr, lr))
    assert before == 1  # what quality.tile_shifts looks at on such a window: one tile, the top-left one
    result = verify(lr, _on_lr(hr, lr))
    assert result.verdict == "aligned" and result.tiles >= 16 and result.measurable > 0.9, result
    assert verify(lr, _on_lr(misalign_hr(hr, "roll", 0.3), lr)).verdict == "misaligned"
    assert verify(lr, _on_lr(misalign_hr(hr, "shift", 0.6, angle=1.0), lr)).verdict == "misaligned"


def test_flat_and_one_directional_content_is_unmeasurable_never_aligned(data_dir):
    rng = np.random.default_rng(0)
    flat = np.clip(0.5 + 0.003 * rng.standard_normal((128, 128, 3)), 0, 1).astype(np.float32)
    result = verify(flat, np.roll(flat, 3, axis=1))
    assert result.verdict == "unmeasurable" and result.tiles == 0 and result.median is None
    x = np.arange(160, dtype=np.float32)
    stripes = np.repeat((0.5 + 0.3 * np.sin(x / 3.0))[None, :, None], 160, axis=0).repeat(3, axis=2)
    moved = np.roll(stripes, 2, axis=0)  # moved along the stripes: invisible
    result = verify(stripes, moved)
    assert result.verdict == "unmeasurable", result.reason
    kinds = {t.kind for t in measure_tiles(stripes, moved)[0]}
    assert kinds == {"one-dimensional"}
    # Half of a real pair replaced by a flat grey: only the textured half is measured and vouched for.
    lr, hr = _pair(data_dir, "realsr_x4", "Canon_033_LR4.png")
    lr, hr_lr = lr.copy(), _on_lr(hr, lr)
    lr[:, 64:], hr_lr[:, 64:] = 0.4, 0.4
    half = verify(lr, hr_lr)
    assert half.verdict == "aligned" and 0.3 < half.measurable < 0.7
    assert f"measured on {half.measurable:.0%} of the window" in half.reason  # the verdict says what it rests on


def test_a_darker_exposure_of_the_same_pair_is_measured_on_the_same_tiles(data_dir):
    # align measures in linear light, where a capture 3 EV under (or a dark scene) has an eighth of the gradients:
    # with one absolute flatness threshold, generator captures of 4000-6000 px measured no tile at all. There the
    # threshold follows the window's bright level, so the same content at any exposure is the same measurement.
    lr, hr = _pair(data_dir, "drealsr_x4", "panasonic_145_x1.png")
    lr, hr_lr = linear(lr), linear(_on_lr(hr, lr))
    bright = measure_tiles(lr, hr_lr, linear_light=True)[0]
    dark = measure_tiles(lr / 8, hr_lr / 8, linear_light=True)[0]
    assert [t.kind for t in dark] == [t.kind for t in bright]
    assert sum(t.kind == "measured" for t in bright) >= 40  # 49 of its tiles
    shifts = np.array([(t.dx, t.dy) for t in bright if t.kind == "measured"])
    # float32 rounding at an eighth of the level: 0.0004 LR px at most when this was written
    assert np.allclose([(t.dx, t.dy) for t in dark if t.kind == "measured"], shifts, atol=2e-3)
    # Encoded values (wash's) keep the absolute threshold their calibration was made with: darker, fewer tiles.
    encoded = measure_tiles(lr / 8, hr_lr / 8)[0]
    assert sum(t.kind == "measured" for t in encoded) < sum(t.kind == "measured" for t in bright) / 2


def test_a_dark_flat_window_stays_unmeasurable_under_its_noise(data_dir):
    # The threshold falls with the bright level only down to what the tile's own noise makes: a dark, out-of-focus
    # wall with sensor noise is flat, not a field of tiles whose noise does not match (that would be "misaligned").
    lr, hr = _pair(data_dir, "realsr_x4", "Canon_033_LR4.png")
    rng = np.random.default_rng(2)
    wall = 0.02 * cv2.GaussianBlur(linear(lr), (0, 0), 25) / linear(lr).mean()
    noisy = [np.clip(wall + rng.normal(0, 0.002, wall.shape), 0, 1).astype(np.float32) for _ in range(2)]
    result = verify(noisy[0], noisy[1], linear_light=True)
    assert result.verdict == "unmeasurable" and result.mismatched == 0, result.reason


def test_a_20_megapixel_window_is_measured_over_its_whole_area(data_dir):
    # A colour chart photographed at 5760 px: on its 2600 px window 64-px tiles (16 a side, spread with gaps) fall
    # inside flat patches, and the speed benchmark's 20-MP pair measured 0 of 256. Beyond 16 x 64 px the verifier
    # measures on the area-downscaled copy where 16 tiles a side touch, so the chart's corners are measured.
    photo = linear(read_image(data_dir / "exif_jpeg" / "digicam_corpus" / "canon_5dmk3_K6A7942_5760.JPG"))
    photo = cv2.resize(photo, (2600, 1734), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(3).normal(0, 0.002, photo.shape).astype(np.float32)
    lr = np.clip(photo + noise, 0, 1)
    gate = ALIGN_GATE | dict(linear_light=True)
    result = verify(lr, photo, **gate)
    # 38 % measured when this was written: the chart, not the plain wall around it
    assert result.verdict == "aligned" and result.tile == 4 * 64 and result.measurable > 0.3, result.reason
    assert result.corner < 0.05
    full = verify(lr, photo, tile=64, **gate)  # the full-resolution grid: nearly blind on this window
    assert full.measurable < 0.05, full.reason  # 1 % when this was written
    # A roll of 0.05 deg about the centre moves the window's corners by 1.4 px: caught from the whole field.
    turn = cv2.getRotationMatrix2D((1299.5, 866.5), 0.05, 1.0)
    rolled = cv2.warpAffine(photo, turn, (2600, 1734), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    moved = verify(lr, rolled, **gate)
    assert moved.verdict == "misaligned" and abs(abs(moved.roll_deg) - 0.05) < 0.005, moved.reason


def test_another_scene_is_misaligned_not_unmeasurable(data_dir):
    lr, _ = _pair(data_dir, "realsr_x4", "Canon_033_LR4.png")
    _, other = _pair(data_dir, "drealsr_x4", "sony_169_x1.png")
    result = verify(lr, _on_lr(other, lr))
    assert result.verdict == "misaligned", result.reason


def test_limit_record_and_invalid_input(data_dir):
    lr, hr = _pair(data_dir, "drealsr_x4", "panasonic_145_x1.png")
    result = verify(lr, _on_lr(misalign_hr(hr, "shift", 0.5, angle=1.0), lr))
    assert result.verdict == "misaligned"
    assert result.with_limit(1.0).verdict == "aligned" and result.with_limit(1.0).p95 == result.p95
    assert Verification.from_dict(result.to_dict()).to_dict() == result.to_dict()
    # A version-1 record (before the confidence bound) is read as what it was judged on: the fitted corner itself.
    old = {k: v for k, v in result.to_dict().items() if k not in ("field", "field_sigma", "sigmas", "p95_factor")}
    read = Verification.from_dict(old | {"version": 1})
    assert read.field == old["corner"] and read.sigmas == 0 and read.with_limit(1.0).verdict == "aligned"
    assert read.with_limit(old["corner"] - 0.01, p95_factor=10).verdict == "misaligned"
    with pytest.raises(ValueError, match="differ in shape"):
        verify(lr, lr[:-1])
    assert list(tile_origins(124, 32)) == [0, 15, 31, 46, 61, 77, 92]
    # Windows up to 16 tiles of 64 px are measured as they are; larger ones where 16 tiles a side touch, unless the
    # shorter side would no longer hold a tile.
    assert [pyramid_factor(s) for s in [(124, 124), (700, 1024), (700, 1025), (1730, 2609), (4000, 6000)]] == [
        1, 1, 2, 4, 8]
    assert pyramid_factor((100, 3000)) == 1 and pyramid_factor((200, 3000)) == 2


def test_a_blur_difference_is_not_misalignment(data_dir):
    # The LR of a shorter lens is often a pixel blurrier than the HR brought onto its grid. A tile cuts structure
    # off at its border, and the blurrier image spreads what lies outside into the tile on one side only: measured
    # on a real HR against its own copy blurred by 1.5 LR px (exactly aligned), tile p95 0.52 LR px and a fitted
    # corner 0.31 px before the verifier matched the blur; 0.08 and 0.04 px after.
    lr, hr = _pair(data_dir, "realsr_x4", "Canon_001_LR4.png")
    test = _on_lr(hr, lr)
    noise = np.random.default_rng(0).normal(0, 0.005, test.shape).astype(np.float32)
    blurred = np.clip(cv2.GaussianBlur(test, (0, 0), 1.5) + noise, 0, 1)
    result = verify(blurred, test, **ALIGN_GATE)
    assert result.verdict == "aligned" and result.p95 < 0.15, result.reason
    assert abs(result.blur - 1.5) <= 0.2, result.blur
    shifted = verify(blurred, _on_lr(misalign_hr(hr, "shift", 0.6, angle=1.0), lr), **ALIGN_GATE)
    assert shifted.verdict == "misaligned" and abs(np.hypot(*_translation(shifted)) - 0.6) < 0.15, shifted.reason


def test_noise_is_not_misalignment(data_dir):
    # Tiles whose displacement noise exceeds MAX_TILE_SIGMA are "noisy", and the gated tile p95 is what the tiles
    # show beyond twice their noise: heavy sensor noise on an aligned real pair does not make it "misaligned".
    lr, hr = _pair(data_dir, "realsr_x4", "Nikon_047_LR4.png")
    rng = np.random.default_rng(1)
    noisy = np.clip(lr + rng.normal(0, 0.25, lr.shape).astype(np.float32), 0, 1)
    result = verify(noisy, _on_lr(hr, lr))
    assert result.verdict == "aligned", result.reason
    # Measured when this was written: raw tile p95 0.82 px, beyond twice the noise 0.46 px; one noisy tile.
    assert result.noisy >= 1 and result.p95_excess < 0.7 * result.p95
    # ... while the same noise on a pair shifted by 1 LR px still shows the shift.
    shifted = verify(noisy, _on_lr(misalign_hr(hr, "shift", 1.0, angle=0.5), lr))
    assert shifted.verdict == "misaligned", shifted.reason


def test_a_channel_clipped_in_one_capture_is_not_misalignment(data_dir):
    # A brighter LR exposure clips the red of a chart's red and pink patches while the HR does not; after the
    # photometric gain those patches' grey is off, a tile holding several of them has no single gain and offset, and
    # the edges between them read as displacement. Exactly aligned here (a real chart photograph as the HR, the LR its
    # area-downscale blurred by 0.7 px in linear light, exposed 1.6 x and corrected back).
    photo = read_image(data_dir / "exif_jpeg" / "digicam_corpus" / "olympus_c5050_PB180005.JPG")[200:1000, 300:1300]
    on_lr = cv2.resize(linear(photo, "srgb"), (500, 400), interpolation=cv2.INTER_AREA)
    captured = np.clip(cv2.GaussianBlur(on_lr, (0, 0), 0.7) * 1.6, 0, 1)
    as_written = np.round(captured ** (1 / 2.2) * 65535).astype(np.uint16)  # the LR capture's own values
    corrected = captured / 1.6
    clipped = clipped_channels(as_written, (photo * 255).round().astype(np.uint8))
    assert clipped is not None and 0.3 < (clipped[..., 0] > 0).mean() < 0.35
    assert clipped.all(axis=-1).mean() < 0.01
    # Measured while writing this test: tile median 0.089 and max 0.56 LR px without the mask; 0.006 and 0.19 with
    # the channels left out and 43 of the 45 tiles measured (verifier version 5, the largest where a white patch
    # clips every channel of the LR); 0.000 and 0.089 on 33 tiles once the pixels that white patch's plateau reaches
    # are left out of the fit too (version 6).
    blind = verify(corrected, on_lr, **ALIGN_GATE)
    assert blind.max > 0.4 and blind.median > 0.05, (blind.max, blind.median)
    masked = verify(corrected, on_lr, **ALIGN_GATE, clipped=clipped)
    assert masked.verdict == "aligned" and masked.median < 0.02 and masked.max < 0.15, masked.reason
    assert masked.tiles >= 0.7 * blind.tiles
    # ... and the mask does not hide a real misalignment: the same pair with the HR shifted by 0.8 LR px.
    shifted = cv2.warpAffine(on_lr, np.float32([[1, 0, 0.8], [0, 1, 0]]), (500, 400), flags=cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT)
    moved = verify(corrected, shifted, **ALIGN_GATE, clipped=clipped)
    assert moved.verdict == "misaligned" and abs(moved.median - 0.8) < 0.1, moved.reason
    # Clipped alike in both captures (equal exposure and blur), the two agree there: no channel is left out.
    equal = np.clip(on_lr * 1.6, 0, 1)
    alike = clipped_channels(as_written, np.repeat(np.repeat(as_written, 2, axis=0), 2, axis=1))
    assert (alike[clipped == CLIPPED_REFERENCE] == CLIPPED_REFERENCE | CLIPPED_TEST).all()
    assert measure_tiles(equal, equal.copy(), clipped=alike) == measure_tiles(equal, equal.copy())


def test_a_channel_clipped_in_one_capture_biases_where_the_two_values_agree(data_dir):
    # The LR exposed so that a fifth of a chart's brightest channel values clip, then matched to the HR by align's own
    # linear-light fit: the fit lifts each clipped plateau to the HR's level there, so the two values agree within
    # 5 % on most clipped pixels, yet the plateau is flat in the LR and shaded in the HR and its edges move. Exactly
    # aligned; a 2560-px window, measured at a quarter of its size like the generator chart that found this (its LR
    # green clipped on 26 % of the window within 5 % of the HR, 16 of 19 tiles at 0.18-0.50 LR px, the truth 0.02).
    photo = read_image(data_dir / "exif_jpeg" / "digicam_corpus" / "olympus_c5050_PB180005.JPG")
    on_lr = linear(photo, "srgb")
    blurred = cv2.GaussianBlur(on_lr, (0, 0), 0.7)
    captured = np.clip(blurred / np.percentile(blurred.max(axis=-1), 80), 0, 1)
    corrected = np.clip(fit_photometric(captured, on_lr, relative=LINEAR_FLOOR).apply(captured), 0, 1)
    clipped = clipped_channels(np.round(captured ** (1 / 2.2) * 65535).astype(np.uint16),
                               np.round(on_lr ** (1 / 2.2) * 255).astype(np.uint8))
    assert pyramid_factor(on_lr.shape) == 4 and (clipped == CLIPPED_REFERENCE).mean() > 0.05
    # Measured while writing this test: 0.108 LR px median without the mask; 0.037 with the clipped channels left
    # out only where the values disagree (verifier version 6); 0.012 once clipped in one capture only is enough
    # (version 7), 135 tiles measured.
    blind = verify(corrected, on_lr, **ALIGN_GATE, linear_light=True)
    masked = verify(corrected, on_lr, **ALIGN_GATE, clipped=clipped, linear_light=True)
    assert blind.median > 0.08, blind.median
    assert masked.verdict == "aligned" and masked.median < 0.02 and masked.tiles > 100, (masked.median, masked.tiles)


def test_clipped_channels_are_read_from_the_captures_own_values():
    lr = np.full((4, 6, 3), 1000, np.uint16)
    hr = np.full((8, 12, 3), 100, np.uint8)
    assert clipped_channels(lr, hr) is None
    lr[1, 2, 0] = 65535  # LR red at the top of its range
    hr[5, 9, 2] = 255  # HR blue inside LR pixel (x 4, y 2)
    mask = clipped_channels(lr, hr)
    assert mask.shape == (4, 6, 3) and np.count_nonzero(mask) == 2
    assert mask[1, 2, 0] == CLIPPED_REFERENCE and mask[2, 4, 2] == CLIPPED_TEST
    assert clipped_channels(lr.astype(np.float32) / 65535, hr)[1, 2, 0]  # float images: 1.0 is the top
    for factor in (4, 17):  # one saturated HR pixel in a block marks its LR pixel, at any scale
        large = np.zeros((4 * factor, 6 * factor, 3), np.uint8)
        large[3 * factor - 1, 5 * factor - 1, 1] = 255
        mask = clipped_channels(lr // 100, large)
        assert np.count_nonzero(mask) == 1 and mask[2, 4, 1] == CLIPPED_TEST, factor
    with pytest.raises(ValueError, match="integer multiple"):
        clipped_channels(lr, hr[:7])
    with pytest.raises(ValueError, match="need RGB"):
        clipped_channels(lr[..., 0], hr[..., 0])
    with pytest.raises(ValueError, match="is not clipped_channels'"):
        measure_tiles(lr.astype(np.float32), lr.astype(np.float32), clipped=mask[:3])
    with pytest.raises(ValueError, match="is not clipped_channels'"):  # a bool mask does not say which capture
        measure_tiles(lr.astype(np.float32), lr.astype(np.float32), clipped=mask > 0)


def test_the_verifier_shares_no_code_with_what_it_judges():
    # Independence is the point: the verifier must not import the registration, the quality tiles or the
    # evaluation harness (nor they it), so it cannot share their blind spots.
    import ast
    from pathlib import Path

    import realsr_tools.verification as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {("." * node.level) + (node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "dataclasses", "functools", "numpy", "cv2", "scipy"}, imported


def test_a_highlight_clipped_in_every_channel_of_one_capture_is_left_out(data_dir):
    # The LR exposed 2.5 x the HR (1.3 EV, within the hard generator's range) clips a bright sky in every channel;
    # its plateau is flat where the HR's is shaded, and under one gain and offset per tile the edge around it reads
    # as displacement. No channel is free of it, so its pixels (and their reach) are left out of the tiles' fits.
    # Exactly aligned here: a real photograph's area-downscale, the LR blurred by 0.7 px in linear light.
    photo = read_image(data_dir / "photos" / "skimage_UNIS_EV0.jpg")
    h, w = photo.shape[0] // 2, photo.shape[1] // 2
    on_lr = cv2.resize(linear(photo, "srgb"), (w, h), interpolation=cv2.INTER_AREA)
    captured = np.clip(cv2.GaussianBlur(on_lr, (0, 0), 0.7) * 2.5, 0, 1)
    clipped = clipped_channels(np.round(captured ** (1 / 2.2) * 65535).astype(np.uint16),
                               (photo * 255).round().astype(np.uint8))
    corrected = captured / 2.5
    assert clipped is not None and clipped.all(axis=-1).mean() > 0.1
    # Measured while writing this test (linear light, align's gate): without the clipping 0.80 LR px, misaligned;
    # verifier version 5 (channels only) the same, every channel being clipped; version 6 0.08, 25 tiles measured.
    blind = verify(corrected, on_lr, **ALIGN_GATE, linear_light=True)
    assert blind.verdict == "misaligned", blind.reason
    tiles, _, _ = measure_tiles(corrected, on_lr, clipped=clipped, linear_light=True)
    assert any(t.kind == "clipped" for t in tiles)
    masked = verify(corrected, on_lr, **ALIGN_GATE, clipped=clipped, linear_light=True)
    assert masked.verdict == "aligned" and masked.field < 0.2 and masked.tiles >= MIN_TILES * 4, masked.reason
    # ... and a real misalignment is still seen on what is left: the HR moved by 0.8 LR px.
    shifted = cv2.warpAffine(on_lr, np.float32([[1, 0, 0.8], [0, 1, 0]]), (w, h), flags=cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT)
    moved = verify(corrected, shifted, **ALIGN_GATE, clipped=clipped, linear_light=True)
    assert moved.verdict == "misaligned" and abs(moved.median - 0.8) < 0.1, moved.reason
