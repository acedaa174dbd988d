"""Pictures people judge pairs by: align previews large, contrast-stretched and labelled, with the verifier's tiles."""

from __future__ import annotations

import cv2
import numpy as np

from realsr_tools.imaging import read_image
from realsr_tools.previews import GAP, LINE_HEIGHT, PREVIEW_SIZE, RED, preview_image, verifier_labels
from realsr_tools.stages.align_pair import FIELD_P95_FACTOR, FIELD_SIGMAS, MAX_FIELD_DISPLACEMENT
from realsr_tools.verification import measure_tiles, summarise, verify
from washdata import misalign_hr


def test_align_preview_of_a_small_dark_window_is_enlarged_stretched_and_labelled(data_dir):
    lr = read_image(data_dir / "pairs" / "realsr_x4" / "LR" / "Canon_004_LR4.png")[40:77, 10:98] * 0.25
    preview = preview_image(lr, lr)
    band, panels = preview[:LINE_HEIGHT + 6], preview[LINE_HEIGHT + 6:]
    assert panels.shape[0] == round(37 * PREVIEW_SIZE / 88) and panels.shape[1] == 2 * PREVIEW_SIZE + GAP
    checker = panels[:, :PREVIEW_SIZE]
    assert lr.max() < 0.26 and np.percentile(checker, 99) > 0.9  # stretched, not dark
    assert np.abs(panels[:, PREVIEW_SIZE + GAP:]).max() == 0  # identical images: no difference
    assert (band < 0.5).any() and (band > 0.99).mean() > 0.8  # dark label text on a white band


def _verifier_panel(lr, hr_on_lr):
    tiles, tile, blur = measure_tiles(lr, hr_on_lr)
    verification = summarise(tiles, tile, lr.shape[:2], limit=0.5, sigmas=0.0, blur=blur)
    preview = preview_image(lr, hr_on_lr, tiles=tiles, verification=verification)
    return verification, preview[3 * LINE_HEIGHT + 6:, 2 * (PREVIEW_SIZE + GAP):]


def _red(panel):
    return np.all(np.abs(panel - np.float32(RED)) < 0.15, axis=-1)


def test_verifier_panel_shows_where_a_rolled_pair_is_off_and_an_aligned_one_is_not(data_dir):
    pairs = data_dir / "pairs" / "realsr_x4"
    lr = read_image(pairs / "LR" / "Canon_004_LR4.png")
    hr = read_image(pairs / "HR" / "Canon_004_LR4.png")
    h, w = lr.shape[:2]
    on_lr = cv2.resize(hr, (w, h), interpolation=cv2.INTER_AREA)
    verification, panel = _verifier_panel(lr, on_lr)
    assert verification.verdict == "aligned" and panel.shape[:2] == (PREVIEW_SIZE, PREVIEW_SIZE)
    assert not _red(panel).any()
    # A 0.6 deg roll about the centre: right at the centre, about 0.6 LR px off at the window's corners.
    roll = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.6, 1.0)
    rolled = cv2.warpAffine(on_lr, roll, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    verification, panel = _verifier_panel(lr, rolled)
    assert verification.verdict == "misaligned"
    red = _red(panel)
    third = PREVIEW_SIZE // 3
    centre, outer = red[third:2 * third, third:2 * third].sum(), red.sum() - red[third:2 * third, third:2 * third].sum()
    assert outer > 0 and outer > 4 * centre  # red arrows where the roll moves content: away from the centre


def test_the_verifier_label_gives_the_judged_field_with_its_standard_error(data_dir):
    # RealSR Nikon_023 moved 0.1 LR px, on 18 tiles: its field's estimate (0.44) sits under align's limit, one
    # standard error above it (0.55) over; the label says both, so a refusal does not read as a bare 0.44 px.
    pairs = data_dir / "pairs" / "realsr_x4"
    lr = read_image(pairs / "LR" / "Nikon_023_LR4.png")
    hr = read_image(pairs / "HR" / "Nikon_023_LR4.png")
    on_lr = cv2.resize(misalign_hr(hr, "shift", 0.1, angle=1.0), lr.shape[1::-1], interpolation=cv2.INTER_AREA)
    v = verify(lr, on_lr, limit=MAX_FIELD_DISPLACEMENT, sigmas=FIELD_SIGMAS, p95_factor=FIELD_P95_FACTOR)
    point = v.field + FIELD_SIGMAS * v.field_sigma
    assert point < v.limit < v.field and v.verdict == "misaligned", v.reason
    first = verifier_labels([], v)[0]
    assert first.startswith(f"verifier: misaligned, field {point:.2f} +- {v.field_sigma:.2f} px (limit 0.5)"), first
