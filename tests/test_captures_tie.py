"""inspect: when captures share the longest focal length, the larger frame is the HR capture and the tie is said."""

from __future__ import annotations

import shutil

import cv2

from realsr_tools.captures import discover


def test_focal_length_tie_picks_the_larger_frame_and_reports_it(tmp_path, data_dir):
    scene = tmp_path / "scene"
    scene.mkdir()
    photo = data_dir / "photos" / "skimage_UNIS_EV0.jpg"  # 2048 x 1536
    shutil.copy(photo, scene / "a_full.jpg")
    small = cv2.resize(cv2.imread(str(photo)), (512, 384), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(scene / "z_preview.jpg"), small)  # sorts last by name: the old rule took it
    cv2.imwrite(str(scene / "wide.jpg"), small)
    (tmp_path / "captures.csv").write_text("path,focal_mm\nscene/a_full.jpg,105\nscene/z_preview.jpg,105\n"
                                           "scene/wide.jpg,28\n")
    found = discover(tmp_path).scenes[0]
    assert found.hr == "scene/a_full.jpg"
    assert [p.hr for p in found.pairs] == ["scene/a_full.jpg"]
    tie = [p for p in found.problems if "share the longest focal length" in p]
    assert len(tie) == 1 and "2048x1536" in tie[0] and "z_preview.jpg (512x384)" in tie[0]
