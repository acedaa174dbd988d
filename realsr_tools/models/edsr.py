"""EDSR-baseline-style network with an optional RCAN-style channel attention.

Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017 (residual blocks
without batch norm, residual scaling, pixel-shuffle upsampling); Zhang et al., "Image Super-Resolution Using Very
Deep Residual Channel Attention Networks", ECCV 2018 (channel attention). Input and output are RGB in [0, 1], NCHW.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over channels (RCAN): global average pool, bottleneck, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class ResidualBlock(nn.Module):
    """conv-ReLU-conv (no batch norm: it removes range flexibility SR needs), scaled, plus identity."""

    def __init__(self, channels: int, *, res_scale: float, attention: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))
        self.attention = ChannelAttention(channels) if attention else nn.Identity()
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.body(x)) * self.res_scale


def _upsampler(channels: int, scale: int) -> nn.Sequential:
    if scale in (2, 3):
        steps = [scale]
    elif scale == 4:
        steps = [2, 2]
    else:
        raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
    layers: list[nn.Module] = []
    for step in steps:
        layers += [nn.Conv2d(channels, channels * step * step, 3, padding=1), nn.PixelShuffle(step)]
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    """EDSR-baseline: head conv, ``blocks`` residual blocks with a long skip, pixel-shuffle tail.

    Parameters
    ----------
    scale : upscaling factor, 2, 3 or 4.
    channels : feature width (64 in EDSR-baseline).
    blocks : number of residual blocks (16 in EDSR-baseline).
    res_scale : residual scaling (1.0 in the baseline; 0.1 stabilises wide models).
    attention : add RCAN channel attention to every block.
    skip : ``"bicubic"`` adds the bicubic upsampled input so the network learns only the residual (faster
        convergence on small real-SR sets); its last convolution starts at zero, so an untrained model is exactly
        bicubic; ``"none"`` is the original EDSR.
    """

    def __init__(self, scale: int, *, channels: int = 64, blocks: int = 16, res_scale: float = 1.0,
                 attention: bool = False, skip: str = "bicubic") -> None:
        super().__init__()
        if skip not in ("bicubic", "none"):
            raise ValueError(f"skip must be 'bicubic' or 'none', got {skip!r}")
        self.scale = scale
        self.skip = skip
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(channels, res_scale=res_scale, attention=attention)
                                    for _ in range(blocks)], nn.Conv2d(channels, channels, 3, padding=1))
        self.tail = nn.Sequential(_upsampler(channels, scale), nn.Conv2d(channels, 3, 3, padding=1))
        if skip == "bicubic":  # start as exactly the bicubic upscale; training learns the residual from there
            nn.init.zeros_(self.tail[-1].weight)
            nn.init.zeros_(self.tail[-1].bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        features = self.head(lr - 0.5)
        out = self.tail(self.body(features) + features)
        if self.skip == "bicubic":
            out = out + F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        else:
            out = out + 0.5
        return out
