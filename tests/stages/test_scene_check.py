"""align's scene check on the capture it was built for: the independent generator's normal seed 9, scene 7, a
nikon_d3100 ColorChecker whose x4 window holds a few flat patches. The x4 pair's own checks pass it 0.95 LR px off
the truth (texture gate, verifier: `unmeasurable`); its scene's x2 and x3 captures, registered to it directly, put
its window 0.75-0.78 LR px elsewhere. And normal seed 30's scene 1, the same chart, whose x3 its own search matches
20 LR px off (another patch), registered again from where its x4 puts it."""

from __future__ import annotations

import pytest

from harness import harness_scene, record_truth_rms
from realsr_tools.pipeline.manifest import read_manifest
from realsr_tools.registration.consistency import MAX_DISAGREEMENT
from realsr_tools.stages import align


@pytest.fixture(scope="module")
def chart_scene(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("seed9") / "captures"
    return root, harness_scene(root, data_dir, seed=9, scene="scene_07", photo="nikon_d3100_DSC_0008.JPG", hard=False)


def _records(out):
    return {record["lr_source"].split("/")[-1]: record for record in read_manifest(out, stage="align").records}


def test_a_pair_its_own_checks_pass_far_off_is_refused_by_its_scene_even_on_resume(tmp_path, chart_scene):
    root, truth = chart_scene
    out = tmp_path / "aligned"
    # Without the check (as a run killed before it, or --no-scene-check): every pair written, the x4 far off.
    summary = align.run_align(root, out, scene_check=False, show_progress=False)
    assert (summary.ok, summary.failed) == (3, 0)
    records = _records(out)
    assert all(record["consistency"] is None for record in records.values())
    assert record_truth_rms(records["lr_x4.png"], truth) > 0.5  # measured 0.95 LR px
    assert (out / records["lr_x4.png"]["lr"]).exists()

    # The resumed run checks the scene its pairs were written without: the x4 is refused and its outputs removed.
    x4_outputs = [out / records["lr_x4.png"][key] for key in ("lr", "hr")]
    summary = align.run_align(root, out, show_progress=False)
    assert (summary.ok, summary.failed, summary.skipped) == (0, 1, 2)
    records = _records(out)
    refused = records["lr_x4.png"]
    assert refused["status"] == "failed" and refused["lr"] is None and refused["hr"] is None
    assert refused["error"].startswith("inconsistent with its scene's other captures")
    assert refused["consistency"]["verdict"] == "inconsistent"
    assert all(c["median"] > MAX_DISAGREEMENT for c in refused["consistency"]["comparisons"])
    # Registered again from where its x3 puts it, its own window pulls the fit back to the same optimum.
    assert refused["consistency"]["realigned"]["from"] == "scene_07__lr_x3"
    assert refused["consistency"]["realigned"]["outcome"].startswith("still disagrees")
    assert "registered again from where scene_07__lr_x3 puts it: still disagrees" in refused["error"]
    assert not any(path.exists() for path in x4_outputs)
    for name in ("lr_x2.png", "lr_x3.png"):
        kept = records[name]
        assert kept["status"] == "ok" and kept["consistency"]["verdict"] == "consistent"
        assert record_truth_rms(kept, truth) < 0.2  # measured 0.14 and 0.11 LR px
        assert (out / kept["lr"]).exists()

    # The refused pair is retried by the next resume, written, and refused again: the same records.
    align.run_align(root, out, show_progress=False)
    assert _records(out) == records


def test_a_chart_matched_to_another_patch_is_registered_again_where_its_scene_puts_it(tmp_path, data_dir):
    root = tmp_path / "captures"
    truth = harness_scene(root, data_dir, seed=30, scene="scene_01", photo="nikon_d3100_DSC_0008.JPG", hard=False)
    out = tmp_path / "aligned"
    # Without the check (a run killed before it): the x3's own search takes another patch of the chart.
    assert align.run_align(root, out, scene_check=False, show_progress=False).ok == 3
    wrong = _records(out)["lr_x3.png"]
    assert wrong["status"] == "ok" and record_truth_rms(wrong, truth) > 5  # measured 20 LR px

    # The resumed run's check: the x4 and x2 agree with each other and put the x3's window 20-25 px elsewhere; it
    # is registered again from where the x4 puts it, agrees with both, and its record and outputs are replaced.
    summary = align.run_align(root, out, show_progress=False)
    assert (summary.ok, summary.failed, summary.skipped) == (0, 0, 3)
    records = _records(out)
    realigned = records["lr_x3.png"]
    assert realigned["status"] == "ok" and realigned["registration"]["coarse"] == "scene"
    note = realigned["consistency"]["realigned"]
    assert note["from"] == "scene_01__lr_x4" and min(note["before"].values()) > 10
    assert note["outcome"].startswith("agrees") and realigned["consistency"]["verdict"] == "consistent"
    assert all(c["median"] <= MAX_DISAGREEMENT for c in realigned["consistency"]["comparisons"])
    assert record_truth_rms(realigned, truth) < 0.1  # measured 0.018 LR px
    assert (out / realigned["lr"]).exists() and (out / realigned["hr"]).exists()
    for name in ("lr_x2.png", "lr_x4.png"):
        assert records[name]["status"] == "ok" and record_truth_rms(records[name], truth) < 0.1

    # Resumed once more: nothing to do, the same records.
    align.run_align(root, out, show_progress=False)
    assert _records(out) == records


def test_a_pair_above_the_texture_gate_is_kept_only_when_its_scene_confirms_it(tmp_path, chart_scene, monkeypatch):
    """With the gate at 0.28 LR px the x3 (corner uncertainty 0.34, 0.11 px off the truth) and the x4 (0.49, 0.95 px
    off) are above it and written provisionally; the x2 (0.18) passes it and judges them: it confirms the x3 and
    contradicts the x4."""
    root, truth = chart_scene
    out = tmp_path / "aligned"
    gate = 0.28
    # A run killed after its pairs, before the check: the provisional pairs are on disk, unconfirmed.
    monkeypatch.setattr(align, "_check_scenes", lambda runner, records, settings, show_progress: [])
    assert align.run_align(root, out, max_uncertainty=gate, show_progress=False).ok == 3
    monkeypatch.undo()
    records = _records(out)
    assert [records[n]["registration"]["needs_confirmation"] for n in ("lr_x2.png", "lr_x3.png", "lr_x4.png")] == [
        False, True, True]
    provisional = [out / records[n][key] for n in ("lr_x3.png", "lr_x4.png") for key in ("lr", "hr")]

    # Resumed without the check, the gate alone decides: both refused for too little texture, their outputs removed.
    summary = align.run_align(root, out, max_uncertainty=gate, scene_check=False, show_progress=False)
    assert (summary.ok, summary.failed, summary.skipped) == (0, 2, 1)
    records = _records(out)
    for name in ("lr_x3.png", "lr_x4.png"):
        assert records[name]["status"] == "failed" and "too little texture" in records[name]["error"]
        assert "provisionally" in records[name]["error"]
    assert not any(path.exists() for path in provisional) and records["lr_x2.png"]["status"] == "ok"

    # Resumed with the check: both aligned again, provisionally; the x2 confirms the x3 and contradicts the x4.
    summary = align.run_align(root, out, max_uncertainty=gate, show_progress=False)
    assert (summary.ok, summary.failed, summary.skipped) == (1, 1, 1)
    records = _records(out)
    confirmed, refused = records["lr_x3.png"], records["lr_x4.png"]
    assert confirmed["status"] == "ok" and confirmed["consistency"]["verdict"] == "consistent"
    assert record_truth_rms(confirmed, truth) < 0.2 and (out / confirmed["lr"]).exists()
    assert refused["status"] == "failed" and refused["consistency"]["verdict"] == "unconfirmed"
    assert refused["error"].startswith("too little texture in the overlap to fix the geometry: corner uncertainty "
                                       "0.49 LR px > 0.28 (flat or one-directional structure), and not confirmed by "
                                       "its scene's other captures")
    # The x2 is judged by no provisional capture: unchecked, and kept.
    assert records["lr_x2.png"]["status"] == "ok" and records["lr_x2.png"]["consistency"]["verdict"] == "unchecked"


def test_a_scene_check_lost_with_its_worker_refuses_only_the_provisional_pairs(tmp_path, monkeypatch):
    """A worker that died on every try of a scene's check: the pairs that passed the gate stay (unchecked), the
    provisional one is refused (nothing confirmed it) and its outputs removed."""
    from realsr_tools.pipeline import runner
    from realsr_tools.pipeline.runner import TaskLost

    def records(scene):
        for name, provisional in (("x2", False), ("x4", True)):
            for kind in ("LR", "HR"):
                (tmp_path / kind).mkdir(exist_ok=True)
                (tmp_path / kind / f"{scene}{name}.png").write_bytes(b"png")
            yield {"id": f"{scene}__{name}", "scene": scene, "status": "ok", "lr": f"LR/{scene}{name}.png",
                   "hr": f"HR/{scene}{name}.png", "error": None, "consistency": None,
                   "registration": {"uncertainty": 0.7 if provisional else 0.35, "needs_confirmation": provisional}}

    monkeypatch.setattr(runner, "run_items", lambda runner, fn, items, **kwargs: (
        (index, TaskLost("worker died 3 times")) for index in range(len(items))))
    settings = align.AlignSettings(tmp_path, tmp_path, preview=False, bit_depth=8, photometric=True, scene_check=True)
    checked = align._check_scenes(None, [*records("s"), *records("t")], settings, show_progress=False)
    for kept, refused in (checked[:2], checked[2:]):
        assert kept["status"] == "ok" and kept["consistency"]["verdict"] == "unchecked"
        assert (tmp_path / kept["lr"]).exists() and kept["consistency"]["error"] == "worker died 3 times"
        assert refused["status"] == "failed" and refused["consistency"]["verdict"] == "unconfirmed"
        assert "the check was lost (worker died 3 times)" in refused["error"] and "> 0.53" in refused["error"]
    assert not any((tmp_path / kind / f"{scene}x4.png").exists() for kind in ("LR", "HR") for scene in "st")
