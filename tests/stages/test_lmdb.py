"""realsr lmdb: BasicSR's LMDB layout, read back by BasicSR's own parsing rules, pixel-exact values, resume, names."""

from __future__ import annotations

import shutil

import cv2
import lmdb
import numpy as np
import pytest
from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.errors import InputError, OutputExistsError
from realsr_tools.pipeline.manifest import read_manifest
from realsr_tools.stages.lmdb_export import key_problem, run_lmdb

from conftest import real_pair_folder

runner = CliRunner()
NAMES = ("Canon_004_LR4.png", "Nikon_017_LR4.png", "Canon_033_LR4.png")


def basicsr_keys(meta_info):
    """BasicSR's paired_paths_from_lmdb: the key is the text before the first '.' of each line."""
    with open(meta_info) as fin:
        return [line.split(".")[0] for line in fin]


def basicsr_names_and_shapes(meta_info):
    """BasicSR's meta-info convention: the name is the text before the first space, then an '(h,w,c)' tuple."""
    out = {}
    with open(meta_info) as fin:
        for line in fin:
            name, rest = line.split(" ", 1)
            shape_text, compression = rest.split()
            assert shape_text.startswith("(") and shape_text.endswith(")")
            out[name] = (tuple(int(v) for v in shape_text[1:-1].split(",")), int(compression))
    return out


def lmdb_values(folder):
    env = lmdb.open(str(folder), readonly=True, lock=False)
    with env.begin() as txn:
        values = {key.decode("ascii"): bytes(value) for key, value in txn.cursor()}
    env.close()
    return values


@pytest.fixture
def pair_folder(tmp_path, data_dir):
    return real_pair_folder(tmp_path / "pairs", data_dir, NAMES, copy=True)


def test_lmdb_values_decode_to_the_source_pixels_and_basicsr_reads_the_layout(pair_folder, tmp_path):
    out = tmp_path / "db"
    result = runner.invoke(app, ["lmdb", str(pair_folder), "--out", str(out), "--compression", "3"])
    assert result.exit_code == 0, result.output
    for side in ("HR", "LR"):
        folder = out / f"{side}.lmdb"
        assert sorted(p.name for p in folder.iterdir()) == ["data.mdb", "lock.mdb", "meta_info.txt"]
        keys = basicsr_keys(folder / "meta_info.txt")
        assert sorted(keys) == sorted(n[:-4] for n in NAMES)
        meta = basicsr_names_and_shapes(folder / "meta_info.txt")
        values = lmdb_values(folder)
        assert set(values) == set(keys)
        for name in NAMES:
            source = cv2.imread(str(pair_folder / side / name), cv2.IMREAD_UNCHANGED)
            decoded = cv2.imdecode(np.frombuffer(values[name[:-4]], np.uint8), cv2.IMREAD_UNCHANGED)
            assert values[name[:-4]][:8] == b"\x89PNG\r\n\x1a\n"
            np.testing.assert_array_equal(decoded, source)
            assert meta[name] == (source.shape, 3)
    # Same keys in both databases: BasicSR refuses the pair otherwise.
    assert set(basicsr_keys(out / "HR.lmdb" / "meta_info.txt")) == set(basicsr_keys(out / "LR.lmdb" / "meta_info.txt"))
    manifest = read_manifest(out, stage="lmdb")
    assert manifest.header["params"]["compression"] == 3
    assert {r["id"] for r in manifest.records} == {n[:-4] for n in NAMES}
    assert all(r["scale"] == 4 and r["hr_shape"] == [512, 512, 3] for r in manifest.records)


def test_lmdb_resumes_and_removes_keys_a_killed_run_left_in_one_database(pair_folder, tmp_path, data_dir):
    out = tmp_path / "db"
    first = run_lmdb(pair_folder, out, show_progress=False)
    assert (first.written, first.resumed) == (3, 0)
    # A killed run: one key committed to HR.lmdb only, never journalled.
    env = lmdb.open(str(out / "HR.lmdb"))
    with env.begin(write=True) as txn:
        txn.put(b"stray_key", b"not a png")
    env.close()
    extra = "Nikon_050_LR4.png"
    for side in ("HR", "LR"):
        shutil.copy(data_dir / "pairs" / "realsr_x4" / side / extra, pair_folder / side / extra)
    second = run_lmdb(pair_folder, out, show_progress=False)
    assert (second.written, second.resumed) == (1, 3)
    hr, lr = lmdb_values(out / "HR.lmdb"), lmdb_values(out / "LR.lmdb")
    assert set(hr) == set(lr) == {n[:-4] for n in (*NAMES, extra)}
    assert len(basicsr_keys(out / "HR.lmdb" / "meta_info.txt")) == 4
    # Other settings in the same folder need --overwrite.
    with pytest.raises(OutputExistsError, match="compression"):
        run_lmdb(pair_folder, out, compression=9, show_progress=False)
    third = run_lmdb(pair_folder, out, compression=9, overwrite=True, show_progress=False)
    assert (third.written, third.resumed) == (4, 0)


@pytest.mark.parametrize("bad", ["scene.001", "my scene", "sc\u00e8ne"])
def test_lmdb_refuses_names_basicsr_cannot_read_back(pair_folder, tmp_path, bad):
    for side in ("HR", "LR"):
        (pair_folder / side / NAMES[0]).rename(pair_folder / side / f"{bad}.png")
    out = tmp_path / "db"
    result = runner.invoke(app, ["lmdb", str(pair_folder), "--out", str(out)])
    assert result.exit_code == 2
    assert "cannot read back as LMDB keys" in result.output and bad in result.output
    assert not (out / "HR.lmdb").exists()
    assert key_problem(bad) is not None
    assert key_problem("Canon_004_LR4") is None and key_problem("a-b_c") is None
    with pytest.raises(InputError):
        run_lmdb(pair_folder, out, show_progress=False)
