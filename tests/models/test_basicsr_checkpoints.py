"""BasicSR EDSR/RCAN checkpoints in `realsr score --model` and `realsr train --init` (built here, no download).

The reference networks below are written from BasicSR's definitions (``basicsr/archs/edsr_arch.py``,
``rcan_arch.py``, ``arch_util.Upsample`` / ``ResidualBlockNoBN``): their state-dict names are what a BasicSR
checkpoint holds, and their forward pass is what realsr must reproduce. They share no code with realsr.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from realsr_tools.cli import app
from realsr_tools.errors import ConfigError
from realsr_tools.models import load_checkpoint

from conftest import real_pair_folder

runner = CliRunner()
MEAN = torch.tensor((0.4488, 0.4371, 0.4040)).view(1, 3, 1, 1)


class RefUpsample(nn.Sequential):
    def __init__(self, scale, num_feat):
        m = []
        if scale in (2, 4):
            for _ in range(int(math.log2(scale))):
                m += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        else:
            m += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        super().__init__(*m)


class RefResBlock(nn.Module):  # ResidualBlockNoBN
    def __init__(self, num_feat, res_scale):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU()
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class RefCA(nn.Module):
    def __init__(self, num_feat, squeeze):
        super().__init__()
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, num_feat // squeeze, 1),
                                       nn.ReLU(), nn.Conv2d(num_feat // squeeze, num_feat, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.attention(x)


class RefRCAB(nn.Module):
    def __init__(self, num_feat, squeeze):
        super().__init__()
        self.rcab = nn.Sequential(nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(num_feat, num_feat, 3, 1, 1), RefCA(num_feat, squeeze))

    def forward(self, x):
        return self.rcab(x) + x


class RefGroup(nn.Module):
    def __init__(self, num_feat, num_block, squeeze):
        super().__init__()
        self.residual_group = nn.Sequential(*[RefRCAB(num_feat, squeeze) for _ in range(num_block)])
        self.conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x):
        return self.conv(self.residual_group(x)) + x


class RefNet(nn.Module):
    """BasicSR's EDSR (``groups=None``) or RCAN: conv_first, body, conv_after_body, upsample, conv_last."""

    def __init__(self, scale, num_feat, num_block, groups=None, squeeze=4, res_scale=1.0):
        super().__init__()
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        if groups is None:
            self.body = nn.Sequential(*[RefResBlock(num_feat, res_scale) for _ in range(num_block)])
        else:
            self.body = nn.Sequential(*[RefGroup(num_feat, num_block, squeeze) for _ in range(groups)])
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = RefUpsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def forward(self, x):
        x = (x - MEAN) * 255.0
        x = self.conv_first(x)
        res = self.conv_after_body(self.body(x)) + x
        return self.conv_last(self.upsample(res)) / 255.0 + MEAN


def _reference(scale, kind, seed=0):
    torch.manual_seed(seed)
    net = RefNet(scale, 16, 2) if kind == "edsr" else RefNet(scale, 16, 2, groups=2, squeeze=4)
    with torch.no_grad():  # small weights so the untrained output stays near the input range
        for p in net.parameters():
            p.mul_(0.05)
    return net.eval()


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("kind", ["edsr", "rcan"])
def test_basicsr_checkpoints_load_with_detected_architecture_and_scale(tmp_path, scale, kind):
    reference = _reference(scale, kind)
    path = tmp_path / "net_g_latest.pth"
    # BasicSR's save_network with EMA: both keys; realsr uses params_ema.
    torch.save({"params": {k: torch.zeros_like(v) for k, v in reference.state_dict().items()},
                "params_ema": reference.state_dict()}, path)
    loaded = load_checkpoint(path)
    assert loaded.name == f"basicsr_{kind}" and loaded.scale == scale
    assert loaded.meta["param_key"] == "params_ema"
    expected = {"num_feat": 16, "num_block": 2} | ({"num_group": 2, "squeeze_factor": 4} if kind == "rcan" else {})
    assert expected.items() <= loaded.options.items()
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_params_only_checkpoint_and_score_cli(tmp_path, data_dir):
    reference = _reference(4, "edsr")
    path = tmp_path / "EDSR_Mx4.pth"
    torch.save({"params": reference.state_dict()}, path)
    pairs = real_pair_folder(tmp_path / "pairs", data_dir, ["Canon_004_LR4.png"], copy=False)
    result = runner.invoke(app, ["-q", "score", "--model", str(path), "--data", str(pairs), "--device", "cpu",
                                 "--tile", "0"])
    assert result.exit_code == 0, result.output
    assert "model basicsr_edsr x4" in result.output
    # Asking for another scale than the weights hold is one line naming both.
    result = runner.invoke(app, ["-q", "score", "--model", str(path), "--data", str(pairs), "--scale", "2"])
    assert result.exit_code == 2 and "checkpoint is for x4, but x2 was asked for" in result.output


def test_checkpoints_that_do_not_match_are_one_line_naming_what_was_expected(tmp_path, data_dir):
    pairs = real_pair_folder(tmp_path / "pairs", data_dir, ["Canon_004_LR4.png"], copy=False)
    reference = _reference(4, "edsr").state_dict()
    cases = {
        "other.pth": {"weights": {"fc.weight": torch.zeros(2, 2)}},  # some other tool's layout
        "srresnet.pth": {"params": {"conv_first.weight": torch.zeros(64, 3, 3, 3)}},  # BasicSR, another arch
        "grey.pth": {"params": {**reference, "conv_first.weight": torch.zeros(16, 1, 3, 3)}},
        "x8.pth": {"params": {**reference, **{f"upsample.{i}.weight": torch.zeros(64, 16, 3, 3) for i in (4,)}}},
    }
    for name, content in cases.items():
        torch.save(content, tmp_path / name)
        result = runner.invoke(app, ["-q", "score", "--model", str(tmp_path / name), "--data", str(pairs)])
        assert result.exit_code == 2, (name, result.output)
        assert "BasicSR EDSR or RCAN state dict" in result.output, (name, result.output)
        assert len(result.output.strip().splitlines()) <= 3  # one (soft-wrapped) error line, no traceback
        with pytest.raises(ConfigError):
            load_checkpoint(tmp_path / name)


def test_train_init_starts_from_basicsr_weights(tmp_path, data_dir, one_torch_thread):
    reference = _reference(4, "edsr")
    path = tmp_path / "EDSR.pth"
    torch.save({"params": reference.state_dict()}, path)
    pairs = real_pair_folder(tmp_path / "pairs", data_dir, ["Canon_004_LR4.png", "Canon_033_LR4.png",
                                                            "Nikon_017_LR4.png"], copy=False)
    out = tmp_path / "run"
    result = runner.invoke(app, ["-q", "train", str(pairs), "--out", str(out), "--init", str(path), "--steps", "1",
                                 "--batch", "2", "--patch", "16", "--val-fraction", "0.34", "--device", "cpu",
                                 "--lr", "1e-12", "--val-tile", "64"])
    assert result.exit_code == 0, result.output
    best = load_checkpoint(out / "best.pt")
    assert best.name == "basicsr_edsr" and best.scale == 4
    # Step 0 is validated and saved before any training: its weights are the BasicSR ones.
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(best.model(x), reference(x), rtol=1e-4, atol=1e-4)
    # A checkpoint of another scale than the data is refused in one line.
    torch.save({"params": _reference(2, "edsr").state_dict()}, tmp_path / "x2.pth")
    result = runner.invoke(app, ["-q", "train", str(pairs), "--out", str(tmp_path / "run2"), "--init",
                                 str(tmp_path / "x2.pth"), "--steps", "1", "--device", "cpu"])
    assert result.exit_code == 2 and "checkpoint is for x2, but x4 was asked for" in result.output
