"""examples/: the quick ones run; the shell scripts parse; the BasicSR option file reads realsr's LMDB export."""

from __future__ import annotations

import subprocess
import sys

import yaml

from realsr_tools.imaging import read_pixels
from realsr_tools.models import model_options
from realsr_tools.stages.lmdb_export import run_lmdb

from conftest import PROJECT, real_pair_folder

EXAMPLES = PROJECT / "examples"


def test_one_pair_api_example_registers_and_warps(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(EXAMPLES / "one_pair_api.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT)
    assert done.returncode == 0, done.stderr
    values = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert float(values["residual_shift_lr_px"]) < 0.1 and float(values["correlation"]) > 0.99
    assert values["verdict"] == "aligned" and float(values["verified_p95_lr_px"]) < 0.25
    lr, hr = read_pixels(out / "LR" / "f50.png"), read_pixels(out / "HR" / "f50.png")
    assert hr.shape[:2] == (2 * lr.shape[0], 2 * lr.shape[1])


def test_shell_examples_parse():
    for script in ("pipeline.sh", "slurm_dask.sbatch"):
        done = subprocess.run(["bash", "-n", str(EXAMPLES / script)], capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)


def test_basicsr_option_file_reads_realsr_lmdb_output(tmp_path, data_dir):
    options = yaml.safe_load((EXAMPLES / "basicsr_train_lmdb.yml").read_text())
    train = options["datasets"]["train"]
    assert train["type"] == "PairedImageDataset" and train["io_backend"]["type"] == "lmdb"
    # Export where the option file looks (paths are relative to BasicSR's working folder) and check BasicSR's
    # rules hold there: both roots end in .lmdb, their meta_info keys are the same set.
    pairs = real_pair_folder(tmp_path / "pairs", data_dir, ["Canon_004_LR4.png", "Nikon_017_LR4.png"], copy=False)
    gt, lq = tmp_path / train["dataroot_gt"], tmp_path / train["dataroot_lq"]
    assert gt.parent == lq.parent and gt.name.endswith(".lmdb") and lq.name.endswith(".lmdb")
    run_lmdb(pairs, gt.parent, show_progress=False)
    keys = [{line.split(".")[0] for line in open(folder / "meta_info.txt")} for folder in (gt, lq)]
    assert keys[0] == keys[1] == {"Canon_004_LR4", "Nikon_017_LR4"}
    # The network is one realsr loads from BasicSR checkpoints, and validation uses realsr score's protocol.
    net = options["network_g"]
    assert net["type"] == "EDSR" and net["upscale"] == options["scale"] == 4
    defaults = model_options("basicsr_edsr")
    assert (net["num_feat"], net["num_block"], net["res_scale"]) == (defaults["num_feat"], defaults["num_block"],
                                                                     defaults["res_scale"])
    metrics = options["val"]["metrics"]
    assert metrics["psnr"]["crop_border"] == options["scale"] and not metrics["psnr"]["test_y_channel"]
