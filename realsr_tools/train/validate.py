"""Validation as ``realsr score`` measures it: full-image (or tiled) fp32 inference, PSNR on the HR's integer grid."""

from __future__ import annotations


import numpy as np


def upscale(model, image: np.ndarray, *, scale: int, device: str = "cpu", tile: int | None = None,
            overlap: int | None = None) -> np.ndarray:
    """Super-resolve one ``H x W x 3`` float32 [0, 1] LR image to ``sH x sW x 3`` float32 (not clipped).

    ``tile`` bounds memory through :func:`realsr_tools.stages.score.tiled_sr` (overlapping tiles, cross-faded); the
    default ``overlap`` makes tiled equal whole-image inference where the tile allows it. Runs in fp32 without
    gradients; the model's train/eval mode is kept.
    """
    import torch

    from ..inference import exact_overlap, tiled_sr

    if tile is not None and overlap is None:
        # BicubicBaseline is no nn.Module: its 4-tap kernel needs 2 LR pixels of context.
        reach = exact_overlap(model) if hasattr(model, "modules") else 2
        overlap = min(reach or 32, tile // 2)

    batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
    with torch.no_grad():
        sr = tiled_sr(model, batch, scale=scale, tile=tile, overlap=overlap or 0)
    return sr[0].float().permute(1, 2, 0).cpu().numpy()


def validation_psnr(model, pairs, *, scale: int, device: str, tile: int | None) -> float:
    """Mean PSNR (dB) over ``pairs`` (:class:`realsr_tools.train.data.CachedPair`): RGB, ``crop_border = scale``, output
    rounded to the HR's integer type (the BasicSR / ``realsr score`` protocol)."""
    from ..imaging import to_float, to_integer
    from ..metrics import psnr

    values = []
    for pair in pairs:
        sr = upscale(model, to_float(pair.lr), scale=scale, device=device, tile=tile)
        bits = 8 if pair.hr.dtype == np.uint8 else 16
        values.append(psnr(pair.hr, to_integer(sr, bits), data_range=2.0**bits - 1, crop_border=scale))
    return float(np.mean(values, dtype=np.float64))


class BicubicBaseline:
    """The bicubic baseline as a model (PyTorch bicubic, a = -0.75, like OpenCV's INTER_CUBIC)."""

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def __call__(self, lr):
        import torch.nn.functional as F

        return F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
