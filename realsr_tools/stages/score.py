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
import functools
import io as _io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, InputError, OutputLocationError, RealsrError
from ..inference import SRFunction, TileFit, bicubic_sr, default_budget, exact_overlap, largest_tile, model_fn, pick_device
from ..imaging import IMAGE_EXTENSIONS, read_pixels, to_integer, write_image
from ..pipeline.manifest import atomic_write_text
from ..metrics import Backend, Protocol, aim_score, measure
from ..pipeline.pairs import PairRef, check_scale, infer_scale
from ..pipeline.runner import Runner

BICUBIC = ("MATLAB imresize bicubic for integer scales: Keys cubic with a = -0.5, half-pixel centres "
           "(x_lr = (x_hr + 0.5) / scale - 0.5), symmetric edge padding, no antialiasing (upscaling), rounded to "
           "the HR bit depth")
SR_ROUNDING = "SR rounded to the HR bit depth (clip to [0, 1], round half to even) before measuring"

# An SR function takes LR pixels (H x W x 3, integer) and the scale and returns the SR image, float32 in [0, 1]
# or integer.


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
                show_progress: bool = True, runner: Runner | None = None) -> ScoreReport:
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
    runner : where the pairs are scored (:mod:`realsr_tools.pipeline.runner`; default: in this process). Other
        runners need a picklable ``sr_fn`` (a module-level function, or :class:`ModelSR` for a checkpoint).
    """
    from ..pipeline.runner import SerialRunner, TaskLost, run_items

    results: list[ImageScore | tuple[str, str] | None] = [None] * len(pairs)
    task = functools.partial(_score_task, sr_fn=sr_fn, protocol=protocol, save_dir=save_dir, backend=backend)
    for index, result in run_items(runner or SerialRunner(), task, pairs, name="score",
                                   labels=[pair.id for pair in pairs], show_progress=show_progress):
        results[index] = (pairs[index].id, result.reason) if isinstance(result, TaskLost) else result
    if save_dir is not None:
        from ..imaging.files import remove_partials

        remove_partials(save_dir)  # left by a worker that died while writing (its pair was then redone)
    images = [r for r in results if isinstance(r, ImageScore)]
    failures = [r for r in results if isinstance(r, tuple)]
    return ScoreReport(protocol, dict(method or {}), tuple(images), tuple(failures))


def _score_task(pair: PairRef, *, sr_fn: SRFunction | None, protocol: Protocol, save_dir: Path | None,
                backend: Backend) -> ImageScore | tuple[str, str]:
    """One pair's score, or ``(id, reason)`` when it cannot be scored; runs on a worker."""
    try:
        return _score_one(pair, sr_fn, protocol, save_dir, backend)
    except OutputLocationError:
        raise  # a full disk or read-only --save stops the run; it is not this image's failure
    except RealsrError as exc:
        return pair.id, str(exc)


@dataclass(frozen=True)
class ModelSR:
    """A checkpoint as a picklable SR function: each worker process loads it once, on first use (see
    :func:`realsr_tools.inference.model_fn` for the arguments)."""

    checkpoint: Path
    scale: int | None
    device: str
    tile: int | None
    overlap: int
    ensemble: bool

    def __call__(self, lr: np.ndarray, scale: int) -> np.ndarray:
        upscale = _MODELS.get(self)
        if upscale is None:
            import multiprocessing

            import torch

            from ..models import load_checkpoint

            if multiprocessing.parent_process() is not None:  # a worker process: parallelism comes from the workers
                torch.set_num_threads(1)
            loaded = load_checkpoint(self.checkpoint, scale=self.scale)
            upscale = _MODELS[self] = model_fn(loaded.model, scale=loaded.scale, device=self.device, tile=self.tile,
                                               overlap=self.overlap, ensemble=self.ensemble)
        return upscale(lr, scale)


_MODELS: dict[ModelSR, SRFunction] = {}  # loaded models of this process


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


def write_report(report: ScoreReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``scores.csv`` (one row per image) and ``summary.json`` atomically (replacing them: :func:`run_score`
    refuses existing ones without ``--overwrite`` before any work, :mod:`realsr_tools.pipeline.resume`)."""
    out_dir = Path(out_dir)
    paths = report_paths(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = _io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["id", "psnr", "ssim", "width", "height"])
    for s in report.images:
        writer.writerow([s.id, f"{s.psnr:.6f}", f"{s.ssim:.8f}", s.width, s.height])
    atomic_write_text(paths[0], table.getvalue())
    atomic_write_text(paths[1], json.dumps(report.summary(), indent=2) + "\n")
    return paths


def report_paths(out_dir: Path) -> tuple[Path, Path]:
    """The files :func:`write_report` writes in ``out_dir``."""
    return out_dir / "scores.csv", out_dir / "summary.json"


# --------------------------------------------------------------------------------------------- bicubic


# --------------------------------------------------------------------------------------------- model inference


# --------------------------------------------------------------------------------------------- stage


def run_score(*, sr_dir: Path | None = None, hr_dir: Path | None = None, checkpoint: Path | None = None,
              data: Path | None = None, bicubic: bool = False, scale: int | None = None,
              crop_border: int | None = None, channels: str = "rgb", tile: int | None = None,
              overlap: int | None = None, memory_budget: float | None = None, ensemble: bool = False,
              save_dir: Path | None = None, out_dir: Path | None = None, overwrite: bool = False,
              device: str = "auto", show_progress: bool = True, workers: int | None = None,
              scheduler: str | None = None, scheduler_file: Path | str | None = None,
              gpus_per_task: float | None = None) -> ScoreReport:
    """The ``realsr score`` stage: check the options, build the pairs and the SR function, score, write outputs.

    Exactly one form: ``sr_dir`` + ``hr_dir``; ``checkpoint`` + ``data``; ``bicubic`` + ``data``. ``tile`` is in
    LR pixels (0: whole images; None: the largest tile whose forward pass fits ``memory_budget`` GiB), ``overlap``
    defaults to :func:`exact_overlap` of the model. ``crop_border`` defaults to the scale.

    ``workers`` local processes score pairs in parallel (default: every usable CPU; with ``checkpoint``: one, the
    model runs in this process on the device's own threads), or the workers of the Dask cluster at ``scheduler`` /
    ``scheduler_file``. ``gpus_per_task`` asks each Dask task for that many ``GPU`` worker resources (``dask worker
    --resources GPU=1``); ``device`` then defaults to ``cuda``, and ``tile`` must be given when this process has no
    GPU to fit it on.
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
    if gpus_per_task is not None:
        if gpus_per_task <= 0:
            raise ConfigError(f"--gpus-per-task must be positive, got {gpus_per_task}")
        if not (scheduler or scheduler_file):
            raise ConfigError("--gpus-per-task needs a Dask cluster (--scheduler or --scheduler-file)")
        device = "cuda" if device == "auto" else device
    else:
        device = pick_device(device)
    backend: Backend = "torch" if device == "cuda" else "numpy"

    method: dict[str, Any] = {}
    sr_fn: SRFunction | None = None
    if forms[0]:
        pairs = sr_hr_pairs(Path(sr_dir), Path(hr_dir))
        method = {"form": "sr/hr folders", "sr": str(sr_dir), "hr": str(hr_dir)}
    else:
        from ..pipeline.pairs import open_pairs

        source = open_pairs(Path(data), scale=scale)
        source.one_scale()
        pairs = source.pairs
        if not pairs:
            raise InputError(f"{data}: no usable pairs{f' at scale x{scale}' if scale else ''}")
        method = {"form": "model" if forms[1] else "bicubic", "data": str(data)}
    if forms[1]:
        from ..models import load_checkpoint

        loaded = load_checkpoint(Path(checkpoint), scale=scale)
        scale = loaded.scale
        if tile is None and gpus_per_task is not None and device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("--gpus-per-task: this process has no GPU to fit the largest tile on; pass --tile")
        tile, overlap, fit = _plan_tiles(loaded.model, tile, overlap, memory_budget, device)
        sr_fn = ModelSR(Path(checkpoint).resolve(), scale, device, tile or None, overlap, ensemble)
        _MODELS[sr_fn] = model_fn(loaded.model, scale=scale, device=device, tile=tile or None, overlap=overlap,
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
    from contextlib import ExitStack

    from ..pipeline.output import output_lock
    from ..pipeline.resume import prepare_stage_output
    from ..pipeline.runner import open_runner

    if workers is None and checkpoint is not None and not (scheduler or scheduler_file):
        workers = 1
    outputs: dict[Path, list[Path]] = {}  # folder -> the files this run writes there
    if out_dir is not None:
        outputs.setdefault(Path(out_dir), []).extend(report_paths(Path(out_dir)))
    if save_dir is not None:
        outputs.setdefault(Path(save_dir), []).extend(Path(save_dir) / f"{p.id}.png" for p in pairs)
    with ExitStack() as held:  # --out and --save: checked and held for the run (once when they are one folder)
        for folder in {f.resolve(): f for f in outputs}.values():
            held.enter_context(output_lock(folder))
        for folder, files in outputs.items():
            prepare_stage_output(folder, "score", policy="refuse", files=files, overwrite=overwrite)
        with open_runner(workers, scheduler=scheduler, scheduler_file=scheduler_file,
                         resources=None if gpus_per_task is None else {"GPU": gpus_per_task}) as runner:
            report = score_pairs(pairs, sr_fn=sr_fn, protocol=protocol, method=method, save_dir=save_dir,
                                 backend=backend, show_progress=show_progress, runner=runner)
        _MODELS.pop(sr_fn, None)  # type: ignore[call-overload]
        if out_dir is not None:
            write_report(report, Path(out_dir))
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
