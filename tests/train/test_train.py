from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.errors import ConfigError
from realsr_tools.imaging import read_pixels, to_float
from realsr_tools.metrics import psnr, ssim
from realsr_tools.models import create_model, load_checkpoint
from realsr_tools.train import TrainConfig, ema_decay_at, learning_rate, run_training, upscale
from realsr_tools.train.loop import _plan_steps
from realsr_tools.train.step import Prefetcher, ssim_loss, to_device

runner = CliRunner()
# A tiny but real x4 dataset: 48x48 LR centre crops of three DRealSR pairs (one held out for validation).
TINY = ["--model", "edsr_small", "--batch", "4", "--patch", "16", "--lr", "2e-4", "--val-fraction", "0.34", "--log-every", "2",
        "--val-every", "2", "--device", "cpu"]


@pytest.fixture(autouse=True, scope="module")
def one_thread(one_torch_thread):
    """Every test here runs torch with one intra-op thread (see conftest): the same in every run."""


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    pairs = data_dir / "pairs" / "drealsr_x4"
    for name in sorted(p.name for p in (pairs / "HR").iterdir())[:3]:
        lr, hr = read_pixels(pairs / "LR" / name), read_pixels(pairs / "HR" / name)
        y, x = (lr.shape[0] - 48) // 2, (lr.shape[1] - 48) // 2
        for folder, image, s in (("LR", lr, 1), ("HR", hr, 4)):
            (root / folder).mkdir(exist_ok=True)
            crop = image[s * y:s * (y + 48), s * x:s * (x + 48)]
            cv2.imwrite(str(root / folder / name), np.ascontiguousarray(crop[..., ::-1]))
    return root


def _train(source, out, *extra):
    result = runner.invoke(app, ["-q", "train", str(source), "--out", str(out), *TINY, *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def reference_run(tiny, tmp_path_factory):
    """An uninterrupted 6-step run that the resume and DDP tests must reproduce."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    _train(tiny, out, "--steps", "6")
    return out


def test_config_is_validated_before_any_work(tmp_path):
    with pytest.raises(ConfigError) as info:
        TrainConfig(source=tmp_path, out=tmp_path, scale=5, steps=0, lr=-1, ema_decay=1.0, val_fraction=1.0,
                    max_minutes=0, resume=True, overwrite=True, lr_sharpness=-0.5)
    for part in ("--scale must be 2, 3 or 4", "--steps must be at least 1", "--lr must be positive", "--ema-decay",
                 "--lr-sharpness must be 0 (off) or positive",
                 "--val-fraction", "--max-minutes", "--resume continues"):
        assert part in str(info.value)
    with pytest.raises(ConfigError, match="known models: .*edsr"):
        TrainConfig(source=tmp_path, out=tmp_path, model="srcnn")
    with pytest.raises(ConfigError, match="no option"):
        TrainConfig(source=tmp_path, out=tmp_path, model_options={"depth": 3})
    assert TrainConfig(source=tmp_path, out=tmp_path, model_options={"channels": None}).model_options == {}


def test_schedule_warmup_cosine_and_ema_ramp():
    lrs = [learning_rate(s, peak=1.0, warmup=10, total=110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.5) and lrs[109] < 1e-3
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1) and ema_decay_at(10**6, 0.999) == 0.999
    # --max-minutes planning: steps * t_step + validations * t_val fit 95 % of the time left
    config = TrainConfig(source=".", out=".", steps=10**6, max_minutes=1, val_every=100)
    assert _plan_steps(config, remaining=60, seconds_per_step=0.1, val_seconds=1) == \
        (int((0.95 * 60 - 2) / (0.1 + 1 / 100)), 100)
    # automatic validation count: a tenth of the 55 s left holds 5 validations, plus the final one
    auto = TrainConfig(source=".", out=".", steps=10**6, max_minutes=1)
    assert _plan_steps(auto, remaining=60, seconds_per_step=0.1, val_seconds=1) == (500, 84)
    assert _plan_steps(TrainConfig(source=".", out=".", steps=50, max_minutes=1), remaining=60,
                       seconds_per_step=0.1, val_seconds=1) == (50, 9)
    with pytest.raises(ConfigError, match="leaves no time"):
        _plan_steps(config, remaining=3, seconds_per_step=1.0, val_seconds=2)


def test_ssim_loss_matches_the_reference_metric(data_dir):
    hr = read_pixels(data_dir / "pairs" / "realsr_x4" / "HR" / sorted(
        p.name for p in (data_dir / "pairs" / "realsr_x4" / "HR").iterdir())[0])[:96, :96]
    test = cv2.GaussianBlur(hr, (5, 5), 1.2)
    expected = ssim(hr, test)  # realsr_tools.metrics: scipy Gaussian filter, MATLAB/BasicSR convention
    as_tensor = [torch.from_numpy(to_float(a).transpose(2, 0, 1).copy())[None].double() for a in (test, hr)]
    assert 1 - float(ssim_loss(*as_tensor)) == pytest.approx(expected, abs=1e-6)


def test_tiled_upscale_equals_whole_image(data_dir):
    torch.manual_seed(0)
    model = create_model("edsr_small", 4, blocks=2).eval()
    for p in model.tail[-1].parameters():  # a non-trivial residual (a fresh model is exactly bicubic)
        torch.nn.init.normal_(p, std=0.05)
    lr = to_float(read_pixels(sorted((data_dir / "pairs" / "realsr_x4" / "LR").iterdir())[0]))[:70, :90]
    whole = upscale(model, lr, scale=4)
    tiled = upscale(model, lr, scale=4, tile=48)  # overlap: score.exact_overlap of this model
    assert whole.shape == (280, 360, 3)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_training_run_writes_a_complete_run_folder(tiny, reference_run):
    out = reference_run
    config = json.loads((out / "config.json").read_text())
    assert config["scale"] == 4 and config["total_steps"] == 6 and len(config["val_ids"]) == 1
    assert len(config["train_ids"]) == 2 and config["source_kind"] == "folder"
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["kind"] == "train"] == [1, 2, 4, 6]  # the first step is logged too
    val = [e for e in events if e["kind"] == "val"]
    assert [e["step"] for e in val] == [0, 2, 4, 6]
    # An untrained model is exactly bicubic; check that level against OpenCV's bicubic (a = -0.75, other border).
    name = config["val_ids"][0] + ".png"
    hr, lr = read_pixels(tiny / "HR" / name), read_pixels(tiny / "LR" / name)
    opencv = psnr(hr, cv2.resize(lr, (hr.shape[1], hr.shape[0]), interpolation=cv2.INTER_CUBIC), crop_border=4)
    assert val[0]["psnr"] == val[0]["bicubic_psnr"] == pytest.approx(opencv, abs=0.05)
    best = load_checkpoint(out / "best.pt", scale=4, name="edsr_small")  # weights_only inside
    best_event = max(val, key=lambda e: e["psnr"])
    assert best.meta["step"] == best_event["step"] and best.meta["val_psnr"] == best_event["psnr"]
    sr = upscale(best.model, to_float(lr), scale=4)
    assert psnr(hr, np.rint(np.clip(sr, 0, 1) * 255).astype(np.uint8), crop_border=4) == best_event["psnr"]
    assert load_checkpoint(out / "last.pt", scale=4).meta["step"] == 6
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_run_is_kept_unless_asked(tiny, reference_run):
    result = runner.invoke(app, ["train", str(tiny), "--out", str(reference_run), *TINY, "--steps", "6"])
    assert result.exit_code == 2 and "--resume" in result.output and "--overwrite" in result.output
    result = runner.invoke(app, ["train", str(tiny), "--out", str(reference_run.parent / "none"), *TINY, "--resume"])
    assert result.exit_code == 2 and "no last.pt to resume from" in result.output
    result = runner.invoke(app, ["train", str(tiny), "--out", str(reference_run), *TINY, "--steps", "8", "--resume"])
    assert result.exit_code == 2 and "steps (6 -> 8)" in result.output
    result = runner.invoke(app, ["train", "--list-models"])
    assert result.exit_code == 0 and "edsr_small" in result.output


def _states(path):
    data = torch.load(path, weights_only=True)
    return data["state_dict"], data["train_state"]["model"], data["train_state"]["step"]


def test_resume_after_a_crash_matches_an_uninterrupted_run(tiny, reference_run, tmp_path, monkeypatch):
    from realsr_tools.train.data import PatchSampler

    original = PatchSampler.batch

    def crash_at_step_5(self, *, step, **kwargs):
        if step == 5:
            raise KeyboardInterrupt  # the run dies mid-way; last.pt holds step 4
        return original(self, step=step, **kwargs)

    out = tmp_path / "crashed"
    config = TrainConfig(source=tiny, out=out, model="edsr_small", batch=4, patch=16, val_fraction=0.34,
                         log_every=2, val_every=2, steps=6, device="cpu")
    monkeypatch.setattr(PatchSampler, "batch", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, show_progress=False)
    monkeypatch.setattr(PatchSampler, "batch", original)
    assert _states(out / "last.pt")[2] == 4
    with open(out / "log.jsonl", "a") as stream:
        stream.write('{"step": 5, "lo')  # a kill in the middle of a log write
    _train(tiny, out, "--steps", "6", "--resume")
    ema, raw, step = _states(out / "last.pt")
    ema_ref, raw_ref, step_ref = _states(reference_run / "last.pt")
    assert step == step_ref == 6
    for key in ema_ref:
        assert torch.equal(ema[key], ema_ref[key]) and torch.equal(raw[key], raw_ref[key]), key
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    reference_steps = [json.loads(line)["step"] for line in (reference_run / "log.jsonl").read_text().splitlines()]
    assert steps == reference_steps


def test_two_gloo_processes_take_the_same_steps(tiny, reference_run, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "realsr_tools", "-q", "train", str(tiny), "--out", str(out), *TINY, "--steps", "6"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    loaded = load_checkpoint(out / "best.pt", scale=4)
    ema, raw, step = _states(out / "last.pt")
    ema_ref, raw_ref, _ = _states(reference_run / "last.pt")
    assert step == 6 and loaded.name == "edsr_small"
    # each process took half of the global batch: the averaged gradient is the single-process one up to rounding
    for key in raw_ref:
        torch.testing.assert_close(raw[key], raw_ref[key], atol=2e-5, rtol=1e-4)


def test_prefetch_thread_yields_the_step_batches_in_order(data_dir):
    from realsr_tools.train.data import CachedPair, PatchSampler

    image = read_pixels(data_dir / "photos" / "pypi_scikit-image_coffee.png")[:200, :200]
    sampler = PatchSampler([CachedPair("c", image[::4, ::4].copy(), image)], scale=4, patch=8)
    prefetch = Prefetcher(sampler, start=3, depth=2, pin=False, seed=5, size=4)
    try:
        for step in (3, 4, 5):
            lr, hr, peak = prefetch.get()
            expected = sampler.batch(seed=5, step=step, size=4)
            assert peak == 255 and np.array_equal(lr.numpy(), expected.lr) and np.array_equal(hr.numpy(), expected.hr)
    finally:
        prefetch.close()
    failing = Prefetcher(sampler, start=0, depth=1, pin=False, seed=5, size=3, world=2)
    with pytest.raises(ConfigError, match="split evenly"):
        failing.get()
    failing.close()


def test_max_minutes_plans_the_steps_that_fit_and_writes_both_checkpoints(tiny, tmp_path):
    # No wall-clock assertion (the suite must pass on a loaded machine): that the run ends on time is what the plan
    # below shows, a step count fitted to the budget and re-planned on the way instead of the 100,000 asked for.
    out = tmp_path / "timed"
    result = runner.invoke(app, ["-q", "train", str(tiny), "--out", str(out), *TINY[:-4], "--device", "cpu",
                                 "--max-minutes", "0.4", "--steps", "100000"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["total_steps"] < 100000  # the initial plan
    last = load_checkpoint(out / "last.pt", scale=4)
    assert 1 <= last.meta["step"] == last.meta["total_steps"] < 100000  # re-planned on the way, then completed
    best = load_checkpoint(out / "best.pt", scale=4)
    assert best.meta["val_psnr"] == max(json.loads(line).get("psnr", -1) for line in
                                        (out / "log.jsonl").read_text().splitlines())  # the best validation kept


def test_training_lowers_the_loss_and_moves_the_weights(tiny, tmp_path):
    # "best val_psnr >= bicubic" cannot fail (step 0 is bicubic and best is a running maximum): instead, the trained
    # weights must differ from the initial ones and fit the training pairs better than the initial model does.
    out = tmp_path / "learns"
    _train(tiny, out, "--steps", "40", "--lr", "1e-3", "--val-every", "40", "--log-every", "10")
    trained = load_checkpoint(out / "last.pt", scale=4).model
    torch.manual_seed(0)  # the run's --seed: its initial weights
    initial = create_model("edsr_small", 4).eval()
    moved = {name: (trained.state_dict()[name] - value).abs().max().item()
             for name, value in initial.state_dict().items()}
    assert all(change > 0 for change in moved.values()), [n for n, c in moved.items() if c == 0]
    config = json.loads((out / "config.json").read_text())

    def l1(model) -> float:
        total = 0.0
        for name in config["train_ids"]:
            lr = to_float(read_pixels(tiny / "LR" / f"{name}.png"))
            hr = to_float(read_pixels(tiny / "HR" / f"{name}.png"))
            total += float(np.abs(upscale(model, lr, scale=4) - hr).mean())
        return total / len(config["train_ids"])

    before, after = l1(initial), l1(trained)
    assert after < before - 1e-4, (before, after)
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "train"]
    assert len(losses) == 5 and np.mean(losses[-2:]) < losses[0]  # the logged training loss falls too


def test_speed_measurement_leaves_no_trace(monkeypatch):
    from realsr_tools.train.data import CachedPair, PatchSampler
    from realsr_tools.train.distributed import DistInfo
    from realsr_tools.train.loop import _time_steps
    from realsr_tools.train.step import TrainStep

    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sampler = PatchSampler([CachedPair("r", hr[::4, ::4].copy(), hr)], scale=4, patch=8)
    torch.manual_seed(0)
    module = create_model("edsr_small", 4, blocks=1)
    ema = create_model("edsr_small", 4, blocks=1).requires_grad_(False)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    step_fn = TrainStep(module, module, ema, optimizer, amp=False, grad_clip=1.0, ssim_weight=0.0, ema_decay=0.9)
    lr_t, hr_t = to_device(sampler.batch(seed=0, step=0, size=2), "cpu", channels_last=False)
    step_fn(lr_t, hr_t, step=0, learning_rate=1e-3)  # Adam state exists
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (module, ema)]
    adam_before = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}
    config = TrainConfig(source=".", out=".", lr=1e-3)
    monkeypatch.setattr("realsr_tools.train.loop.PLAN_MIN_SECONDS", 0.0)  # the minimum of 2 timed steps
    seconds = _time_steps(step_fn, sampler, dict(seed=0, size=2), "cpu", False, config, DistInfo())
    assert seconds > 0
    for saved, m in zip(before, (module, ema)):
        assert all(torch.equal(saved[k], v) for k, v in m.state_dict().items())
    assert all(torch.equal(adam_before[k], v) for k, v in optimizer.state_dict()["state"][0].items())


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_batches_reach_the_device_as_unit_floats(dtype):
    from realsr_tools.train.data import Batch

    rng = np.random.default_rng(0)
    peak = np.iinfo(dtype).max
    nhwc = [rng.integers(0, peak + 1, (2, s, s, 3), dtype=dtype) for s in (4, 16)]
    batch = Batch(nhwc[0].transpose(0, 3, 1, 2), nhwc[1].transpose(0, 3, 1, 2))
    for channels_last in (False, True):
        lr, hr = to_device(batch, "cpu", channels_last=channels_last)
        assert lr.dtype == torch.float32 and hr.shape == (2, 3, 16, 16)
        np.testing.assert_allclose(hr.numpy(), batch.hr / peak, rtol=1e-6)
        assert lr.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_resume_compares_resolved_source_paths(tiny, tmp_path, monkeypatch):
    # issue 12 case 9: './data', 'data/' and the absolute path were three "changed" sources for --resume.
    monkeypatch.chdir(tiny.parent)
    _train(f"./{tiny.name}", tmp_path / "run", "--steps", "4")
    result = runner.invoke(app, ["-q", "train", str(tiny.resolve()), "--out", str(tmp_path / "run"), *TINY,
                                 "--steps", "4", "--resume"])
    assert result.exit_code == 0, result.output


def test_a_run_killed_before_its_first_checkpoint_can_be_started_again(tiny, tmp_path):
    # issue 12 case 9: neither --resume ("no last.pt") nor a plain re-run ("already holds a run") worked.
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text(json.dumps({"kind": "val", "step": 0, "psnr": 20.0}) + "\n")
    (out / "config.json").write_text("{}\n")
    result = runner.invoke(app, ["-q", "train", str(tiny), "--out", str(out), *TINY, "--steps", "2", "--resume"])
    assert result.exit_code == 2 and "before its first checkpoint" in result.output
    assert "without --resume" in result.output
    _train(tiny, out, "--steps", "2")
    assert (out / "last.pt").is_file()
    # A run with a checkpoint is still protected.
    result = runner.invoke(app, ["-q", "train", str(tiny), "--out", str(out), *TINY, "--steps", "2"])
    assert result.exit_code == 2 and "--resume" in result.output and "--overwrite" in result.output
