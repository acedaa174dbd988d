"""The independent harness's visible-error measure (benchmarks/independent/bench_generalise.py), on a real photograph.

The measure weights a residual displacement field by where the content can show it; these checks pin what that
means: a displacement along an edge, or inside a flat area, counts nothing, one across edges counts in full.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from conftest import PROJECT

sys.path.insert(0, str(PROJECT / "benchmarks" / "independent"))
from bench_generalise import recorded_map, visible_error  # noqa: E402
from realsr_tools.geometry import FIFTH_ORDER, RadialDistortion, map_lr_to_hr, radial_term  # noqa: E402


@pytest.fixture(scope="module")
def photo_row(data_dir):
    """One row of a real photograph, as grey in [0, 1]."""
    image = cv2.imread(str(data_dir / "photos" / "exif_samples_28-hex_value.jpg"), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    return image[image.shape[0] // 2, :480].astype(np.float32) / 255


def constant(dx: float, dy: float):
    return lambda x, y: np.tile([dx, dy], (np.size(x), 1))


@pytest.mark.parametrize("r", [1, 3])
def test_displacement_along_edges_is_invisible_and_across_them_counts_in_full(photo_row, r):
    # The row repeated down the image: every edge is vertical, so only x displacements change a pixel.
    stripes = np.repeat(np.repeat(photo_row[None, :], 96 * r, axis=0), r, axis=1)
    across = visible_error(stripes, r, constant(0.3, 0.0))
    along = visible_error(stripes, r, constant(0.0, 0.8))
    assert across["rms"] == pytest.approx(0.3, abs=1e-6)
    assert across["p95"] == pytest.approx(0.3, abs=1e-6)
    assert along["rms"] < 1e-6


def test_a_displacement_in_a_flat_area_is_invisible(photo_row):
    # Stripes in the left half, a flat grey right half displaced by 2 px: the error is the left half's 0.1 px.
    image = np.repeat(photo_row[None, :], 96, axis=0)
    image[:, 240:] = 0.5
    field = lambda x, y: np.column_stack([np.where(np.asarray(x) < 248, 0.1, 2.0), np.zeros(np.size(x))])  # noqa: E731
    assert visible_error(image, 1, field)["rms"] == pytest.approx(0.1, abs=0.02)
    assert visible_error(image, 1, constant(0.0, 0.0))["rms"] == 0.0


def test_a_model_familys_floor_is_zero_only_for_mappings_it_can_represent():
    """model_floors.py: the least-squares floor of each family over a window, on mappings of known form."""
    from model_floors import family_floor

    gy, gx = np.mgrid[100:240:2, 50:250:2].astype(np.float64)
    points = np.column_stack([gx.ravel(), gy.ravel()])

    def through(h):
        p = np.column_stack([points, np.ones(len(points))]) @ np.asarray(h, np.float64).T
        return p[:, :2] / p[:, 2:]

    similarity = [[2.9, -0.05, 10.0], [0.05, 2.9, -20.0], [0, 0, 1]]
    affine = [[2.9, 0.02, 10.0], [-0.03, 2.95, -20.0], [0, 0, 1]]
    homography = [[2.9, 0.0, 10.0], [0.0, 2.9, -20.0], [2e-5, 1.5e-5, 1]]
    floors = {name: {f: family_floor(points, through(h), f) for f in ("similarity", "affine", "homography")}
              for name, h in (("similarity", similarity), ("affine", affine), ("homography", homography))}
    assert max(floors["similarity"].values()) < 1e-6
    assert floors["affine"]["similarity"] > 0.5 and max(floors["affine"]["affine"], floors["affine"]["homography"]) < 1e-6
    assert min(floors["homography"]["similarity"], floors["homography"]["affine"]) > 0.05
    assert floors["homography"]["homography"] < 1e-6


def test_the_radial_floor_is_zero_for_realsrs_radial_form_and_not_for_a_wave():
    """model_floors.radial_floor: radial terms about the documented centres, then a homography."""
    from model_floors import radial_floor

    lr_size, hr_size = (400, 300), (800, 600)
    gy, gx = np.mgrid[20:280:4, 30:370:4].astype(np.float64)
    points = np.column_stack([gx.ravel(), gy.ravel()])
    homography = np.array([[2.0, 0.01, 5.0], [-0.01, 2.0, -3.0], [1e-5, 0.0, 1.0]])

    def mapped(k_lr, k_hr, centre_offset=(0.0, 0.0)):
        lr_centre = np.array([(lr_size[0] - 1) / 2, (lr_size[1] - 1) / 2]) + centre_offset
        inverse = np.linalg.inv(homography)
        hr_centre = inverse @ [(hr_size[0] - 1) / 2, (hr_size[1] - 1) / 2, 1.0]
        hr_centre = hr_centre[:2] / hr_centre[2]
        bent = points.copy()
        for k, centre, radius in ((k_lr, lr_centre, np.hypot(*lr_size) / 2),
                                  (k_hr, hr_centre, np.hypot(*hr_size) / 2 / 2.0)):
            d = points - centre
            bent += k * d * np.sum(d * d, axis=1, keepdims=True) / radius**2
        out = np.column_stack([bent, np.ones(len(bent))]) @ homography.T
        return out[:, :2] / out[:, 2:]

    # HR px; measured when written: 1e-5 (the HR term's centre is taken from the starting homography), 0.080, 0.70
    assert radial_floor(points, mapped(-0.02, 0.015), lr_size, hr_size) < 1e-3
    # a lens centred 2 % of the frame off: not exact, but within reach (the generator's sets: <= 0.07 LR px)
    assert 1e-3 < radial_floor(points, mapped(-0.03, 0.0, (8.0, 6.0)), lr_size, hr_size) < 0.15
    wave = mapped(0.0, 0.0) + np.column_stack([np.sin(points[:, 1] / 15.0), np.zeros(len(points))])
    assert radial_floor(points, wave, lr_size, hr_size) > 0.3


def test_an_error_field_is_taken_apart_into_shift_magnification_roll_and_the_rest():
    """error_field.decompose: known parts come back, and what no affine field holds is what is left."""
    from error_field import decompose

    window = (40, 30, 200, 120)
    gy, gx = np.mgrid[30:150:4, 40:240:4].astype(np.float64)
    x, y = gx.ravel(), gy.ravel()
    u, v = (x - 140) / 100, (y - 90) / 100  # the window's coordinates in half widths
    field = np.column_stack([0.05 + 0.2 * u - 0.1 * v, -0.03 + 0.1 * u + 0.2 * v])  # magnification 0.2, roll 0.1
    parts = decompose(field, x, y, window)
    assert parts["shift"] == pytest.approx(np.hypot(0.05, 0.03), abs=1e-9)
    assert parts["magnification"] == pytest.approx(0.2, abs=1e-9)
    assert parts["roll"] == pytest.approx(0.1, abs=1e-9)
    assert parts["beyond_affine"] < 1e-9
    bent = field + np.column_stack([0.1 * u**3, np.zeros_like(u)])
    assert decompose(bent, x, y, window)["beyond_affine"] > 0.01


def test_identifiability_bound_matches_the_spread_of_an_efficient_estimator():
    # identifiability.py's Fisher sum against a Monte Carlo of Lucas-Kanade on a noise-free template: a bound that
    # is the estimator's spread, not a number of the right order only.
    from identifiability import validate

    report = validate(draws=120)
    assert report["mean_estimate"] == pytest.approx(report["shift"], abs=0.003)
    assert all(0.8 <= r <= 1.25 for r in report["ratio"]), report


def test_identifiability_bound_sees_one_directional_structure_as_unpinned(photo_row):
    # Vertical edges only (a real photograph's row repeated): x is pinned to a fraction of a pixel, y only by the
    # flat prior of FLAT_PRIOR_PX.
    from identifiability import FLAT_PRIOR_PX, information

    stripes = np.repeat(photo_row[None, :], 96, axis=0) ** 2.2
    image = np.repeat(stripes[..., None], 3, axis=2)
    window = [8, 8, 400, 80]
    fisher = information(image, window, [], [], lambda v: np.full(v.shape, 1e-4))
    keep = [0, 1, *range(8, 14)]  # translation, gains, offsets
    posterior = fisher[np.ix_(keep, keep)] + np.diag([FLAT_PRIOR_PX ** -2] * 2 + [0] * 6)
    sd_x, sd_y = np.sqrt(np.diag(np.linalg.inv(posterior))[:2])
    assert sd_x < 0.01
    assert sd_y == pytest.approx(FLAT_PRIOR_PX, rel=1e-3)


def test_the_harness_reads_a_written_mapping_with_its_fifth_order_term_as_realsr_maps_it():
    """The cross-check (and the measure of a pair whose window cannot be located) reads the manifest's mapping by the
    documented convention; until session 40 it read a fifth-order term as a third-order one (a 4608-px x2 written
    0.012 LR px off the truth read 0.140)."""
    distortion = RadialDistortion((radial_term(-0.02, (1279.5, 959.5, 1600.0)),
                                   radial_term(0.015, (1250.0, 990.0, 700.0)),
                                   radial_term(0.004, (1250.0, 990.0, 700.0), FIFTH_ORDER)))
    lr_to_hr = np.array([[2.01, 0.01, -1250.0], [-0.01, 2.01, -950.0], [1e-7, -2e-7, 1.0]])
    record = {"lr_to_hr": lr_to_hr.tolist(), "distortion": distortion.to_dict()}
    x, y = np.meshgrid(np.linspace(700, 1800, 12), np.linspace(500, 1400, 9))
    points = np.column_stack([x.ravel(), y.ravel()])
    read = np.column_stack(recorded_map(record, points[:, 0], points[:, 1]))
    assert np.max(np.abs(read - map_lr_to_hr(lr_to_hr, distortion, points))) < 1e-3


def test_pooled_sets_share_one_denominator_and_real_pairs_never_pool_with_simulated_ones(tmp_path):
    import json

    import unified

    def pair(status, error):
        return {"status": status, "error_rms": error, "estimator": {"verdict": "unmeasurable", "median": None}}

    first, second, real = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "real.json"
    first.write_text(json.dumps({"hard": {"pairs": [pair("ok", 0.02), pair("ok", 0.3)]}}))
    second.write_text(json.dumps({"hard": {"pairs": [pair("ok", 0.05), pair("failed", None), pair("ok", 0.6)]}}))
    real.write_text(json.dumps({"pairs": [{"before": {"verdict": "measurable", "median": 0.1}, "status": "ok",
                                           "after": {"verdict": "measurable", "median": 0.2}}]}))

    (row,) = unified.rows_of("two seeds", f"{first},{second}")
    cells = dict(zip(unified.HEADER, row))
    assert cells["pairs"] == 5 and cells["refused"] == 1 and cells["ok > 0.5 px"] == 1
    assert cells["<= 0.1 px"] == "40 % (2)" and cells["<= 0.25 px"] == "40 % (2)"
    assert cells["truth RMS median"] == "0.300"  # the refusal counts as infinitely wrong
    assert cells["largest ok"] == "0.600"
    with pytest.raises(SystemExit, match="cannot share a row"):
        unified.rows_of("mixed", f"{first},{real}")


def test_the_generator_writes_the_same_light_under_each_file_curve(tmp_path, data_dir, monkeypatch):
    """``--encoding`` changes the file curve and nothing else: the same seed draws the same scene, and the values
    each curve writes are one light (within 8-bit rounding); the curves are their standards' (sRGB's and BT.709's
    published values at 18 % grey and their breakpoints), and the default is the 1/2.2 power of every earlier set."""
    import json

    import generator as G

    monkeypatch.setattr(G, "DATA", data_dir)
    grey = np.array([0.18])
    assert G.ENCODINGS["srgb"](grey)[0] == pytest.approx(0.46135, abs=1e-4)
    assert G.ENCODINGS["bt709"](grey)[0] == pytest.approx(0.40901, abs=1e-4)
    assert G.ENCODINGS["power:2.2"](grey)[0] == pytest.approx(0.18 ** (1 / 2.2))
    for name, knee in (("srgb", 0.0031308), ("bt709", 0.018)):  # continuous at the linear segment's end, to
        below, above = G.ENCODINGS[name](np.array([knee - 1e-9, knee + 1e-9]))  # the standards' rounded constants
        assert abs(above - below) < 5e-4

    written = {}
    for name in ("power:2.2", "srgb", "bt709"):
        out = tmp_path / name.replace(":", "_")
        G.generate(out, n_scenes=1, seed=7, width=(320, 360), photos=["photos/kodak_kodim03.png"], verbose=False,
                   encoding=name)
        truth = json.loads((tmp_path / (out.name + ".truth.json")).read_text())
        assert truth["encoding"] == name
        written[name] = (cv2.imread(str(out / "scene_00" / "lr_x2.png"))[..., ::-1] / 255.0, truth["scenes"])
    assert written["srgb"][1] == written["power:2.2"][1] == written["bt709"][1]  # the same draws
    light = np.clip(written["power:2.2"][0], 0, 1) ** 2.2
    bright = light > 0.01  # where 8-bit steps of the power are fine enough to carry the light across
    for name, apart in (("srgb", 4), ("bt709", 15)):  # the curves' largest gap to the power there: 6 and 21 steps
        again = G.ENCODINGS[name](light)
        assert np.max(np.abs(again - written[name][0])[bright]) < 2 / 255
        assert np.max(np.abs(written[name][0] - written["power:2.2"][0])[bright]) > apart / 255


def test_the_judge_floor_moves_a_published_pair_by_its_draw_and_counts_over_one_denominator(data_dir):
    """real_pairs_judge_floor: a zero draw leaves the estimator's reading as it was; a large drawn shift reads as
    about that shift; the counts take only the pairs measurable before and after."""
    import real_pairs_judge_floor as F

    folder = data_dir / "pairs" / "realsr_x4"
    row = F.measure_pair((0, "realsr_x4/Canon_002_LR4.png", folder / "LR" / "Canon_002_LR4.png",
                          folder / "HR" / "Canon_002_LR4.png", [0.0, 2.0], 1, 0))
    before = row["before"]["median"]
    assert row["before"]["verdict"] == "measurable"
    assert row["after"]["0.0"][0]["median"] == pytest.approx(before, abs=1e-9)
    (moved,) = row["after"]["2.0"]  # a shift of 0.36 px (the draw of seed 0)
    assert abs(moved["median"] - np.hypot(*moved["shift"])) < before + 0.05  # |d0 + shift| within |d0|

    def pair(name, before, *after):
        return {"name": name, "before": {"verdict": "measurable" if before is not None else "unmeasurable",
                                         "median": before},
                "after": {"0.03": [{"verdict": "measurable" if a is not None else "unmeasurable", "median": a}
                                   for a in after]}}
    rows = [pair("a", 0.04, 0.10, 0.05), pair("b", 0.10, 0.04, 0.30), pair("c", None, 0.5, 0.5),
            pair("d", 0.05, None, 0.20)]
    (cells,) = F.summarise(rows, "every pair")
    assert cells[3] == "2-3"  # measurable before and after: a, b in draw 1 (d unmeasurable after); a, b, d in 2
    assert cells[4] == "1.5 (1-2)"  # worse by > 0.05: a (+0.06) in draw 1; b (+0.20) and d (+0.15) in draw 2
    assert cells[5] == "0.5 (0-1)"  # better: b (-0.06) in draw 1
