"""Score super-resolved images against HR: saved SR images, a model run on the LR images, or the bicubic baseline.

Convention
----------
Images are ``H x W x 3`` RGB; tensors are NCHW float32 in [0, 1]. An SR result is rounded to the HR image's bit
depth (as if saved to PNG) before it is measured, and measured with :func:`realsr_tools.metrics.measure` under one
:class:`~realsr_tools.metrics.Protocol`. Tiles and overlaps are given in LR pixels. The bicubic baseline is
MATLAB's ``imresize`` for integer upscaling (:data:`BICUBIC`), not PyTorch's or OpenCV's bicubic (Keys a = -0.75).
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ConfigError, InputError, OutputExistsError, RealsrError
from .io import IMAGE_EXTENSIONS, read_pixels, to_float, to_integer, write_image
from .manifest import atomic_write_text
from .metrics import Backend, Protocol, aim_score, measure
from .pairs import PairRef, check_scale, infer_scale
from .progress import track

BICUBIC = ("MATLAB imresize bicubic for integer scales: Keys cubic with a = -0.5, half-pixel centres "
           "(x_lr = (x_hr + 0.5) / scale - 0.5), symmetric edge padding, no antialiasing (upscaling), rounded to "
           "the HR bit depth")
SR_ROUNDING = "SR rounded to the HR bit depth (clip to [0, 1], round half to even) before measuring"

# An SR function takes LR pixels (H x W x 3, integer) and the scale and returns the SR image, float32 in [0, 1]
# or integer.
SRFunction = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class ImageScore:
    """One image's PSNR (dB) and SSIM, with its HR size in pixels."""

    id: str
    psnr: float
    ssim: float
    width: int
    height: int


@dataclass(frozen=True)
class ScoreReport:
    """The scores of a set under one protocol; ``failures`` lists ``(id, reason)`` of pairs that could not be
    scored (they are not in the means, and ``count`` says how many were)."""

    protocol: Protocol
    method: dict[str, Any]
    images: tuple[ImageScore, ...]
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def psnr(self) -> float:
        return math.fsum(s.psnr for s in self.images) / self.count if self.images else float("nan")

    @property
    def ssim(self) -> float:
        return math.fsum(s.ssim for s in self.images) / self.count if self.images else float("nan")

    @property
    def score(self) -> float:
        return aim_score(self.psnr, self.ssim)

    def summary(self) -> dict[str, Any]:
        return {"psnr": self.psnr, "ssim": self.ssim, "score": self.score, "count": self.count,
                "score_formula": "AIM 2020: mean PSNR / 50 + (mean SSIM - 0.4) / 0.6",
                "protocol": self.protocol.to_dict() | {"sr_rounding": SR_ROUNDING}, "method": self.method,
                "failed": [{"id": i, "reason": r} for i, r in self.failures]}


# --------------------------------------------------------------------------------------------- scoring


def score_pairs(pairs: Sequence[PairRef], *, sr_fn: SRFunction | None, protocol: Protocol,
                method: dict[str, Any] | None = None, save_dir: Path | None = None, backend: Backend = "auto",
                show_progress: bool = True) -> ScoreReport:
    """Measure every pair; a pair that cannot be read or has the wrong size is recorded in ``failures``.

    Parameters
    ----------
    pairs : LR/HR pairs. With ``sr_fn=None`` the ``lr`` path of each pair already holds the SR image (the
        ``--sr DIR --hr DIR`` form) and must have the HR's size; otherwise the HR must be ``pair.scale`` times the
        LR (inferred from the sizes when ``pair.scale`` is None) and ``sr_fn(lr_pixels, scale)`` must return an
        HR-sized image.
    protocol : channels, crop border and data range of the metrics.
    save_dir : write every SR image as ``<id>.png`` there (16-bit PNG when the HR is 16-bit).
    backend : metric backend (see :func:`realsr_tools.metrics.ssim`).
    """
    images, failures = [], []
    for pair in track(pairs, description="score", enabled=show_progress):
        try:
            images.append(_score_one(pair, sr_fn, protocol, save_dir, backend))
        except RealsrError as exc:
            failures.append((pair.id, str(exc)))
    return ScoreReport(protocol, dict(method or {}), tuple(images), tuple(failures))


def _score_one(pair: PairRef, sr_fn: SRFunction | None, protocol: Protocol, save_dir: Path | None,
               backend: Backend) -> ImageScore:
    hr = read_pixels(pair.hr)
    if sr_fn is None:
        sr = read_pixels(pair.lr)
        if sr.shape != hr.shape:
            raise InputError(f"{pair.id}: SR {pair.lr} is {sr.shape[1]}x{sr.shape[0]} but HR {pair.hr} is "
                             f"{hr.shape[1]}x{hr.shape[0]}")
    else:
        lr = read_pixels(pair.lr)
        scale = pair.scale or infer_scale(hr.shape, lr.shape, hr=pair.hr, lr=pair.lr)
        check_scale(hr.shape, lr.shape, scale, hr=pair.hr, lr=pair.lr)
        sr = sr_fn(lr, scale)
        if sr.shape != hr.shape:
            raise InputError(f"{pair.id}: the SR result is {sr.shape[1]}x{sr.shape[0]}, the HR {hr.shape[1]}x"
                             f"{hr.shape[0]}; the upscaler does not match scale x{scale}")
    bits = 16 if hr.dtype == np.uint16 else 8
    sr = to_integer(sr, bits) if sr.dtype != hr.dtype else sr
    if save_dir is not None:
        write_image(save_dir / f"{pair.id}.png", sr)
    result = measure(hr, sr, data_range=255.0 if bits == 8 else 65535.0, crop_border=protocol.crop_border,
                     channels=protocol.channels, backend=backend)
    return ImageScore(pair.id, result.psnr, result.ssim, hr.shape[1], hr.shape[0])


def sr_hr_pairs(sr_dir: Path, hr_dir: Path) -> list[PairRef]:
    """Pair ``sr_dir`` and ``hr_dir`` by file name (the SR path goes in ``lr``), refusing missing, extra or
    differently sized files with one error that names them."""
    listing = {}
    for folder in (sr_dir, hr_dir):
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder")
        listing[folder] = {p.name: p for p in sorted(folder.iterdir())
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
    sr, hr = listing[sr_dir], listing[hr_dir]
    missing, extra = sorted(set(hr) - set(sr)), sorted(set(sr) - set(hr))
    if missing or extra:
        parts = ([f"missing in {sr_dir}: {', '.join(missing)}"] if missing else []) + \
                ([f"not in {hr_dir}: {', '.join(extra)}"] if extra else [])
        raise InputError("SR and HR folders must hold the same file names; " + "; ".join(parts))
    if not hr:
        raise InputError(f"{hr_dir}: no images")
    mismatched = [f"{name} (SR {_size(sr[name])}, HR {_size(hr[name])})" for name in hr
                  if _size(sr[name]) != _size(hr[name])]
    if mismatched:
        raise InputError(f"SR and HR sizes differ for {len(mismatched)} image(s): {', '.join(mismatched)}")
    return [PairRef(id=Path(name).stem, lr=sr[name], hr=hr[name]) for name in sorted(hr)]


def _size(path: Path) -> str:
    """``WxH`` of an image from its header, upright (EXIF orientations 5-8 swap the sides)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
    except OSError as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    return f"{width}x{height}"


def write_report(report: ScoreReport, out_dir: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``scores.csv`` (one row per image) and ``summary.json`` atomically; refuse to overwrite them."""
    out_dir = Path(out_dir)
    paths = out_dir / "scores.csv", out_dir / "summary.json"
    check_outputs(paths, overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = _io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["id", "psnr", "ssim", "width", "height"])
    for s in report.images:
        writer.writerow([s.id, f"{s.psnr:.6f}", f"{s.ssim:.8f}", s.width, s.height])
    atomic_write_text(paths[0], table.getvalue())
    atomic_write_text(paths[1], json.dumps(report.summary(), indent=2) + "\n")
    return paths


def check_outputs(paths: Sequence[Path], *, overwrite: bool) -> None:
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")


# --------------------------------------------------------------------------------------------- bicubic


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


# --------------------------------------------------------------------------------------------- model inference


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


# --------------------------------------------------------------------------------------------- stage


def run_score(*, sr_dir: Path | None = None, hr_dir: Path | None = None, checkpoint: Path | None = None,
              data: Path | None = None, bicubic: bool = False, scale: int | None = None,
              crop_border: int | None = None, channels: str = "rgb", tile: int | None = None,
              overlap: int | None = None, memory_budget: float | None = None, ensemble: bool = False,
              save_dir: Path | None = None, out_dir: Path | None = None, overwrite: bool = False,
              device: str = "auto", show_progress: bool = True) -> ScoreReport:
    """The ``realsr score`` stage: check the options, build the pairs and the SR function, score, write outputs.

    Exactly one form: ``sr_dir`` + ``hr_dir``; ``checkpoint`` + ``data``; ``bicubic`` + ``data``. ``tile`` is in
    LR pixels (0: whole images; None: the largest tile whose forward pass fits ``memory_budget`` GiB), ``overlap``
    defaults to :func:`exact_overlap` of the model. ``crop_border`` defaults to the scale.
    """
    forms = [sr_dir is not None or hr_dir is not None, checkpoint is not None, bicubic]
    if sum(forms) != 1:
        raise ConfigError("use exactly one form: --sr DIR --hr DIR, --model CHECKPOINT --data SOURCE, or "
                          "--bicubic --data SOURCE")
    if forms[0] and (sr_dir is None or hr_dir is None or data is not None):
        raise ConfigError("--sr and --hr go together (and without --data)")
    if not forms[0] and data is None:
        raise ConfigError(f"{'--model' if checkpoint else '--bicubic'} needs --data SOURCE (a stage output or an "
                          "HR/+LR/ folder)")
    if channels not in ("rgb", "y"):
        raise ConfigError(f"--channels must be rgb or y, got {channels!r}")
    if not forms[1] and (ensemble or tile is not None or overlap is not None or memory_budget is not None):
        raise ConfigError("--tile, --overlap, --memory-budget and --self-ensemble apply to --model only")
    if forms[0] and save_dir is not None:
        raise ConfigError("--save keeps the SR images of --model or --bicubic; with --sr they exist already")
    # Scoring is where a GPU pays off even without a model (SSIM on CUDA): "auto" asks torch for CUDA here, while
    # the metrics' own "auto" never imports torch (align and wash would pay seconds for it).
    device = pick_device(device)
    backend: Backend = "torch" if device == "cuda" else "numpy"

    method: dict[str, Any] = {}
    sr_fn: SRFunction | None = None
    if forms[0]:
        pairs = sr_hr_pairs(Path(sr_dir), Path(hr_dir))
        method = {"form": "sr/hr folders", "sr": str(sr_dir), "hr": str(hr_dir)}
    else:
        from .pairs import open_pairs

        source = open_pairs(Path(data), scale=scale)
        pairs = source.pairs
        if not pairs:
            raise InputError(f"{data}: no usable pairs{f' at scale x{scale}' if scale else ''}")
        method = {"form": "model" if forms[1] else "bicubic", "data": str(data)}
    if forms[1]:
        from .models import load_checkpoint

        loaded = load_checkpoint(Path(checkpoint), scale=scale)
        scale = loaded.scale
        tile, overlap, fit = _plan_tiles(loaded.model, tile, overlap, memory_budget, device)
        sr_fn = model_fn(loaded.model, scale=scale, device=device, tile=tile or None, overlap=overlap,
                         ensemble=ensemble)
        method |= {"checkpoint": str(checkpoint), "model": loaded.name, "options": loaded.options,
                   "device": device, "tile": tile or None, "overlap": overlap, "self_ensemble": ensemble,
                   "largest_tile": None if fit is None else {"tile": fit.tile, "budget_bytes": fit.budget,
                                                              "base_bytes": round(fit.base),
                                                              "bytes_per_lr_pixel": round(fit.per_pixel)}}
    elif bicubic:
        sr_fn = bicubic_sr
        method |= {"upscaler": BICUBIC}
    if not forms[0] and scale is None:
        scale = source.scale or _first_scale(pairs[0])
    if crop_border is None:
        if scale is None:
            raise ConfigError("--sr/--hr folders do not say the scale: pass --scale (the crop border defaults to it) "
                              "or --crop-border")
        crop_border = scale
    method["scale"] = scale
    protocol = Protocol(channels=channels, crop_border=crop_border)  # type: ignore[arg-type]
    if out_dir is not None:
        check_outputs([Path(out_dir) / "scores.csv", Path(out_dir) / "summary.json"], overwrite=overwrite)
    if save_dir is not None:
        check_outputs([Path(save_dir) / f"{p.id}.png" for p in pairs], overwrite=overwrite)
    report = score_pairs(pairs, sr_fn=sr_fn, protocol=protocol, method=method, save_dir=save_dir,
                         backend=backend, show_progress=show_progress)
    if out_dir is not None:
        write_report(report, Path(out_dir), overwrite=overwrite)
    return report


def _first_scale(pair: PairRef) -> int:
    hr, lr = read_pixels(pair.hr), read_pixels(pair.lr)
    return infer_scale(hr.shape, lr.shape, hr=pair.hr, lr=pair.lr)


def _plan_tiles(model, tile: int | None, overlap: int | None, memory_budget: float | None,
                device: str) -> tuple[int, int, TileFit | None]:
    if overlap is None:
        overlap = exact_overlap(model) or 32
    if tile is not None:
        if tile < 0 or 0 < tile < 2 * overlap:
            raise ConfigError(f"--tile must be 0 (whole image) or at least twice the overlap ({overlap} LR pixels; "
                              f"lower --overlap), got {tile}")
        return tile, overlap, None
    budget = int(memory_budget * 2**30) if memory_budget is not None else default_budget(device)
    fit = largest_tile(model.to(device), budget=budget, device=device)
    return fit.tile, min(overlap, fit.tile // 2), fit
