"""align decodes a scene's pairs with one curve where their files state none: the independent generator's hard seed
9 drawn at 4000-6000 px, scene 0 (canon_5dmk3's 720-px photograph on a 5520-px HR frame; the generator encodes
with a pure 1/2.2 power and states nothing). Its x4's exposures are a gain apart as power 2.2, not as sRGB; its
x3 is 0.06 EV from the HR, too close to tell, and kept the assumed sRGB: the HR, which the two share, decoded two
ways, and the x3 written 0.30 LR px off the truth (0.15 with the x4's curve)."""

from __future__ import annotations

import csv

from harness import harness_scene, harness_scenes, record_truth_rms
from realsr_tools.pipeline.manifest import read_manifest
from realsr_tools.registration.curves import MIN_BEND, SMALL_BEND, SMALL_BEND_FLATTER
from realsr_tools.stages import align, align_scene


def _records(out):
    return {record["lr_source"].split("/")[-1]: record for record in read_manifest(out, stage="align").records}


def test_a_pair_whose_exposures_cannot_tell_the_curve_takes_the_one_its_scene_found(tmp_path, data_dir,
                                                                                     monkeypatch):
    root = tmp_path / "captures"
    truth = harness_scene(root, data_dir, seed=9, scene="scene_00", photo="canon_5dmk3_K6A7946_720.JPG", hard=True,
                          width=(4000, 6000))
    out = tmp_path / "aligned"
    summary = align.run_align(root, out, scales=(3, 4), show_progress=False)
    assert (summary.ok, summary.failed) == (2, 0)
    records = _records(out)
    x3, x4 = records["lr_x3.tif"], records["lr_x4.tif"]
    assert x4["registration"]["grey"]["curve_estimate"]["curve"] == "power:2.2"
    grey = x3["registration"]["grey"]
    assert grey["curve_estimate"]["curve"] is None  # its own exposures, recorded
    assert grey["scene_curve"] == {"curve": "power:2.2", "from": ["scene_00__lr_x4"]}
    assert grey["decoded_curve"] == {"lr": "power:2.2", "hr": "power:2.2"}
    assert "its scene's exposures are a gain apart as power:2.2 (scene_00__lr_x4)" in grey["curve_source"]["lr"]
    assert x3["consistency"]["verdict"] == "consistent"
    assert record_truth_rms(x3, truth) < 0.2  # measured 0.149 LR px
    # Resumed: nothing to do, the same records.
    align.run_align(root, out, scales=(3, 4), show_progress=False)
    assert _records(out) == records

    # Each pair with the curve its own exposures found, as before: the x3 stays sRGB.
    monkeypatch.setattr(align_scene, "scene_curve", lambda estimates: (None, []))
    align.run_align(root, tmp_path / "alone", scales=(3, 4), show_progress=False)
    alone = _records(tmp_path / "alone")["lr_x3.tif"]
    assert alone["registration"]["grey"]["decoded_curve"]["lr"] == "srgb"
    assert record_truth_rms(alone, truth) > 0.25  # measured 0.304 LR px


def test_a_chart_pair_whose_exposures_bend_srgb_under_min_bend_takes_the_far_flatter_curve(tmp_path, data_dir):
    """Normal seed 101's nikon_d90 chart (552-px HR frame, files a 1/2.2 power): its x3's exposures bend sRGB 0.017,
    under MIN_BEND, and the power 0.002, near the measure's floor. Kept as sRGB it was written 0.119 LR px off the
    truth (its scene 0.168 / 0.119 / 0.172 at x2 / x3 / x4); decoded as the power, 0.071 (0.090 / 0.071 / 0.054)."""
    root = tmp_path / "captures"
    truth = harness_scene(root, data_dir, seed=101, scene="scene_04", photo="nikon_d90_DSC_0011.JPG", hard=False)
    out = tmp_path / "aligned"
    summary = align.run_align(root, out, scales=(3,), show_progress=False)
    assert (summary.ok, summary.failed) == (1, 0)
    x3 = _records(out)["lr_x3.png"]
    grey = x3["registration"]["grey"]
    bend = grey["curve_estimate"]["bend"]
    assert SMALL_BEND <= bend["srgb"] < MIN_BEND and bend["power:2.2"] < SMALL_BEND_FLATTER * bend["srgb"], bend
    assert grey["curve_estimate"]["curve"] == "power:2.2"
    assert grey["decoded_curve"] == {"lr": "power:2.2", "hr": "power:2.2"}
    assert record_truth_rms(x3, truth) < 0.1


def test_a_scene_whose_pairs_cannot_tell_the_curve_takes_the_one_its_camera_found(tmp_path, data_dir):
    """Generator hard seed 115 (files BT.709, stating nothing): scene 1's canon_g2 x3 / x4 find BT.709 in their
    exposures; scene 2's nikon_d90 ColorChecker cannot tell (both curves leave its exposures within 0.01 of a gain
    apart, BT.709 the closer). The generator gives its scenes three cameras in turn; here the two are one camera's,
    as one camera's files are in a real capture run. Aligned as sRGB (the rule off) the chart's x3 / x4 were 0.148 /
    0.259 LR px off the truth; as its camera's BT.709, 0.097 / 0.078."""
    root = tmp_path / "captures"
    truth = harness_scenes(root, data_dir, seed=115, hard=True, encoding="bt709",
                           scenes={"scene_01": "canon_g2_IMG_0307.JPG", "scene_02": "nikon_d90_DSC_0011.JPG"})
    with open(root / "captures.csv", newline="") as stream:
        rows = list(csv.reader(stream))
    with open(root / "captures.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([row[:2] + ["IndepSim one camera"] if row[0] != "path" else row
                                      for row in rows])
    out = tmp_path / "aligned"
    summary = align.run_align(root, out, scales=(3, 4), show_progress=False)
    assert (summary.ok, summary.failed) == (4, 0)
    records = {record["lr_source"]: record for record in read_manifest(out, stage="align").records}
    deciders = ["scene_01__lr_x3", "scene_01__lr_x4"]
    for key in ("scene_01/lr_x3.tif", "scene_01/lr_x4.tif"):
        assert records[key]["registration"]["grey"]["curve_estimate"]["curve"] == "bt709"
    errors = {}  # LR px off the truth
    for key in ("scene_02/lr_x3.tif", "scene_02/lr_x4.tif"):
        grey = records[key]["registration"]["grey"]
        assert grey["curve_estimate"]["curve"] is None  # its own exposures, recorded
        assert grey["camera_curve"] == {"curve": "bt709", "from": deciders, "deciders": 2,
                                        "camera": "IndepSim one camera"}
        assert grey["decoded_curve"] == {"lr": "bt709", "hr": "bt709"}
        assert "2 of its camera's (IndepSim one camera) are a gain apart as bt709" in grey["curve_source"]["lr"]
        errors[key] = record_truth_rms(records[key], truth["scene_02"])
    assert errors["scene_02/lr_x3.tif"] < 0.12 and errors["scene_02/lr_x4.tif"] < 0.1, errors
    # Resumed: nothing to do, the same records.
    align.run_align(root, out, scales=(3, 4), show_progress=False)
    assert {r["lr_source"]: r for r in read_manifest(out, stage="align").records} == records
