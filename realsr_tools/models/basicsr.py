"""EDSR and RCAN with BasicSR's module names, so checkpoints trained with BasicSR load into realsr unchanged.

Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017; Zhang et al., "Image
Super-Resolution Using Very Deep Residual Channel Attention Networks", ECCV 2018. The layer names, the upsampler
layout and the input normalisation follow BasicSR's ``basicsr/archs/edsr_arch.py`` and ``rcan_arch.py``:

- ``conv_first`` (3 -> num_feat), ``body`` (a Sequential of blocks), ``conv_after_body``, ``upsample`` (a
  Sequential of ``Conv2d(num_feat, 4 num_feat)`` + ``PixelShuffle(2)`` per factor 2, or one
  ``Conv2d(num_feat, 9 num_feat)`` + ``PixelShuffle(3)`` for x3), ``conv_last`` (num_feat -> 3);
- EDSR blocks: ``body.<i>.conv1``, ``body.<i>.conv2`` (conv-ReLU-conv, scaled by ``res_scale``, plus identity);
- RCAN groups: ``body.<g>.residual_group.<b>.rcab.{0,2}`` (convs), ``rcab.3.attention.{1,3}`` (channel attention
  squeeze/excite 1x1 convs), ``body.<g>.conv``;
- input RGB in [0, 1]: ``(x - rgb_mean) * img_range`` in, ``/ img_range + rgb_mean`` out (DIV2K mean, 255).

:func:`detect_basicsr` reads the architecture, width, depth and scale from the weights alone. ``res_scale`` is not
in the weights: it is 0.1 for the paper's EDSR (256 features, 32 blocks) and 1 otherwise, as in BasicSR's option
files.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
from torch import nn

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
IMG_RANGE = 255.0


def _upsample(scale: int, num_feat: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    if scale in (2, 4):
        for _ in range(scale.bit_length() - 1):
            layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
    return nn.Sequential(*layers)


class _Normalised(nn.Module):
    """Shared head/tail of both networks: mean shift and range, conv_first ... conv_last around ``body``."""

    def _build(self, scale: int, num_feat: int, body: nn.Sequential) -> None:
        self.scale = scale
        self.register_buffer("mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.body = body
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = _upsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(lr.dtype)
        features = self.conv_first((lr - mean) * IMG_RANGE)
        features = features + self.conv_after_body(self.body(features))
        return self.conv_last(self.upsample(features)) / IMG_RANGE + mean


class _EDSRBlock(nn.Module):
    def __init__(self, num_feat: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class BasicSREDSR(_Normalised):
    """EDSR as BasicSR defines it (``num_feat`` features, ``num_block`` residual blocks)."""

    def __init__(self, scale: int, *, num_feat: int = 64, num_block: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self._build(scale, num_feat, nn.Sequential(*[_EDSRBlock(num_feat, res_scale) for _ in range(num_block)]))


class _Attention(nn.Module):
    def __init__(self, num_feat: int, squeeze_factor: int) -> None:
        super().__init__()
        hidden = num_feat // squeeze_factor
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, hidden, 1),
                                       nn.ReLU(inplace=True), nn.Conv2d(hidden, num_feat, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class _RCAB(nn.Module):
    def __init__(self, num_feat: int, squeeze_factor: int, res_scale: float) -> None:
        super().__init__()
        self.rcab = nn.Sequential(nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.ReLU(True),
                                  nn.Conv2d(num_feat, num_feat, 3, 1, 1), _Attention(num_feat, squeeze_factor))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.rcab(x) * self.res_scale


class _Group(nn.Module):
    def __init__(self, num_feat: int, num_block: int, squeeze_factor: int, res_scale: float) -> None:
        super().__init__()
        self.residual_group = nn.Sequential(*[_RCAB(num_feat, squeeze_factor, res_scale) for _ in range(num_block)])
        self.conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.residual_group(x))


class BasicSRRCAN(_Normalised):
    """RCAN as BasicSR defines it (``num_group`` residual groups of ``num_block`` channel-attention blocks)."""

    def __init__(self, scale: int, *, num_feat: int = 64, num_group: int = 10, num_block: int = 16,
                 squeeze_factor: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self._build(scale, num_feat, nn.Sequential(*[_Group(num_feat, num_block, squeeze_factor, res_scale)
                                                     for _ in range(num_group)]))


EXPECTED = ("a BasicSR EDSR or RCAN state dict under 'params_ema' or 'params' (keys conv_first.*, body.*, "
            "conv_after_body.*, upsample.*, conv_last.*)")


def basicsr_state_dict(data: Any) -> tuple[dict[str, torch.Tensor], str] | None:
    """The weights of a BasicSR checkpoint and the key they were under (``params_ema`` preferred), else None."""
    if not isinstance(data, Mapping):
        return None
    for key in ("params_ema", "params"):
        if isinstance(data.get(key), Mapping):
            return _strip_module(data[key]), key
    if "conv_first.weight" in data or "module.conv_first.weight" in data:  # saved with param_key None
        return _strip_module(data), "(top level)"
    return None


def _strip_module(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _indices(state: Mapping[str, Any], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state for m in [regex.fullmatch(k)] if m})


def detect_basicsr(state: Mapping[str, torch.Tensor]) -> tuple[str, int, dict[str, Any]]:
    """``(model name, scale, options)`` of a BasicSR EDSR/RCAN state dict; ValueError naming what is missing."""
    for key in ("conv_first.weight", "conv_after_body.weight", "conv_last.weight", "upsample.0.weight"):
        if key not in state:
            raise ValueError(f"no {key!r}")
    num_feat, in_ch = state["conv_first.weight"].shape[:2]
    out_ch = state["conv_last.weight"].shape[0]
    if in_ch != 3 or out_ch != 3:
        raise ValueError(f"{in_ch} input and {out_ch} output channels; realsr models take and give RGB (3)")
    convs = _indices(state, r"upsample\.(\d+)\.weight")
    widths = [state[f"upsample.{i}.weight"].shape[0] // num_feat for i in convs]
    if widths == [4]:
        scale = 2
    elif widths == [4, 4]:
        scale = 4
    elif widths == [9]:
        scale = 3
    else:
        raise ValueError(f"an upsampler of {len(widths)} conv(s) widening {widths} x; realsr supports x2 (4), "
                         "x3 (9) and x4 (4, 4)")
    if _indices(state, r"body\.(\d+)\.residual_group\.\d+\.rcab\.0\.weight"):
        groups = _indices(state, r"body\.(\d+)\.conv\.weight")
        blocks = _indices(state, r"body\.0\.residual_group\.(\d+)\.rcab\.0\.weight")
        hidden = state["body.0.residual_group.0.rcab.3.attention.1.weight"].shape[0]
        return "basicsr_rcan", scale, {"num_feat": int(num_feat), "num_group": len(groups),
                                       "num_block": len(blocks), "squeeze_factor": int(num_feat // hidden),
                                       "res_scale": 1.0}
    blocks = _indices(state, r"body\.(\d+)\.conv1\.weight")
    if not blocks:
        raise ValueError("neither EDSR blocks (body.N.conv1) nor RCAN groups (body.N.residual_group.M.rcab)")
    res_scale = 0.1 if (num_feat, len(blocks)) == (256, 32) else 1.0
    return "basicsr_edsr", scale, {"num_feat": int(num_feat), "num_block": len(blocks), "res_scale": res_scale}
