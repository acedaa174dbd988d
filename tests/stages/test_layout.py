"""One folder convention: align writes BasicSR's HR/ and LR/ like crop and wash; old lr/ hr/ manifests still read."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.pipeline.manifest import make_header, read_manifest, write_manifest
from realsr_tools.pipeline.pairs import open_pairs
from realsr_tools.simulate import make_capture_folder
from realsr_tools.stages.crop import run_crop

runner = CliRunner()


def test_align_writes_upper_case_hr_lr_folders(tmp_path, data_dir):
    make_capture_folder([data_dir / "photos" / "exif_samples_35-empty.jpg"], tmp_path / "caps", scales=(2,), seed=2,
                        lr_size=(360, 270))
    result = runner.invoke(app, ["align", str(tmp_path / "caps"), "--out", str(tmp_path / "out"), "--scales", "2",
                                 "--quiet"])  # --quiet after the subcommand is accepted too
    assert result.exit_code == 0, result.output
    record = read_manifest(tmp_path / "out", stage="align").records[0]
    assert record["hr"].startswith("HR/x2/") and record["lr"].startswith("LR/x2/")
    assert (tmp_path / "out" / record["hr"]).is_file() and not (tmp_path / "out" / "hr").exists()


def test_manifest_of_the_old_lower_case_layout_still_reads(tmp_path, data_dir):
    out = tmp_path / "old_align"
    name = "Canon_004_LR4.png"
    for side, old in (("HR", "hr"), ("LR", "lr")):
        (out / old / "x4").mkdir(parents=True)
        shutil.copy(data_dir / "pairs" / "realsr_x4" / side / name, out / old / "x4" / name)
    record = {"id": "Canon_004_LR4", "status": "ok", "scale": 4, "lr": f"lr/x4/{name}", "hr": f"hr/x4/{name}"}
    write_manifest(out, make_header("align", params={}, path_keys=("lr", "hr")), [record])
    pair = open_pairs(out).pairs[0]
    assert pair.hr == out / "hr" / "x4" / name and pair.hr.is_file()
    summary = run_crop(out, tmp_path / "crop", scale=4, size=64, workers=1, show_progress=False)
    assert summary.patches == 4 and summary.pairs_failed == 0
