"""Super-resolution inference as scoring needs it: MATLAB-exact bicubic, tiled model inference whose tiles
equal whole-image inference, x8 self-ensemble, tile sizes that fit a memory budget, the device choice."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .errors import ConfigError
from .imaging import to_float

SRFunction = Callable[[np.ndarray, int], np.ndarray]  # (LR image, scale) -> SR image


def cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5: MATLAB's bicubic; a = -0.75: OpenCV's and PyTorch's)."""
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """Upscale ``H x W x C`` pixels by an integer ``scale`` as MATLAB's ``imresize(lr, scale, 'bicubic')``.

    Output pixel ``i`` samples LR position ``(i + 0.5) / scale - 0.5`` with the 4-tap cubic (a = -0.5); edges are
    padded symmetrically (the edge pixel repeated), as MATLAB does. Returns float32 on the input's scale
    (not rounded).
    """
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    out = np.asarray(lr, dtype=np.float32)
    for axis in (0, 1):
        out = _upscale_axis(out, int(scale), axis)
    return out


def _upscale_axis(image: np.ndarray, scale: int, axis: int) -> np.ndarray:
    length = image.shape[axis]
    pad = [(0, 0)] * image.ndim
    pad[axis] = (2, 2)
    padded = np.pad(image, pad, mode="symmetric")
    shape = list(image.shape)
    shape[axis] = length * scale
    out = np.empty(shape, dtype=np.float32)
    for phase in range(scale):
        offset = (phase + 0.5) / scale - 0.5  # LR position of output pixel k * scale + phase, minus k
        first = math.floor(offset) - 1  # leftmost of the 4 taps, relative to k
        weights = cubic(offset - (first + np.arange(4))).astype(np.float32)
        weights /= weights.sum()
        acc = np.zeros_like(np.take(padded, np.arange(length), axis=axis))
        for tap, weight in enumerate(weights):
            start = first + tap + 2
            acc += weight * np.take(padded, np.arange(start, start + length), axis=axis)
        index = [slice(None)] * image.ndim
        index[axis] = slice(phase, None, scale)
        out[tuple(index)] = acc
    return out


def bicubic_sr(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline as an :data:`SRFunction`: :func:`bicubic_upscale` rounded to the LR's integer type."""
    peak = np.iinfo(lr.dtype).max
    return np.rint(np.clip(bicubic_upscale(lr, scale), 0, peak)).astype(lr.dtype)


def tiled_sr(model, lr, *, scale: int, tile: int | None, overlap: int = 32):
    """Run ``model`` on an ``N x C x H x W`` LR tensor tile by tile and blend the tiles into one SR tensor.

    Tiles are ``tile x tile`` LR pixels (``None`` or a tile covering the image: one pass), spread evenly so
    neighbours overlap by at least ``overlap`` LR pixels. Inside each overlap of width ``o`` the outer ``3/8 o``
    of each tile is discarded and the middle ``o / 4`` is cross-faded linearly, so the result equals the untiled
    output (to float rounding) when ``3/8 overlap`` is at least the model's receptive radius
    (:func:`exact_overlap`). Models with global pooling (channel attention) see only their tile and cannot match
    exactly. Memory: one tile's activations plus the float32 output and weight accumulators.
    """
    import torch

    n, channels, height, width = lr.shape
    if tile is None or (tile >= height and tile >= width):
        return model(lr)
    if tile < 8 or overlap < 0 or 2 * overlap > tile:
        raise ConfigError(f"tile {tile} with overlap {overlap}: need tile >= 8 and 0 <= overlap <= tile / 2")
    ys, xs = _tile_starts(height, tile, overlap), _tile_starts(width, tile, overlap)
    out = torch.zeros((n, channels, height * scale, width * scale), dtype=torch.float32, device=lr.device)
    total = torch.zeros((1, 1, height * scale, width * scale), dtype=torch.float32, device=lr.device)
    for i, y0 in enumerate(ys):
        y1 = min(y0 + tile, height)
        wy = _ramp(ys, i, y1 - y0, height, tile, scale).to(lr.device)
        for j, x0 in enumerate(xs):
            x1 = min(x0 + tile, width)
            wx = _ramp(xs, j, x1 - x0, width, tile, scale).to(lr.device)
            weight = wy[:, None] * wx[None, :]
            sr = model(lr[:, :, y0:y1, x0:x1]).float()
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += sr * weight
            total[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += weight
    return out / total


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return sorted({round(k * (length - tile) / (count - 1)) for k in range(count)})


def _ramp(starts: list[int], k: int, size: int, length: int, tile: int, scale: int):
    """Blend weights of tile ``k`` along one axis (``size * scale`` output pixels)."""
    import torch

    centre = torch.arange(size * scale, dtype=torch.float64) + 0.5  # output pixel centres from the tile start
    weight = torch.ones(size * scale, dtype=torch.float64)
    if k > 0:  # overlap with the previous tile on the low side
        o = (min(starts[k - 1] + tile, length) - starts[k]) * scale
        weight *= _fade(centre, o)
    if k + 1 < len(starts):  # overlap with the next tile on the high side
        o = (min(starts[k] + tile, length) - starts[k + 1]) * scale
        weight *= _fade(size * scale - centre, o)
    return weight.float()


def _fade(distance, overlap: float):
    """0 for the outer 3/8 of an overlap, a linear ramp across its middle quarter, 1 beyond (complementary)."""
    if overlap <= 0:
        return 1.0
    band = overlap / 4
    return ((distance - (overlap - band) / 2) / band).clamp(0.0, 1.0)


def self_ensemble(sr_fn: Callable, lr):
    """The x8 geometric self-ensemble: average of ``T^-1(sr_fn(T(lr)))`` over the 8 flips/rotations ``T``.

    ``lr`` is an ``N x C x H x W`` tensor; ``sr_fn`` maps such a tensor to its SR tensor.
    """
    import torch

    total = None
    for flip in (False, True):
        for turns in range(4):
            x = lr.flip(-1) if flip else lr
            y = sr_fn(torch.rot90(x, turns, dims=(-2, -1)))
            y = torch.rot90(y, -turns, dims=(-2, -1))
            y = y.flip(-1) if flip else y
            total = y.float() if total is None else total + y.float()
    return total / 8


def receptive_radius(model) -> int | None:
    """An upper bound of the model's receptive radius in LR pixels, or ``None`` if a layer pools globally.

    Counts ``dilation * (k - 1) / 2`` for every convolution as if it ran at LR resolution (those after the
    upsampler count less, so this bounds from above), plus 2 for a bicubic skip connection.
    """
    from torch import nn

    radius = 2
    for module in model.modules():
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            return None
        if isinstance(module, nn.Conv2d):
            radius += max(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation))
    return radius


def exact_overlap(model) -> int | None:
    """The smallest overlap (a multiple of 8 LR pixels) for which :func:`tiled_sr` equals untiled inference."""
    radius = receptive_radius(model)
    return None if radius is None else 8 * math.ceil(radius * 8 / 3 / 8)


@dataclass(frozen=True)
class TileFit:
    """The largest tile whose forward pass fits ``budget`` bytes: ``peak(t) = base + per_pixel * t^2``."""

    tile: int
    budget: int
    base: float
    per_pixel: float
    device: str
    probes: dict[int, int] = field(default_factory=dict)


def largest_tile(model, *, budget: int, device, channels: int = 3, probes: Sequence[int] = (64, 128),
                 limit: int = 4096) -> TileFit:
    """Measure the peak memory of the forward pass at two tile sizes and return the largest tile (a multiple of
    16 LR pixels, at most ``limit``) whose predicted peak fits ``budget`` bytes.

    On CUDA the peak comes from ``torch.cuda.max_memory_allocated``; on CPU from an estimate of the live
    activations (:func:`_activation_peak`). A warm-up pass first keeps one-time allocations out of the fit. Activations grow with the tile area, so a
    linear fit in ``t^2`` through the two probes predicts larger tiles.
    """
    import torch

    device = torch.device(device)
    _forward_peak(model, min(probes), channels, device)  # warm-up: one-time allocations (kernels, caches)
    peaks = {size: _forward_peak(model, size, channels, device) for size in probes}
    (t0, p0), (t1, p1) = sorted(peaks.items())
    per_pixel = max((p1 - p0) / (t1 * t1 - t0 * t0), 1.0)
    base = max(p0 - per_pixel * t0 * t0, 0.0)
    tile = int(math.sqrt(max(budget - base, 0.0) / per_pixel)) // 16 * 16
    if tile < 16:
        raise ConfigError(f"a {budget / 2**30:.2f} GiB budget does not fit even a 16-pixel tile on {device} "
                          f"(about {per_pixel * 256 / 2**20:.0f} MiB per 16x16 tile); raise the budget")
    return TileFit(min(tile, limit), int(budget), base, per_pixel, str(device), peaks)


def _forward_peak(model, size: int, channels: int, device) -> int:
    import torch

    x = torch.rand((1, channels, size, size), device=device)
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            model(x)
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) - before
        return _activation_peak(model, x)


def _activation_peak(model, x) -> int:
    """CPU: the forward pass's peak activation bytes, estimated from the tensors it produces.

    The process's resident size proved an unreliable measure (allocator caching can make two probes look alike,
    which predicted absurd tiles), so every leaf module's output is recorded with a forward hook and the peak is
    taken as input + output + the four largest intermediate tensors (alive together in a residual block with a
    long skip). Deterministic, and exactly quadratic in the tile side, so the fit in :func:`largest_tile` is exact.
    """
    import torch

    sizes: list[int] = []

    def record(_module, _inputs, output) -> None:
        sizes.append(output.nbytes if torch.is_tensor(output) else 0)

    hooks = [m.register_forward_hook(record) for m in model.modules() if not any(m.children())]
    try:
        out = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return int(x.nbytes + out.nbytes + sum(sorted(sizes, reverse=True)[:4]))


def model_fn(model, *, scale: int, device, tile: int | None, overlap: int, ensemble: bool) -> SRFunction:
    """An :data:`SRFunction` running ``model`` on ``device`` (tiled, optionally with the x8 self-ensemble)."""
    import torch

    model = model.to(device).eval()

    def forward(x):
        return tiled_sr(model, x, scale=scale, tile=tile, overlap=overlap)

    def upscale(lr: np.ndarray, lr_scale: int) -> np.ndarray:
        if lr_scale != scale:
            raise ConfigError(f"the model is x{scale} but this pair is x{lr_scale}")
        x = torch.from_numpy(to_float(lr)).permute(2, 0, 1)[None].to(device)
        with torch.inference_mode():
            y = self_ensemble(forward, x) if ensemble else forward(x)
        return y[0].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()

    return upscale


def pick_device(device: str) -> str:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is a :class:`ConfigError`."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    return device


def default_budget(device: str) -> int:
    """Memory for one tile's forward pass: 80% of free GPU memory, or a quarter of the machine's RAM."""
    import torch

    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return int(free * 0.8)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4)
