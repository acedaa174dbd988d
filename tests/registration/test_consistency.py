"""The scene check's pure parts (realsr_tools.registration.consistency): which captures are compared, what a
disagreement measures, and who is refused."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from realsr_tools.geometry import RadialDistortion, apply_homography, map_lr_to_hr, scaling, translation
from realsr_tools.registration.consistency import (CHAIN_FIT_TOLERANCE, MAX_DISAGREEMENT, MAX_DISAGREEMENT_P95,
                                                   REFUSED_CHAIN_FIT_TOLERANCE, TRANSFER_MARGIN, Comparison,
                                                   chain_fit_tolerance, chain_hypothesis, chain_source,
                                                   compare, comparison_plan, consistency_fields,
                                                   excess_disagreement, expected_magnification, fit_chain,
                                                   judge_scene, scene_start)
from realsr_tools.registration.estimate import MAX_ZOOM_ERROR


def test_three_captures_are_all_compared_and_more_only_with_their_nearest_focal_lengths():
    # Focal ratios to the HR: x2, x4, x3 in input order; pairs are (wider, narrower).
    assert sorted(comparison_plan([2.0, 4.0, 3.0])) == [(1, 0), (1, 2), (2, 0)]
    plan = comparison_plan([2.0, 2.5, 3.0, 4.0, 5.0])
    assert len(plan) == 7 and (4, 0) not in plan and (3, 0) not in plan
    assert comparison_plan([4.0]) == []


def _hr_maps(zoom_wide=4.0, zoom_narrow=2.0, offset=(100.0, 80.0)):
    """Two LR captures of one HR: the wider at ``zoom_wide`` HR px per LR px, the narrower at ``zoom_narrow``."""
    wide_to_hr = translation(-offset[0] * zoom_wide, -offset[1] * zoom_wide) @ scaling(zoom_wide)
    narrow_to_hr = translation(-2 * offset[0] * zoom_narrow, -2 * offset[1] * zoom_narrow) @ scaling(zoom_narrow)
    return wide_to_hr, narrow_to_hr


def test_the_chain_of_two_correct_mappings_agrees_and_a_scale_error_shows_in_wide_px():
    wide_to_hr, narrow_to_hr = _hr_maps()
    truth = chain_hypothesis(wide_to_hr, narrow_to_hr)  # wide -> narrow implied by the two
    assert np.allclose(apply_homography(narrow_to_hr, apply_homography(truth, np.array([[150.0, 120.0]]))),
                       apply_homography(wide_to_hr, np.array([[150.0, 120.0]])))
    window = (100, 80, 160, 120)

    def as_map(matrix):
        return functools.partial(apply_homography, matrix)

    same = compare(as_map(wide_to_hr), as_map(narrow_to_hr), as_map(truth), window, 4.0, wide=0, narrow=1)
    assert same.median == pytest.approx(0, abs=1e-9) and same.agrees()
    # The narrow pair's mapping 1 % too large about the window's centre: zero at the centre, 0.01 x the distance
    # (in narrow px, half as many wide px) at the edges.
    centre = apply_homography(narrow_to_hr, apply_homography(truth, np.array([[179.5, 139.5]])))[0]
    scaled = translation(*centre) @ scaling(1.01) @ translation(*-centre) @ narrow_to_hr
    off = compare(as_map(wide_to_hr), as_map(scaled), as_map(truth), window, 4.0, wide=0, narrow=1)
    corner = np.hypot(80, 60) * 4 * 0.01 / 4  # HR px at the wide window's corner, in wide LR px
    assert off.max == pytest.approx(corner, rel=0.05) and 0 < off.median < off.max


def test_a_capture_is_given_the_mapping_its_sibling_and_their_direct_registration_imply():
    wide_to_hr, narrow_to_hr = _hr_maps(zoom_wide=4.19, zoom_narrow=1.9)
    wide_to_narrow = functools.partial(apply_homography, chain_hypothesis(wide_to_hr, narrow_to_hr))
    shapes = {"wide_shape": (480, 640), "narrow_shape": (480, 640)}
    # The sibling is the wide capture, its window where the HR field lies in it: the narrow capture's mapping.
    start = scene_start(wide_to_narrow, functools.partial(apply_homography, wide_to_hr), (100, 80, 160, 120),
                        sibling_is_wide=True, **shapes)
    assert np.allclose(start, narrow_to_hr / narrow_to_hr[2, 2], atol=1e-6)
    # The sibling is the narrow capture: the wide capture's.
    start = scene_start(wide_to_narrow, functools.partial(apply_homography, narrow_to_hr), (200, 160, 320, 240),
                        sibling_is_wide=False, **shapes)
    assert np.allclose(start, wide_to_hr / wide_to_hr[2, 2], atol=1e-6)
    # A window the two frames do not share: no start.
    assert scene_start(wide_to_narrow, functools.partial(apply_homography, wide_to_hr), (600, 0, 30, 30),
                       sibling_is_wide=True, **shapes) is None


def test_a_direct_registration_is_checked_against_the_chains_magnification_when_they_agree():
    # Nominal focal lengths x4 and x2 (ratio 2.0); true zooms 4.19 and 1.90, as the independent generator draws them,
    # make the captures 2.205 apart (normal seed 17's scene 8 was measured at 2.207 and refused).
    wide_to_hr, narrow_to_hr = _hr_maps(zoom_wide=4.19, zoom_narrow=1.9)
    chain = chain_hypothesis(wide_to_hr, narrow_to_hr)
    centre = (180.0, 140.0)
    assert abs(2.207 / 2.0 - 1) > MAX_ZOOM_ERROR  # what the focal lengths alone refuse
    assert expected_magnification(2.207, 2.0, chain, centre) == pytest.approx(4.19 / 1.9)
    # A direct estimate that neither the chain nor the focal lengths confirm is checked against the focal lengths,
    # as any pair is (and refused by check_registration).
    assert expected_magnification(2.6, 2.0, chain, centre) == 2.0
    assert expected_magnification(1.95, 2.0, chain, centre) == 2.0


def test_a_capture_is_refused_only_when_every_comparison_disagrees():
    agree, disagree = 0.1, MAX_DISAGREEMENT + 0.3
    # One capture off: it disagrees with both others, which agree with each other.
    assert judge_scene(3, [Comparison(0, 1, disagree), Comparison(0, 2, disagree), Comparison(1, 2, agree)]) == [
        "inconsistent", "consistent", "consistent"]
    # One direct registration wrong: outvoted by the two that agree.
    assert judge_scene(3, [Comparison(0, 1, disagree), Comparison(0, 2, agree), Comparison(1, 2, agree)]) == [
        "consistent"] * 3
    # Two captures that disagree: nothing tells which is wrong, both go.
    assert judge_scene(2, [Comparison(0, 1, disagree)]) == ["inconsistent"] * 2
    # A failed direct registration counts neither way; a capture alone is unchecked.
    assert judge_scene(2, [Comparison(0, 1, error="no reliable match")]) == ["unchecked"] * 2
    assert judge_scene(1, []) == ["unchecked"]


def test_a_fit_bent_at_one_side_disagrees_though_its_median_is_under_the_limit():
    # Generator hard geometry, 4000-6000 px frames, seed 7 with neutral photometry: a nikon_d3100 chart x2 written
    # 4.3 LR px RMS off (17 px at a corner) against its x4 (0.02 px off) by a median 0.39, p95 5.6, max 8.8; its x3,
    # matched elsewhere, disagreed with both by 18-19 px. The median alone kept the x2 and the x4.
    bent = Comparison(0, 2, median=0.3895, p95=5.6402, max=8.8069)
    assert bent.agrees() is False
    assert Comparison(0, 2, median=0.3895, p95=MAX_DISAGREEMENT_P95, max=8.8).agrees()
    assert Comparison(0, 2, median=0.1842, p95=0.667, max=1.09).agrees()  # the largest p95 of a correct pair seen
    scene = [bent, Comparison(0, 1, median=17.99, p95=109.0, max=151.8), Comparison(1, 2, median=19.30, p95=106.5,
                                                                                   max=146.5)]
    # Nothing tells which of three disagreeing captures is right: all are refused, none written 17 px off.
    assert judge_scene(3, scene) == ["inconsistent"] * 3
    reason = consistency_fields(["x4", "x3", "x2"], scene)[2]["reason"]
    assert "x4 by 0.39 (p95 5.64), x3 by 19.30 (p95 106.50) LR px" in reason


def test_a_provisional_capture_is_kept_only_when_a_capture_that_passed_the_gate_confirms_it():
    agree, disagree = 0.1, MAX_DISAGREEMENT + 0.3
    # Capture 2 is provisional (above the texture gate). Confirmed by a gate-passed capture and contradicted by none.
    assert judge_scene(3, [Comparison(0, 1, agree), Comparison(0, 2, agree), Comparison(1, 2, agree)],
                       provisional=[2]) == ["consistent"] * 3
    # One gate-passed capture disagrees: not confirmed (a wrong-patch match can agree with one sibling by chance).
    assert judge_scene(3, [Comparison(0, 1, agree), Comparison(0, 2, agree), Comparison(1, 2, disagree)],
                       provisional=[2]) == ["consistent", "consistent", "unconfirmed"]
    # Its disagreement takes no gate-passed capture with it, even in a scene of two ...
    assert judge_scene(2, [Comparison(0, 1, disagree)], provisional=[1]) == ["unchecked", "unconfirmed"]
    # ... its agreement confirms none, and two provisional captures do not confirm each other.
    assert judge_scene(2, [Comparison(0, 1, agree)], provisional=[1]) == ["unchecked", "consistent"]
    assert judge_scene(2, [Comparison(0, 1, agree)], provisional=[0, 1]) == ["unconfirmed"] * 2
    # Alone, or with every direct registration failed: unconfirmed.
    assert judge_scene(1, [], provisional=[0]) == ["unconfirmed"]
    assert judge_scene(2, [Comparison(0, 1, error="no reliable match")], provisional=[0]) == [
        "unconfirmed", "unchecked"]
    fields = consistency_fields(["s__x4", "s__x2"], [Comparison(0, 1, 0.9, 1.5, 2.0, "search")], provisional=[0])
    assert fields[0]["verdict"] == "unconfirmed" and "where its own mapping does: s__x2 by 0.90 LR px" in fields[0][
        "reason"]
    assert "no capture that passed the gate could be registered to it" in consistency_fields(
        ["s__x4"], [], provisional=[0])[0]["reason"]
    # Compared only with another provisional capture: the reason says that this comparison did not count.
    (x4, x3) = consistency_fields(["s__x4", "s__x3"], [Comparison(0, 1, 0.7, 1.0, 1.2, "search")], provisional=[0, 1])
    assert x4["reason"].endswith("no capture that passed the gate could be registered to it (captures above the "
                                 "gate, which confirm nothing: s__x3 by 0.70 LR px)")
    # A lost check: unchecked or unconfirmed, with why.
    kept, refused = consistency_fields(["s__x2", "s__x4"], [], provisional=[1], lost="worker died")
    assert kept == {"verdict": "unchecked", "limit": MAX_DISAGREEMENT, "comparisons": [], "error": "worker died"}
    assert refused["verdict"] == "unconfirmed" and refused["reason"].endswith("the check was lost (worker died)")


def test_the_record_of_a_refused_capture_names_the_captures_it_disagrees_with():
    comparisons = [Comparison(0, 1, 0.82, 1.9, 2.0, "search"), Comparison(0, 2, 0.78, 1.8, 2.1, "search"),
                   Comparison(1, 2, 0.08, 0.3, 0.5, "hypothesis")]
    fields = consistency_fields(["s__x4", "s__x3", "s__x2"], comparisons)
    assert [f["verdict"] for f in fields] == ["inconsistent", "consistent", "consistent"]
    assert "s__x3 by 0.82, s__x2 by 0.78 LR px" in fields[0]["reason"] and "reason" not in fields[1]
    assert [c["narrow"] for c in fields[0]["comparisons"]] == ["s__x3", "s__x2"]
    assert fields[1]["comparisons"][1] == {"wide": "s__x3", "narrow": "s__x2", "median": 0.08, "p95": 0.3,
                                           "max": 0.5, "start": "hypothesis", "error": None}


def test_a_pair_takes_the_chain_only_through_its_scenes_narrowest_capture_and_only_when_better_pinned():
    # x2, x3, x4 captures (focal ratios), all consistent and agreeing; zooms = HR px per LR px.
    ratios, zooms = [2.0, 3.0, 4.0], [2.0, 3.0, 4.0]
    agree = [Comparison(2, 0, 0.02, 0.1, 0.2), Comparison(2, 1, 0.05, 0.1, 0.2), Comparison(1, 0, 0.03, 0.1, 0.2)]
    verdicts = ["consistent"] * 3
    sigmas = [0.06, 0.02, 0.1]  # the x3 the best pinned by its own measure: still never the source

    def source(index, **changes):
        args = dict(verdicts=verdicts, comparisons=agree, uncertainties=sigmas, sources=[0, 1, 2]) | changes
        return chain_source(index, ratios, args["verdicts"], args["comparisons"], args["uncertainties"], zooms,
                            sources=args["sources"])

    # x4: the x2's 0.06 carried to x4 px is 0.03, under half its own 0.1.
    assert source(2) == (0, pytest.approx(0.03))
    # x3: 0.06 * 2 / 3 = 0.04 is more than half its own 0.02: it keeps its own.
    assert source(1) is None
    # Nothing takes a chain to the narrowest, nor from a capture the scene did not confirm or that is not a source.
    assert source(0) is None
    assert source(2, verdicts=["unchecked", "consistent", "consistent"]) is None
    assert source(2, sources=[1, 2]) is None  # the x3 is not the scene's narrowest capture: no fallback to it
    # A pair that disagrees with the narrowest capture, or that its scene did not confirm, keeps its own mapping ...
    disagree = [Comparison(2, 0, MAX_DISAGREEMENT + 0.1, 0.5, 0.6), *agree[1:]]
    assert source(2, comparisons=disagree) is None
    assert source(2, verdicts=["consistent", "consistent", "unconfirmed"]) is None
    assert source(2, verdicts=["consistent", "consistent", "unchecked"]) is None
    # ... but a pair its scene outvotes is offered the chain though its own mapping disagrees (align keeps it only
    # if the chain then agrees with every capture).
    assert source(2, comparisons=disagree, verdicts=["consistent", "consistent", "inconsistent"])[0] == 0
    # The margin: carried uncertainty exactly at TRANSFER_MARGIN x its own still moves it.
    assert source(2, uncertainties=[0.06, 0.02, 0.03 / TRANSFER_MARGIN])[0] == 0
    assert source(2, uncertainties=[0.06, 0.02, 0.03 / TRANSFER_MARGIN - 0.001]) is None


def test_a_chains_fit_may_take_what_the_margin_leaves_between_the_two_tolerances():
    # Own corners 0.39 LR px uncertain, the chain's carried 0.13: half the own less the carried leaves 0.064.
    assert chain_fit_tolerance(0.39, 0.13) == pytest.approx(TRANSFER_MARGIN * 0.39 - 0.13)
    # A chain carried at exactly half the pair's own leaves nothing: the fixed tolerance still holds.
    assert chain_fit_tolerance(0.1, 0.05) == CHAIN_FIT_TOLERANCE
    # Never more than a refused pair's: a pair 0.8 px uncertain is no reason to write a chain no model holds.
    assert chain_fit_tolerance(0.8, 0.1) == REFUSED_CHAIN_FIT_TOLERANCE
    # A pair whose own registration does not stand (refused, or outvoted by its scene) gets the refused tolerance.
    assert chain_fit_tolerance(None) == chain_fit_tolerance(None, 0.13) == REFUSED_CHAIN_FIT_TOLERANCE


def test_a_capture_both_agreeing_siblings_disagree_with_carries_the_excess_as_its_own_error():
    # x4, x3, x2 (HR px per LR px 4, 3, 2); medians in the wider capture's LR px. The x2 and x3 agree to 0.001.
    zooms = [4.0, 3.0, 2.0]
    scene = [Comparison(0, 1, 0.19), Comparison(0, 2, 0.18), Comparison(1, 2, 0.001)]
    assert excess_disagreement(0, scene, zooms) == pytest.approx(0.18 - 0.001 * 3 / 4)
    # The x2 agrees with the x3, so nothing is in excess for it (the x4's disagreement is not its own).
    assert excess_disagreement(2, scene, zooms) == 0.0
    # Carried to the capture's own LR px: the x3 against the x4 is 0.19 x4 px = 0.253 x3 px.
    assert excess_disagreement(1, [Comparison(0, 1, 0.19), Comparison(1, 2, 0.2), Comparison(0, 2, 0.001)],
                               zooms) == pytest.approx(0.2 - 0.001 * 4 / 3)
    # Two siblings not compared with each other, a failed comparison, or one sibling: nothing to say.
    assert excess_disagreement(0, scene[:2], zooms) is None
    assert excess_disagreement(0, [scene[0], scene[1], Comparison(1, 2, error="failed")], zooms) is None
    assert excess_disagreement(0, [scene[0]], zooms) is None
    # What the excess allows the chain's fit: what is left of it once the chain's own uncertainty is taken off,
    # between the two tolerances (the margin alone left nothing here: 0.5 x 0.055 - 0.022 < 0.02).
    assert chain_fit_tolerance(0.055, 0.022) == CHAIN_FIT_TOLERANCE
    assert chain_fit_tolerance(0.055, 0.022, 0.06) == pytest.approx(0.06 - 0.022)
    assert chain_fit_tolerance(0.055, 0.022, 0.18) == REFUSED_CHAIN_FIT_TOLERANCE
    assert chain_fit_tolerance(0.055, 0.022, 0.0) == chain_fit_tolerance(0.055, 0.022, None) == CHAIN_FIT_TOLERANCE
    assert chain_fit_tolerance(None, 0.022, 0.0) == REFUSED_CHAIN_FIT_TOLERANCE


def test_a_capture_its_scene_measures_off_takes_the_chain_that_its_own_uncertainty_would_refuse():
    # x4, x3, x2 as in generator normal seed 108's chart: the x4 claims 0.064 LR px at its corners, its x2's chain
    # is carried at 0.052 (more than half of it), and both siblings, agreeing with each other to 0.0005, are 0.15
    # from it.
    ratios, zooms = [4.0, 3.0, 2.0], [3.8, 3.1, 1.96]
    scene = [Comparison(0, 1, 0.15, 0.31, 0.45), Comparison(0, 2, 0.151, 0.31, 0.45), Comparison(1, 2, 0.0005)]
    sigmas = [0.064, 0.05, 0.052 * 3.8 / 1.96]

    def source(index, excess):
        return chain_source(index, ratios, ["consistent"] * 3, scene, sigmas, zooms, sources=[0, 1, 2], excess=excess)

    assert source(0, None) is None and source(0, 0.0) is None
    excess = excess_disagreement(0, scene, zooms)
    assert source(0, excess) == (2, pytest.approx(0.052))
    # An excess below what the margin asks moves nothing: the scene's measure counts only where it is the larger.
    assert source(0, 2 * 0.052 - 0.001) is None
    # The x3 is not in excess (it agrees with the x2), so it keeps its own.
    assert excess_disagreement(1, scene, zooms) == 0.0


def test_an_error_growing_towards_the_corners_is_read_by_the_p95_excess():
    # x4, x3, x2 as in generator normal seed 111's olympus_c5050 chart: the x4 (a similarity 1.44 LR px off at a
    # corner) claims 0.062 LR px; its siblings agree to 0.004 (p95 0.011) and are 0.106 from it by the median,
    # 0.79 by the p95; its x2's chain is carried at 0.068.
    ratios, zooms = [4.0, 3.0, 2.0], [4.18, 2.93, 2.07]
    scene = [Comparison(0, 1, 0.108, 0.794, 1.46), Comparison(0, 2, 0.106, 0.789, 1.46),
             Comparison(1, 2, 0.0041, 0.0107, 0.021)]
    sigmas = [0.062, 0.098, 0.068 * 4.18 / 2.07]
    by_median = excess_disagreement(0, scene, zooms)
    by_p95 = excess_disagreement(0, scene, zooms, statistic="p95")
    assert by_median == pytest.approx(0.106 - 0.0041 * 2.93 / 4.18)
    assert by_p95 == pytest.approx(0.789 - 0.0107 * 2.93 / 4.18)

    def source(excess):
        return chain_source(0, ratios, ["consistent"] * 3, scene, sigmas, zooms, sources=[0, 1, 2], excess=excess)

    # The median excess reads a seventh of it: half of 0.10 is under the chain's 0.068; the p95's is not.
    assert source(by_median) is None
    assert source(max(by_median, by_p95)) == (2, pytest.approx(0.068))
    # A comparison whose direct registration failed has no p95 either: nothing to say.
    assert excess_disagreement(0, [*scene[:2], Comparison(1, 2, error="failed")], zooms, statistic="p95") is None


def test_a_chain_is_fitted_as_the_records_model_and_refused_when_none_holds_it():
    window, zoom = (40, 30, 300, 220), 3.9
    lr_to_hr = (translation(-120.0, -95.0) @ np.array([[3.9, 0.05, 0], [-0.04, 3.88, 0], [1e-5, -2e-5, 1.0]]))
    frames = np.array([[319.5, 239.5, 400.0], [190.0, 140.0, 170.0]])
    # A homography alone: recovered exactly, no radial terms.
    matrix, distortion, residual = fit_chain(functools.partial(apply_homography, lr_to_hr), window, zoom, frames)
    assert distortion is None and residual < 1e-6
    assert np.allclose(matrix, lr_to_hr / lr_to_hr[2, 2], rtol=1e-6, atol=1e-6)
    # With radial terms of both lenses (0.4 LR px at the window's corners): the homography alone misses them, the
    # model with the frames' terms holds them.
    lens = RadialDistortion(((-0.01, *frames[0]), (0.012, *frames[1])))
    chain = functools.partial(map_lr_to_hr, lr_to_hr, lens)
    matrix, distortion, residual = fit_chain(chain, window, zoom, frames)
    assert distortion is not None and residual < 1e-4
    assert [k for k, *_ in distortion.terms] == pytest.approx([-0.01, 0.012], abs=1e-5)
    # Without frames only a homography is fitted, and the radial terms show in the residual.
    assert fit_chain(chain, window, zoom, None)[2] > CHAIN_FIT_TOLERANCE
    # Two mappings composed (a direct registration to another capture, then its record): within the tolerance.
    direct = translation(5.0, -3.0) @ scaling(0.5)
    composed = fit_chain(lambda p: apply_homography(lr_to_hr, apply_homography(direct, p)), window, zoom, frames)
    assert composed[2] < CHAIN_FIT_TOLERANCE
