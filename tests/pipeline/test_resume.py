"""The one seam for an output folder an earlier run left (realsr_tools.pipeline.resume): foreign folders and other
stages' outputs refused, a resume over other settings refused naming them, finished records skipped, and every
stage that writes going through it (align, crop, wash, lmdb, score)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.errors import ConfigError, OutputExistsError
from realsr_tools.pipeline.manifest import JOURNAL_HEADER_SUFFIX, JOURNAL_SUFFIX, MANIFEST_NAME, make_header, \
    read_manifest, write_manifest
from realsr_tools.pipeline.output import output_lock
from realsr_tools.pipeline.resume import prepare_stage_output

import test_output
from conftest import one_error_line

# test_output's fixtures, found here by name: two real x4 pairs, one real-photo x2 scene.
pairs = test_output.pairs
captures = test_output.captures

runner = CliRunner()


# ------------------------------------------------------------------------------------------------ the seam itself


def _earlier(out, stage="crop", params=None, records=()):
    """An earlier run's manifest in ``out`` and the files its records list."""
    for record in records:
        for key in ("lr", "hr"):
            if record.get(key):
                (out / record[key]).parent.mkdir(parents=True, exist_ok=True)
                (out / record[key]).write_bytes(b"png")
    write_manifest(out, make_header(stage, params=params or {}, path_keys=("lr", "hr")), records)


def _patch(i, size=64):
    return {"id": f"p{i}", "status": "ok", "lr": f"LR/p{i}.png", "hr": f"HR/p{i}.png", "scale": 4,
            "lr_box": [0, 0, size, size]}


def test_a_folder_with_files_no_run_of_the_stage_wrote_is_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "out"
    (out / "HR").mkdir(parents=True)
    (out / "HR" / "mine.png").write_bytes(b"mine")
    for overwrite in (False, True):
        with output_lock(out), pytest.raises(OutputExistsError, match="HR/ already hold.* no realsr crop run wrote"):
            prepare_stage_output(out, "crop", owned=("HR", "LR"), overwrite=overwrite)
    assert (out / "HR" / "mine.png").read_bytes() == b"mine"
    with output_lock(out):  # files outside the stage's own folders are not its business
        assert prepare_stage_output(out, "crop", owned=("LR",)).done == {}


def test_another_stages_output_is_refused_and_the_source_is_never_the_output(tmp_path):
    out = tmp_path / "out"
    _earlier(out, "align")
    with output_lock(out), pytest.raises(OutputExistsError, match="output of a realsr align run, not crop"):
        prepare_stage_output(out, "crop", overwrite=True)
    assert (out / MANIFEST_NAME).is_file()
    with output_lock(out), pytest.raises(ConfigError, match="output folder is the source folder"):
        prepare_stage_output(out, "crop", source=out)
    with output_lock(out / "sub"), pytest.raises(ConfigError, match="must lie outside the capture folder"):
        prepare_stage_output(out / "sub", "align", source=out, inside_source=False, source_name="capture folder")


def test_a_resume_over_other_settings_is_refused_naming_each_one(tmp_path):
    out = tmp_path / "out"
    _earlier(out, params={"scale": 4, "size": 64, "step": 64}, records=[_patch(1)])
    with output_lock(out), pytest.raises(OutputExistsError) as refused:
        prepare_stage_output(out, "crop", params={"scale": 4, "size": 32, "step": 16}, output_keys=("lr", "hr"))
    assert str(refused.value) == (f"{out}: an earlier crop run here used other settings (size 64 -> 32, step 64 -> "
                                  "16); pass --overwrite to redo it or pick another --out")
    # A killed run leaves only its journal (no header): the records' own settings are compared instead.
    manifest = out / MANIFEST_NAME
    (out / (MANIFEST_NAME + JOURNAL_SUFFIX)).write_text("".join(manifest.read_text().splitlines(True)[1:]))
    manifest.unlink()
    with output_lock(out), pytest.raises(OutputExistsError, match=r"\(size 64 -> 32\)"):
        prepare_stage_output(out, "crop", params={"scale": 4, "size": 32}, output_keys=("lr", "hr"),
                             record_params=lambda r: {"scale": r["scale"], "size": r["lr_box"][2]})
    # Another source folder is another dataset.
    _earlier(out, params={"size": 64}, records=[_patch(1)])
    header = json.loads(manifest.read_text().splitlines()[0]) | {"source": str(tmp_path / "a")}
    manifest.write_text("\n".join([json.dumps(header), *manifest.read_text().splitlines()[1:]]) + "\n")
    with output_lock(out), pytest.raises(OutputExistsError, match="source .*a -> .*b"):
        prepare_stage_output(out, "crop", params={"size": 64}, source=tmp_path / "b")


def test_resume_returns_finished_records_whose_files_exist_and_removes_partial_files(tmp_path):
    out = tmp_path / "out"
    failed = {"id": "p3", "status": "failed", "lr": None, "hr": None}
    _earlier(out, params={"size": 64}, records=[_patch(1), _patch(2), failed])
    (out / "LR" / "p2.png").unlink()
    partial = out / "HR" / ".p2.x1y2z3.partial.png"
    partial.write_bytes(b"half")
    with output_lock(out):
        prepared = prepare_stage_output(out, "crop", params={"size": 64}, output_keys=("lr", "hr"))
    assert sorted(prepared.done) == ["p1"]  # p2 lost a file, p3 failed: both are redone
    assert not partial.exists()


def test_overwrite_deletes_only_what_the_earlier_run_listed(tmp_path):
    out = tmp_path / "out"
    _earlier(out, params={"size": 64}, records=[_patch(1)])
    (out / "HR" / "added-later.png").write_bytes(b"mine")
    (out / "db.lmdb").mkdir()
    (out / "db.lmdb" / "data.mdb").write_bytes(b"db")
    with output_lock(out):
        prepared = prepare_stage_output(out, "crop", params={"size": 32}, output_keys=("lr", "hr"),
                                        clear=("db.lmdb",), overwrite=True)
    assert prepared.done == {} and not (out / MANIFEST_NAME).exists() and not (out / "db.lmdb").exists()
    assert not (out / "HR" / "p1.png").exists() and not (out / "LR" / "p1.png").exists()
    assert (out / "HR" / "added-later.png").read_bytes() == b"mine"


def test_replace_clears_only_when_the_stage_starts_writing_and_refuse_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    _earlier(out, "wash", records=[_patch(1)])
    with output_lock(out):
        prepared = prepare_stage_output(out, "wash", policy="replace", owned=("HR", "LR"), clear=("HR", "LR"))
        assert (out / MANIFEST_NAME).is_file() and (out / "HR" / "p1.png").is_file()  # kept until clear()
        prepared.clear()
    assert not (out / MANIFEST_NAME).exists() and not (out / "HR").exists()
    (out / "scores.csv").write_text("earlier")
    with output_lock(out), pytest.raises(OutputExistsError, match="scores.csv already exist.*--overwrite"):
        prepare_stage_output(out, "score", policy="refuse", files=[out / "scores.csv", out / "summary.json"])
    # score's --out may be any folder: only the temporaries of its own files go, not every '.*.partial*' below it.
    ours, other = out / ".scores.k3j9.partial.csv", out / ".notes.k3j9.partial.csv"
    nested = out / "sub" / ".scores.x.partial.csv"
    nested.parent.mkdir()
    for path in (ours, other, nested):
        path.write_text("half")
    with output_lock(out):
        prepare_stage_output(out, "score", policy="refuse", files=[out / "scores.csv"], overwrite=True)
    assert not ours.exists() and other.exists() and nested.exists()


def test_the_seam_needs_the_output_lock(tmp_path):
    with pytest.raises(RuntimeError, match="output lock"):
        prepare_stage_output(tmp_path, "crop")


# ------------------------------------------------------------------------------------------------ every stage


# stage: (command, options changed on a second run, what the second run says (None: it runs), a foreign file)
STAGES = {
    "align": (["align", "{captures}", "-j", "1"], ["--bit-depth", "16"], "bit_depth 8 -> 16", "HR/x2/mine.png"),
    "crop": (["crop", "{pairs}", "--scale", "4", "--size", "64", "-j", "1"], ["--step", "32"], "step 64 -> 32",
             "LR/mine.png"),
    "wash": (["wash", "{pairs}", "--min-psnr", "0", "-j", "1"], ["--min-psnr", "40"], None, "report/mine.txt"),
    "lmdb": (["lmdb", "{pairs}"], ["--compression", "9"], "compression 1 -> 9", "HR.lmdb/data.mdb"),
    "score": (["score", "--bicubic", "--data", "{pairs}", "--scale", "4"], ["--crop-border", "0"],
              "already exist", "scores.csv"),
}


def _run(stage, pairs, captures, out, *extra):
    command, *_ = STAGES[stage]
    args = [a.format(pairs=pairs, captures=captures) for a in command] + ["--out", str(out), *extra]
    return runner.invoke(app, ["-q", *args])


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_refuses_a_foreign_folder_and_a_changed_resume_with_one_line(stage, pairs, captures, tmp_path):
    *_, changed, says, foreign = STAGES[stage]
    mine = tmp_path / "foreign" / foreign
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    refused = _run(stage, pairs, captures, tmp_path / "foreign")
    assert refused.exit_code == 2, refused.output
    line = one_error_line(refused.output)
    assert ("already exist" if stage == "score" else f"no realsr {stage} run wrote") in line, line
    assert mine.read_bytes() == b"mine"

    out = tmp_path / "out"
    first = _run(stage, pairs, captures, out)
    assert first.exit_code == 0, first.output
    again = _run(stage, pairs, captures, out, *changed)
    if says is None:  # wash replaces an earlier wash (its cache makes trying other thresholds cheap)
        assert again.exit_code == 0, again.output
        assert read_manifest(out, stage=stage).header["params"]["min_psnr"] == 40
    else:
        assert again.exit_code == 2 and says in one_error_line(again.output) and "--overwrite" in again.output


# stage: (record key of an item's output file or None, counts of (done now, skipped) of a summary, a setting
# changed on a re-run and what the refusal says; none of these settings is carried by the records themselves)
RESUMABLE = {
    "align": ("lr", lambda s: (s.ok + s.failed, s.skipped), {"bit_depth": 16}, "bit_depth 8 -> 16"),
    "crop": ("hr", lambda s: (s.pairs_done + s.pairs_failed + s.pairs_empty, s.pairs_resumed), {"step": 32},
             "step 64 -> 32"),
    "lmdb": (None, lambda s: (s.written + s.failed, s.resumed), {"scale": 4}, "scale None -> 4"),
}


def _call(stage, pairs, captures, out, **changed):
    from realsr_tools.stages.align import run_align
    from realsr_tools.stages.crop import run_crop
    from realsr_tools.stages.lmdb_export import run_lmdb

    if stage == "align":
        return run_align(captures, out, workers=1, show_progress=False, **changed)
    if stage == "crop":
        return run_crop(pairs, out, **{"scale": 4, "size": 64, "workers": 1, "show_progress": False, **changed})
    return run_lmdb(pairs, out, show_progress=False, **changed)


@pytest.mark.parametrize("stage", list(RESUMABLE))
def test_every_stage_resumes_a_killed_run_skipping_what_it_finished(stage, pairs, captures, tmp_path):
    key, counts, changed, says = RESUMABLE[stage]
    out = tmp_path / "out"
    first = counts(_call(stage, pairs, captures, out))
    records = read_manifest(out, stage=stage).records
    items = first[0]
    assert items >= 1 and first[1] == 0
    assert sorted(p.name for p in out.glob("manifest*")) == [MANIFEST_NAME]  # journal and its header folded in
    # What kill -9 leaves: the journal and the run's header beside it, no manifest.
    manifest = out / MANIFEST_NAME
    lines = manifest.read_text().splitlines(True)
    (out / (MANIFEST_NAME + JOURNAL_SUFFIX)).write_text("".join(lines[1:]))
    (out / (MANIFEST_NAME + JOURNAL_HEADER_SUFFIX)).write_text(lines[0])
    manifest.unlink()
    with pytest.raises(OutputExistsError, match=f"other settings \\({says}\\)"):
        _call(stage, pairs, captures, out, **changed)
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert counts(_call(stage, pairs, captures, out)) == (0, items)
    assert read_manifest(out, stage=stage).records == records
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == files  # nothing rewritten
    if key is not None:  # an item whose output went missing is the one item redone
        (out / next(r[key] for r in records if r.get(key))).unlink()
        assert counts(_call(stage, pairs, captures, out)) == (1, items - 1)
        assert read_manifest(out, stage=stage).records == records
