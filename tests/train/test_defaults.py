"""realsr train chooses defaults that fit the device, says why, reports its start-up and logs the first step."""

from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.train.config import CPU_MINUTES, CPU_STEPS, device_defaults

from browser import browser_selftest
from conftest import real_pair_folder, unwrapped

runner = CliRunner()
UNSET = {"model": None, "batch": None, "patch": None, "lr": None, "steps": None, "log_every": None,
         "max_minutes": None}


def test_device_defaults():
    cuda, why = device_defaults(cuda=True, given=UNSET)
    assert (cuda["model"], cuda["batch"], cuda["patch"], cuda["lr"]) == ("edsr", 16, 48, 2e-4)
    assert cuda["max_minutes"] is None and cuda["steps"] == 300_000 and "CUDA" in why[0]
    cpu, why = device_defaults(cuda=False, given=UNSET)
    assert (cpu["model"], cpu["batch"], cpu["patch"], cpu["lr"]) == ("edsr_small", 8, 32, 2e-3)
    assert cpu["max_minutes"] == CPU_MINUTES and cpu["steps"] == CPU_STEPS == 800
    assert any(f"--steps {CPU_STEPS} (CPU, at most" in w for w in why) and any("wall time" in w for w in why)
    timed, why = device_defaults(cuda=False, given=UNSET | {"max_minutes": 12.0})
    assert timed["max_minutes"] == 12.0 and timed["model"] == "edsr_small" and timed["steps"] == CPU_STEPS
    assert not any(w.startswith("--max-minutes") for w in why)  # the user's budget is kept, not re-announced
    counted, _ = device_defaults(cuda=False, given=UNSET | {"steps": 50})
    assert counted["steps"] == 50 and counted["max_minutes"] is None
    reference, _ = device_defaults(cuda=False, given=UNSET | {"model": "edsr", "batch": 4})
    assert (reference["model"], reference["batch"], reference["patch"], reference["lr"]) == ("edsr", 4, 48, 2e-4)
    assert reference["steps"] == 300_000 and reference["max_minutes"] == CPU_MINUTES  # its own recipe, time-bound
    own_steps, why = device_defaults(cuda=False, given=UNSET | {"steps": 5000, "max_minutes": 12.0})
    assert own_steps["steps"] == 5000 and not any("--steps" in w for w in why)  # the user's steps win


def test_cli_says_what_it_chose_reports_start_up_and_logs_the_first_step(tmp_path, data_dir, one_torch_thread):
    pairs = real_pair_folder(tmp_path / "pairs", data_dir, ["Canon_004_LR4.png", "Canon_033_LR4.png",
                                                            "Nikon_017_LR4.png"], copy=False)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(pairs), "--out", str(out), "--steps", "3", "--device", "cpu",
                                 "--val-fraction", "0.34"])
    assert result.exit_code == 0, result.output
    text = unwrapped(result.output)
    assert "default: --model edsr_small, --batch 8, --patch 32, --lr 0.002, --log-every 10 (CPU:" in text
    for phase in ("reading and decoding the pairs", "2 training and 1 validation pairs at x4",
                  "model edsr_small", "validating bicubic and the untrained model", "plan: 3 steps"):
        assert phase in text, phase
    quiet = runner.invoke(app, ["-q", "train", str(pairs), "--out", str(tmp_path / "quiet"), "--steps", "1",
                                "--device", "cpu", "--val-fraction", "0.34"])
    assert quiet.exit_code == 0 and "reading and decoding" not in quiet.output  # --quiet: no start-up chatter
    assert "defaults chosen" in quiet.output and "edsr_small" in quiet.output  # the summary still says
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [e for e in events if e["kind"] == "train"]
    assert train[0]["step"] == 1 and math.isfinite(train[0]["loss"])
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == 2e-3
    # realsr report on a run folder: configuration and every logged event, checked in the browser.
    result = runner.invoke(app, ["-q", "report", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report" / "index.html").read_text()
    assert "edsr_small" in page and 'data-id="train-1"' in page and 'src="curve.png"' in page
    verdict, console = browser_selftest(out / "report" / "index.html")
    assert verdict.startswith("PASS") and "sorted column step" in verdict and console == [], verdict


def test_cpu_training_keeps_the_faster_thread_count():
    import torch

    from realsr_tools.train.loop import _pick_threads

    said = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _pick_threads(3.0, said.append, lambda: 0.5) == 0.5 and torch.get_num_threads() == 1
        assert "one intra-op thread" in said[-1]
        torch.set_num_threads(2)
        assert _pick_threads(1.0, said.append, lambda: 2.0) == 1.0 and torch.get_num_threads() == 2
        assert "keeping 2" in said[-1]
    finally:
        torch.set_num_threads(before)
