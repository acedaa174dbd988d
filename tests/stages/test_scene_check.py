"""align's scene check on the capture it was built for: the independent generator's normal seed 9, scene 7, a
nikon_d3100 ColorChecker whose x4 window holds a few flat patches. The x4 pair's own checks pass it 0.95 LR px off
the truth (texture gate, verifier: `unmeasurable`); its scene's x2 and x3 captures, registered to it directly, put
its window 0.75-0.78 LR px elsewhere."""

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
    assert not any(path.exists() for path in x4_outputs)
    for name in ("lr_x2.png", "lr_x3.png"):
        kept = records[name]
        assert kept["status"] == "ok" and kept["consistency"]["verdict"] == "consistent"
        assert record_truth_rms(kept, truth) < 0.2  # measured 0.14 and 0.11 LR px
        assert (out / kept["lr"]).exists()

    # The refused pair is retried by the next resume, written, and refused again: the same records.
    align.run_align(root, out, show_progress=False)
    assert _records(out) == records
