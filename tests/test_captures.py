from __future__ import annotations

from pathlib import Path

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
    # The Canon JPEG is Adobe RGB by its EXIF (uncalibrated, R03), the Nikon's profile sRGB; the PNGs state nothing.
    assert {Path(c.path).name: c.curve for c in scenes["mixed"].captures} == {
        "canon_5dmk3_K6A7946_720.JPG": "power:2.19922", "Nikon_D70.jpg": "srgb"}
    assert {Path(c.path).name: c.primaries for c in scenes["mixed"].captures} == {
        "canon_5dmk3_K6A7946_720.JPG": "adobe-rgb", "Nikon_D70.jpg": "srgb"}
    assert any("state different encodings (power:2.19922 adobe-rgb, srgb)" in p for p in scenes["mixed"].problems)
    assert {c.curve for c in s1.captures} == {"srgb"}


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
    found = discover(capture_dir)
    scene = next(s for s in found.scenes if s.name == "Canon/scene_002")
    assert sum(p.startswith("unreadable:") for p in scene.problems) == 2
    # issue 12 case 4: either file might be the scene's longest focal length, so no capture silently becomes the HR;
    # align records each as a failed item with the reason.
    assert scene.pairs == [] and "HR capture cannot be chosen" in scene.problems[-1]
    blocked = {path: reason for _, path, reason in found.blocked}
    # The truncated JPEG still has its EXIF focal length (EXIF is at the start of the file); the empty RAW has none.
    assert set(blocked) == {"Canon/scene_002/empty.CR2"} and "focal length is unknown" in blocked[
        "Canon/scene_002/empty.CR2"]
    broken = next(c for c in scene.captures if c.path.endswith("broken.jpg"))
    assert broken.focal_mm is not None and "truncated" in broken.error


def test_an_unreadable_hr_capture_stays_the_hr(capture_dir):
    # issue 12 case 4: with the 105 mm HR unreadable, the 50 mm capture became the HR of an x2 pair.
    (capture_dir / "Canon" / "scene_001" / "f105.png").write_bytes(b"not an image")
    scene = next(s for s in discover(capture_dir).scenes if s.name == "Canon/scene_001")
    assert scene.hr == "Canon/scene_001/f105.png"
    assert sorted((p.lr, p.scale) for p in scene.pairs) == [("Canon/scene_001/f28.png", 4),
                                                             ("Canon/scene_001/f50.png", 2)]


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
