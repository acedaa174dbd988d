from __future__ import annotations

import json

import pytest

from realsr_tools.pipeline import manifest as mf
from realsr_tools.errors import ManifestError


def _write(tmp_path, stage="align", records=(), upstream=None, path_keys=("lr", "hr")):
    header = mf.make_header(stage, params={"scale": 4}, path_keys=path_keys, upstream=upstream, out_dir=tmp_path)
    return mf.write_manifest(tmp_path, header, records)


def test_round_trip_keeps_header_records_and_order(tmp_path):
    records = [{"id": f"p{i}", "lr": f"LR/p{i}.png", "hr": f"HR/p{i}.png", "status": "ok"} for i in range(3)]
    path = _write(tmp_path, records=records)
    loaded = mf.read_manifest(tmp_path, stage="align")
    assert loaded.path == path and loaded.records == records
    header = loaded.header
    assert header["schema"] == mf.SCHEMA_VERSION and header["stage"] == "align" and header["params"] == {"scale": 4}
    assert header["tool_version"] and header["created"] and "command" in header
    assert loaded.resolve("LR/p1.png") == tmp_path / "LR" / "p1.png"


def test_upstream_hash_is_recorded_and_staleness_detected(tmp_path):
    up_dir, down_dir = tmp_path / "up", tmp_path / "down"
    upstream = _write(up_dir)
    _write(down_dir, stage="crop", upstream=upstream)
    down = mf.read_manifest(down_dir, stage="crop")
    assert down.header["upstream"] == {"path": "../up/manifest.jsonl", "sha256": mf.file_sha256(upstream)}
    mf.check_upstream(down)
    upstream.write_text(upstream.read_text() + json.dumps({"id": "late"}) + "\n")
    with pytest.raises(ManifestError, match="changed"):
        mf.check_upstream(down)


@pytest.mark.parametrize("bad_path", ["/etc/passwd", "../outside.png", "LR/../../x.png", "C:/x.png", "LR\\x.png", ""])
def test_hostile_paths_are_refused_on_read(tmp_path, bad_path):
    header = mf.make_header("align", params={}, path_keys=["lr"])
    (tmp_path / mf.MANIFEST_NAME).write_text(json.dumps(header) + "\n" + json.dumps({"id": "x", "lr": bad_path}) + "\n")
    with pytest.raises(ManifestError, match="path"):
        mf.read_manifest(tmp_path)


def test_invalid_manifests_say_what_is_wrong(tmp_path):
    path = tmp_path / mf.MANIFEST_NAME
    cases = {
        "": "empty",
        "not json\n": "not valid JSON",
        "[1, 2]\n": "JSON object",
        json.dumps({"hello": 1}) + "\n": "not a realsr manifest",
        json.dumps(mf.make_header("align", params={}) | {"schema": 99}) + "\n": "schema",
        json.dumps(mf.make_header("align", params={})) + "\n{broken\n": ":2: not valid JSON",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(ManifestError, match=message):
            mf.read_manifest(tmp_path)
    _write(tmp_path, stage="wash")
    with pytest.raises(ManifestError, match="'wash' manifest, expected 'align' or 'crop'"):
        mf.read_manifest(tmp_path, stage=("align", "crop"))
    with pytest.raises(ManifestError, match="no manifest"):
        mf.read_manifest(tmp_path / "nowhere")


def test_writer_journals_and_resume_sees_only_finished_outputs(tmp_path):
    header = mf.make_header("align", params={}, path_keys=["lr", "hr"])
    writer = mf.StageWriter(tmp_path, header)
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}_lr.png").write_bytes(b"x")
        if name != "b":
            (tmp_path / f"{name}_hr.png").write_bytes(b"x")
        writer.add({"id": name, "status": "ok", "lr": f"{name}_lr.png", "hr": f"{name}_hr.png"})
    writer.add({"id": "d", "status": "failed", "error": "no overlap", "lr": None, "hr": None})
    # Simulate a killed run: the journal exists, the manifest does not.
    assert writer.journal_path.is_file() and not (tmp_path / mf.MANIFEST_NAME).exists()
    with open(writer.journal_path, "a") as stream:
        stream.write('{"id": "e", "sta')  # a line cut short by the kill
    done = mf.completed_records(tmp_path, "align", ["lr", "hr"])
    assert sorted(done) == ["a", "c"]  # b lacks its HR file, d failed, e never finished

    resumed = mf.StageWriter(tmp_path, header, keep=mf.previous_records(tmp_path, "align"))
    resumed.add({"id": "b", "status": "ok", "lr": "b_lr.png", "hr": "b_hr.png"})
    resumed.close()
    final = mf.read_manifest(tmp_path, stage="align")
    assert [r["id"] for r in final.records] == ["a", "b", "c", "d"]
    assert not writer.journal_path.exists()


def test_writer_refuses_hostile_output_paths(tmp_path):
    writer = mf.StageWriter(tmp_path, mf.make_header("crop", params={}, path_keys=["lr"]))
    with pytest.raises(ManifestError):
        writer.add({"id": "x", "lr": "../../escape.png"})
    writer.close()


def test_relative_path_refuses_paths_outside_root(tmp_path):
    assert mf.relative_path(tmp_path / "a" / "b.png", tmp_path) == "a/b.png"
    with pytest.raises(ManifestError):
        mf.relative_path(tmp_path.parent / "x.png", tmp_path)


@pytest.mark.parametrize("bad_id, why", [("../../X", "plain file name"), ("/tmp/x", "plain file name"),
                                         ("a/b", "plain file name"), ("..", "plain file name"), ("", "plain file name"),
                                         (7, "plain file name"), ("dup", "more than once")])
def test_record_ids_must_be_unique_plain_file_names(tmp_path, bad_id, why):
    # issue 12 case 2: ids become file names (HR/<id>.png), so a manifest must not be able to name a path with them.
    records = [{"id": "dup", "lr": "LR/a.png", "hr": "HR/a.png"}, {"id": bad_id, "lr": "LR/b.png", "hr": "HR/b.png"}]
    mf.write_manifest(tmp_path, mf.make_header("crop", params={}, path_keys=("lr", "hr")), records)
    with pytest.raises(ManifestError, match=why) as caught:
        mf.read_manifest(tmp_path)
    assert str(tmp_path / mf.MANIFEST_NAME) in str(caught.value) and "\n" not in str(caught.value)
