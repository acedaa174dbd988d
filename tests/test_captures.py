from __future__ import annotations

import pytest

from realsr_tools.captures import discover, nominal_scale
from realsr_tools.errors import InputError


def test_scenes_pairs_and_problems(capture_dir):
    found = discover(capture_dir)
    scenes = {s.name: s for s in found.scenes}
    assert set(scenes) == {"Canon/scene_001", "Canon/scene_002", "Nikon/scene_003", "mixed", "lonely"}
    s1 = scenes["Canon/scene_001"]
    assert s1.hr == "Canon/scene_001/f105.png" and s1.camera == "Canon EOS 5D Mark III"
    assert sorted((p.lr, p.scale) for p in s1.pairs) == [("Canon/scene_001/f28.png", 4), ("Canon/scene_001/f50.png", 2)]
    assert [(p.scale, p.id) for p in scenes["Canon/scene_002"].pairs] == [(3, "Canon_scene_002__f35")]
    assert scenes["Nikon/scene_003"].pairs == [] and "2.50 is off every track" in scenes["Nikon/scene_003"].problems[0]
    assert any("mixed cameras" in p for p in scenes["mixed"].problems)
    assert scenes["mixed"].pairs == []
    assert any("no focal length" in p for p in scenes["lonely"].problems)
    assert any("only 0 usable" in p for p in scenes["lonely"].problems)
    assert all(c.focal_source == "captures.csv" for c in s1.captures)
    assert {c.focal_source for c in scenes["mixed"].captures} == {"exif"}


def test_captures_csv_overrides_exif_and_reports_missing_files(capture_dir):
    csv = capture_dir / "captures.csv"
    csv.write_text(csv.read_text() + "mixed/Nikon_D70.jpg,67.5,Canon EOS 5D Mark III\nghost/none.png,50,\n")
    found = discover(capture_dir)
    mixed = next(s for s in found.scenes if s.name == "mixed")
    assert [(p.lr, p.scale) for p in mixed.pairs] == [("mixed/Nikon_D70.jpg", 2)]  # 135 / 67.5 = 2
    assert any("ghost/none.png" in p for p in found.problems)


def test_unreadable_capture_is_a_problem_not_a_crash(capture_dir, data_dir):
    jpeg = (data_dir / "photos" / "skimage_UNIS_EV0.jpg").read_bytes()
    (capture_dir / "Canon" / "scene_002" / "broken.jpg").write_bytes(jpeg[:20000])
    (capture_dir / "Canon" / "scene_002" / "empty.CR2").touch()
    scene = next(s for s in discover(capture_dir).scenes if s.name == "Canon/scene_002")
    assert sum("unreadable" in p for p in scene.problems) == 2
    assert len(scene.pairs) == 1


@pytest.mark.parametrize("bad_csv,message", [
    ("file,focal\nx.png,3\n", "path,focal_mm"),
    ("path,focal_mm\n/abs/x.png,50\n", "relative"),
    ("path,focal_mm\n../x.png,50\n", "relative"),
    ("path,focal_mm\nx.png,fifty\n", "not a number"),
    ("path,focal_mm\nx.png,-5\n", "positive"),
])
def test_bad_captures_csv(capture_dir, bad_csv, message):
    (capture_dir / "captures.csv").write_text(bad_csv)
    with pytest.raises(InputError, match=message):
        discover(capture_dir)


def test_nominal_scale_tolerance():
    assert nominal_scale(105 / 28) == 4 and nominal_scale(105 / 50) == 2 and nominal_scale(3.0) == 3
    assert nominal_scale(2.5) is None and nominal_scale(1.5) is None and nominal_scale(5.5) is None
    assert nominal_scale(105 / 28, tracks=(2, 3)) is None
