"""``realsr train``: train a bundled super-resolution model on LR/HR pairs and keep the best checkpoint.

Recipe (BasicSR-style, for EDSR-baseline): random LR patches with their HR patches (:mod:`realsr_tools.data`),
dihedral augmentation, L1 loss (plus an optional ``1 - SSIM`` term), Adam (betas 0.9, 0.99), a linear warm-up then
a cosine decay of the learning rate to zero, gradient-norm clipping, and an exponential moving average (EMA) of the
weights that is what gets validated and saved. On CUDA: bf16 autocast, channels_last tensors, batches built by a
background thread into pinned memory and copied asynchronously, optional ``torch.compile``.

Distributed training uses ``torch.distributed`` (DDP) when launched by ``torchrun``: NCCL on CUDA, gloo on CPU.
``batch`` is the global batch, split evenly over the processes; every batch is a pure function of ``(seed, step)``
(see :mod:`realsr_tools.data`), so N processes take the same steps on the same patches as one process.

Run folder
----------
``config.json`` (resolved configuration, split, planned schedule), ``log.jsonl`` (one JSON object per log or
validation event), ``last.pt`` (EMA weights plus the full training state under ``"train_state"``), ``best.pt`` (EMA
weights with the best validation PSNR), ``curve.png`` (training loss and validation PSNR). Both checkpoints are
:func:`realsr_tools.models.checkpoint_dict` files that :func:`realsr_tools.models.load_checkpoint` reads with
``weights_only=True``; they are written atomically, so a killed run leaves the previous one intact.

Validation protocol (as BasicSR and ``realsr score``): full-image (or tiled) fp32 inference, output clipped and
rounded to the HR's integer type, PSNR over RGB with ``crop_border = scale``, averaged over validation pairs.
"""

from __future__ import annotations

import copy
import json
import math
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from .errors import ConfigError, OutputExistsError

CONFIG_NAME = "config.json"
LOG_NAME = "log.jsonl"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
CURVE_NAME = "curve.png"
# Options that change what is learned: a resumed run must use the same values as the run it continues.
RESUME_KEYS = ("source", "val", "val_fraction", "scale", "model", "model_options", "steps", "batch", "patch", "lr",
               "warmup", "ema_decay", "grad_clip", "ssim_weight", "seed", "augment", "val_every")
# Steps timed (after one untimed step) to plan a --max-minutes schedule; at least this many and 2 seconds.
PLAN_MIN_STEPS = 2
PLAN_MIN_SECONDS = 2.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``realsr train`` needs, validated on construction (before any data is read).

    Parameters
    ----------
    source : a crop or wash output (its folder or ``manifest.jsonl``) or a folder with ``HR/`` and ``LR/``.
    out : run folder (created).
    scale : HR/LR factor (2, 3 or 4); ``None`` takes it from the source's manifest or image sizes.
    model : registered model name (:func:`realsr_tools.models.list_models`); ``model_options`` override its
        defaults (``None`` values keep them).
    val : separate validation pairs; ``None`` holds out ``val_fraction`` of ``source`` deterministically.
    steps : optimizer steps; with ``max_minutes`` an upper bound on the planned steps.
    batch : global batch (patches per step over all processes); patch : LR patch side in pixels.
    lr : peak learning rate; warmup : linear warm-up steps (``None``: 2 % of the steps, at most 1000).
    ema_decay : EMA decay (ramped up as ``min(decay, (1 + step) / (10 + step))`` so short runs are not dominated
        by the initial weights); grad_clip : max global gradient norm (0 disables); ssim_weight : weight of the
        ``1 - SSIM`` loss term (0 disables).
    val_every : validate (and save ``last.pt``) every this many steps; ``None``: ten times per run (with
        ``max_minutes``: as many as fit in a tenth of the time, at most ten).
    log_every : log the mean loss every this many steps. val_tile : LR tile side for validation inference
        (``None``: whole images).
    max_minutes : wall-time budget of the whole call; the schedule is planned to fit it (see ``docs/train.md``).
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``. compile : wrap the model in
        ``torch.compile``. prefetch : batches prepared ahead by a background thread (CUDA only).
    resume : continue from ``out/last.pt``; overwrite : start over in a run folder that holds a run.
    """

    source: Path
    out: Path
    scale: int | None = None
    model: str = "edsr"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    val: Path | None = None
    val_fraction: float = 0.1
    steps: int = 300_000
    batch: int = 16
    patch: int = 48
    lr: float = 2e-4
    warmup: int | None = None
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    ssim_weight: float = 0.0
    augment: bool = True
    seed: int = 0
    val_every: int | None = None
    log_every: int = 100
    val_tile: int | None = None
    max_minutes: float | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    prefetch: int = 4
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        object.__setattr__(self, "out", Path(self.out))
        if self.val is not None:
            object.__setattr__(self, "val", Path(self.val))
        object.__setattr__(self, "model_options", {k: v for k, v in dict(self.model_options).items()
                                                   if v is not None})
        problems = []
        if self.scale not in (None, 2, 3, 4):
            problems.append(f"--scale must be 2, 3 or 4, got {self.scale}")
        for name, minimum in (("steps", 1), ("batch", 1), ("patch", 8), ("log_every", 1), ("prefetch", 0)):
            if getattr(self, name) < minimum:
                problems.append(f"--{name.replace('_', '-')} must be at least {minimum}, got {getattr(self, name)}")
        for name in ("warmup", "val_every", "val_tile"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "warmup" else 1):
                problems.append(f"--{name.replace('_', '-')} must be at least {0 if name == 'warmup' else 1}, "
                                f"got {value}")
        if not self.lr > 0:
            problems.append(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip < 0 or self.ssim_weight < 0:
            problems.append("--grad-clip and --ssim-weight must be 0 (off) or positive")
        if not 0 < self.val_fraction < 1:
            problems.append(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            problems.append(f"--max-minutes must be positive, got {self.max_minutes}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.resume and self.overwrite:
            problems.append("--resume continues a run and --overwrite discards it; pass one of them")
        if problems:
            raise ConfigError("; ".join(problems))
        from .models import model_options

        model_options(self.model, **self.model_options)  # unknown model or option: ConfigError now, not later

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TrainResult:
    """What a training call did. PSNR values are validation means in dB (RGB, ``crop_border = scale``)."""

    run_dir: Path
    steps: int
    planned_steps: int
    best_psnr: float
    best_step: int
    bicubic_psnr: float
    last_psnr: float
    seconds: float
    patches_per_second: float
    stopped_early: bool
    device: str
    world_size: int
    rank: int
    train_pairs: int
    val_pairs: int

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / BEST_NAME

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / LAST_NAME


# --------------------------------------------------------------------------------------------- pure helpers


def learning_rate(step: int, *, peak: float, warmup: int, total: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``peak``, then cosine decay to 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay used after optimizer step ``step``: ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1 + step) / (10 + step))


def ssim_loss(sr, hr):
    """``1 - SSIM`` of NCHW tensors in [0, 1] (11x11 Gaussian, sigma 1.5, per channel, valid region), differentiable."""
    import torch
    import torch.nn.functional as F

    from .metrics import SSIM_K1, SSIM_K2, SSIM_RADIUS, SSIM_SIGMA

    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=sr.dtype, device=sr.device)
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(sr.shape[1], 1, -1, -1)

    def blur(a):
        return F.conv2d(a, window, groups=a.shape[1])

    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = blur(sr), blur(hr)
    var_x = blur(sr * sr) - mu_x**2
    var_y = blur(hr * hr) - mu_y**2
    cov = blur(sr * hr) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return 1 - ssim_map.mean()


def upscale(model, image: np.ndarray, *, scale: int, device: str = "cpu", tile: int | None = None,
            overlap: int | None = None) -> np.ndarray:
    """Super-resolve one ``H x W x 3`` float32 [0, 1] LR image to ``sH x sW x 3`` float32 (not clipped).

    ``tile`` bounds memory through :func:`realsr_tools.score.tiled_sr` (overlapping tiles, cross-faded); the
    default ``overlap`` makes tiled equal whole-image inference where the tile allows it. Runs in fp32 without
    gradients; the model's train/eval mode is kept.
    """
    import torch

    from .score import exact_overlap, tiled_sr

    if tile is not None and overlap is None:
        overlap = min(exact_overlap(model) or 32, tile // 2)

    batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
    with torch.no_grad():
        sr = tiled_sr(model, batch, scale=scale, tile=tile, overlap=overlap or 0)
    return sr[0].float().permute(1, 2, 0).cpu().numpy()


def validation_psnr(model, pairs, *, scale: int, device: str, tile: int | None) -> float:
    """Mean PSNR (dB) over ``pairs`` (:class:`realsr_tools.data.CachedPair`): RGB, ``crop_border = scale``, output
    rounded to the HR's integer type (the BasicSR / ``realsr score`` protocol)."""
    from .io import to_float, to_integer
    from .metrics import psnr

    values = []
    for pair in pairs:
        sr = upscale(model, to_float(pair.lr), scale=scale, device=device, tile=tile)
        bits = 8 if pair.hr.dtype == np.uint8 else 16
        values.append(psnr(pair.hr, to_integer(sr, bits), data_range=2.0**bits - 1, crop_border=scale))
    return float(np.mean(values, dtype=np.float64))


class _Bicubic:
    """The bicubic baseline as a model (PyTorch bicubic, a = -0.75, like OpenCV's INTER_CUBIC)."""

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def __call__(self, lr):
        import torch.nn.functional as F

        return F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)


# --------------------------------------------------------------------------------------------- the step


class TrainStep:
    """One optimizer step of the recipe on a batch already on the device; shared by training and the benchmark.

    ``model`` is what runs the forward pass (possibly DDP-wrapped or compiled); ``module`` the plain module whose
    parameters it updates; ``ema`` a copy of ``module`` holding the moving average. ``__call__`` returns the loss as
    a 0-d tensor without synchronising with the device.
    """

    def __init__(self, model, module, ema, optimizer, *, amp: bool, grad_clip: float, ssim_weight: float,
                 ema_decay: float) -> None:
        self.model, self.module, self.ema, self.optimizer = model, module, ema, optimizer
        self.amp, self.grad_clip, self.ssim_weight, self.ema_decay = amp, grad_clip, ssim_weight, ema_decay
        self._params = [p for p in module.parameters()]
        self._ema_params = [p for p in ema.parameters()]

    def __call__(self, lr, hr, *, step: int, learning_rate: float):
        import contextlib

        import torch

        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with autocast:
            sr = self.model(lr)
        sr = sr.float()
        loss = (sr - hr).abs().mean()
        if self.ssim_weight:
            loss = loss + self.ssim_weight * ssim_loss(sr, hr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip, foreach=True)
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._ema_params, self._params, 1.0 - ema_decay_at(step, self.ema_decay))
        return loss.detach()


def host_tensors(batch, *, pin: bool):
    """A numpy :class:`~realsr_tools.data.Batch` as host tensors ``(lr, hr, peak)``, pinned if ``pin``.

    uint8 stays uint8 (a quarter of the float bytes travel to the device, converted there); uint16, which has few
    torch kernels, becomes float32 here. The NHWC memory of the batch makes the NCHW tensors channels_last.
    """
    import torch

    peak = 255.0 if batch.lr.dtype == np.uint8 else 65535.0
    out = []
    for array in (batch.lr, batch.hr):
        tensor = torch.from_numpy(array.astype(np.float32) if array.dtype == np.uint16 else array)
        out.append(tensor.pin_memory() if pin else tensor)
    return out[0], out[1], peak


def to_device(batch, device, *, channels_last: bool):
    """A batch (numpy :class:`~realsr_tools.data.Batch` or :func:`host_tensors` output) as float32 [0, 1]
    tensors on ``device``, copied asynchronously from pinned memory on CUDA."""
    import torch

    lr, hr, peak = host_tensors(batch, pin=False) if hasattr(batch, "lr") else batch
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return tuple(t.to(device, non_blocking=True).float().mul_(1.0 / peak).contiguous(memory_format=memory_format)
                 for t in (lr, hr))


class _Prefetcher:
    """Background thread producing the pinned host batches of steps ``start, start + 1, ...`` into a bounded queue."""

    def __init__(self, sampler, *, start: int, depth: int, pin: bool = True, **batch_args) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._pin = pin
        self._thread = threading.Thread(target=self._run, args=(sampler, start, batch_args), daemon=True)
        self._thread.start()

    def _run(self, sampler, step, batch_args) -> None:
        while not self._stop.is_set():
            try:
                item = host_tensors(sampler.batch(step=step, **batch_args), pin=self._pin)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            step += 1

    def get(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------------- the stage


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(use_cuda: bool) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, False)
    if use_cuda:
        import torch

        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, True)


def _broadcast(value: float, dist_info: _Dist, device) -> float:
    """Rank 0's ``value`` on every process."""
    if dist_info.world == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, 0)
    return float(tensor.item())


def _max_over_ranks(value: float, dist_info: _Dist, device) -> float:
    if dist_info.world == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def _barrier(dist_info: _Dist) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    from .io import atomic_output

    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _load_split(config: TrainConfig):
    """Open the sources, split off validation pairs and decode everything: (scale, train, val, info)."""
    from .data import load_pair, split_validation
    from .pairs import infer_scale, open_pairs

    source = open_pairs(config.source, scale=config.scale)
    if not source.pairs:
        raise ConfigError(f"{config.source}: no usable pairs" + (f" at x{config.scale}" if config.scale else ""))
    scale = config.scale or source.scale
    if scale is None:
        from .io import read_pixels

        first = source.pairs[0]
        scale = infer_scale(read_pixels(first.hr).shape, read_pixels(first.lr).shape, hr=first.hr, lr=first.lr)
        if scale not in (2, 3, 4):
            raise ConfigError(f"{first.hr}: the pairs are x{scale}; realsr trains x2, x3 and x4 models")
    if config.val is None:
        train_ids, val_ids = split_validation([p.id for p in source.pairs], fraction=config.val_fraction)
        by_id = {p.id: p for p in source.pairs}
        train_refs, val_refs = [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
    else:
        train_refs = source.pairs
        val_refs = open_pairs(config.val, scale=scale).pairs
        if not val_refs:
            raise ConfigError(f"{config.val}: no usable validation pairs at x{scale}")
    train = [load_pair(p, scale=scale) for p in train_refs]
    val = [load_pair(p, scale=scale) for p in val_refs]
    info = {"source_kind": source.kind, "train_ids": [p.id for p in train], "val_ids": [p.id for p in val],
            "cached_mb": round(sum(p.nbytes for p in train + val) / 2**20, 1)}
    if source.manifest is not None:
        from .manifest import file_sha256

        info["upstream_manifest_sha256"] = file_sha256(source.manifest.path)
    return scale, train, val, info


def _prepare_run_dir(config: TrainConfig) -> None:
    out = config.out
    ours = [out / n for n in (CONFIG_NAME, LOG_NAME, LAST_NAME, BEST_NAME, CURVE_NAME)]
    if config.resume:
        if not (out / LAST_NAME).is_file():
            raise ConfigError(f"{out}: no {LAST_NAME} to resume from; start the run without --resume")
        return
    if any(p.exists() for p in ours):
        if not config.overwrite:
            raise OutputExistsError(f"{out}: already holds a training run; pass --resume to continue it or "
                                    "--overwrite to start over")
        for p in ours:
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _check_resume_config(config: TrainConfig, saved: Mapping[str, Any]) -> None:
    current = config.to_dict()
    changed = [f"{k} ({saved.get(k)!r} -> {current[k]!r})" for k in RESUME_KEYS
               if json.loads(json.dumps(current[k])) != saved.get(k)]
    if changed:
        raise ConfigError(f"{config.out / LAST_NAME}: --resume needs the options of the run it continues; changed: "
                          f"{', '.join(changed)}")


def _parse_event(line: str) -> dict[str, Any] | None:
    """One log line, or None for a line a killed run left half-written."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class _Log:
    """The run's JSONL log (rank 0 writes); on resume, events after the resumed step are dropped."""

    def __init__(self, path: Path, *, enabled: bool, keep_until: int | None) -> None:
        self.path, self.enabled = path, enabled
        self.events: list[dict[str, Any]] = []
        if enabled and keep_until is not None and path.is_file():
            self.events = [e for e in map(_parse_event, path.read_text().splitlines())
                           if e is not None and e.get("step", keep_until + 1) <= keep_until]
        if enabled:
            from .manifest import atomic_write_text

            atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in self.events))

    def write(self, **event: Any) -> None:
        if not self.enabled:
            return
        self.events.append(event)
        with open(self.path, "a") as stream:
            stream.write(json.dumps(event) + "\n")


def plot_curve(events: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Training loss and validation PSNR (with the bicubic level) against step, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [e for e in events if e["kind"] == "train"]
    val = [e for e in events if e["kind"] == "val"]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    ax_loss.plot([e["step"] for e in train], [e["loss"] for e in train], color="tab:blue")
    ax_loss.set(xlabel="step", ylabel="training loss (mean since last point)", title="loss")
    ax_psnr.plot([e["step"] for e in val], [e["psnr"] for e in val], "o-", color="tab:red", label="model (EMA)")
    if val:
        ax_psnr.axhline(val[0]["bicubic_psnr"], color="grey", linestyle="--", label="bicubic")
        ax_psnr.legend()
    ax_psnr.set(xlabel="step", ylabel="PSNR (dB, RGB)", title="validation PSNR")
    from .io import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def run_training(config: TrainConfig, *, show_progress: bool = True) -> TrainResult:
    """Train ``config.model`` on ``config.source`` into ``config.out`` (see the module docstring).

    Launched by ``torchrun`` (``WORLD_SIZE > 1``), every process calls this with the same config; rank 0 validates,
    logs and writes files. Raises :class:`~realsr_tools.errors.RealsrError` subclasses for unusable input.
    """
    import torch

    started = time.monotonic()
    deadline = started + config.max_minutes * 60 if config.max_minutes else None
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but PyTorch sees no CUDA device; use --device cpu")
    dist_info = _init_distributed(use_cuda)
    try:
        return _train(config, dist_info, use_cuda, started, deadline, show_progress)
    finally:
        if dist_info.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(config: TrainConfig, dist_info: _Dist, use_cuda: bool, started: float, deadline: float | None,
           show_progress: bool) -> TrainResult:
    import torch

    from .data import PatchSampler
    from .models import checkpoint_dict, create_model, model_options

    if config.batch % dist_info.world:
        raise ConfigError(f"--batch {config.batch} does not split evenly over {dist_info.world} processes")
    device = torch.device(f"cuda:{dist_info.local_rank}" if use_cuda else "cpu")
    if not use_cuda and dist_info.world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if dist_info.main:
        _prepare_run_dir(config)
    _barrier(dist_info)
    resume_state = None
    if config.resume:
        resume_state = torch.load(config.out / LAST_NAME, map_location="cpu", weights_only=True)
        _check_resume_config(config, resume_state["train_state"]["config"])

    scale, train_pairs, val_pairs, split_info = _load_split(config)
    sampler = PatchSampler(train_pairs, scale=scale, patch=config.patch, augment=config.augment)
    options = model_options(config.model, **config.model_options)
    torch.manual_seed(config.seed)
    module = create_model(config.model, scale, **options).to(device)
    channels_last = use_cuda
    if use_cuda:
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick the fastest kernels
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(module).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr, betas=(0.9, 0.99))
    model = module
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(module, device_ids=[dist_info.local_rank] if use_cuda else None)
    if config.compile:
        model = torch.compile(model)
    step_fn = TrainStep(model, module, ema, optimizer, amp=use_cuda, grad_clip=config.grad_clip,
                        ssim_weight=config.ssim_weight, ema_decay=config.ema_decay)
    batch_args = dict(seed=config.seed, size=config.batch, rank=dist_info.rank, world=dist_info.world)

    step, total, best_psnr, best_step, elapsed_before, val_seconds = 0, None, -math.inf, -1, 0.0, 0.0
    if resume_state is not None:
        state = resume_state["train_state"]
        module.load_state_dict(state["model"])
        ema.load_state_dict(resume_state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, total = int(state["step"]), int(state["total_steps"])
        best_psnr, best_step = float(state["best_psnr"]), int(state["best_step"])
        elapsed_before, val_seconds = float(state["elapsed_s"]), float(state["val_seconds"])
    log = _Log(config.out / LOG_NAME, enabled=dist_info.main, keep_until=step if resume_state is not None else None)

    def validate() -> tuple[float, float]:
        began = time.monotonic()
        value = validation_psnr(ema, val_pairs, scale=scale, device=str(device), tile=config.val_tile) \
            if dist_info.main else 0.0
        return value, time.monotonic() - began

    bicubic_psnr = validation_psnr(_Bicubic(scale), val_pairs, scale=scale, device="cpu", tile=config.val_tile) \
        if dist_info.main else 0.0
    if resume_state is None:
        psnr0, val_seconds = validate()
        val_seconds = _broadcast(val_seconds, dist_info, device)
        log.write(kind="val", step=0, psnr=psnr0, bicubic_psnr=bicubic_psnr)
        if dist_info.main:
            best_psnr, best_step = psnr0, 0

    if total is None:
        total = config.steps
        if deadline is not None:
            seconds_per_step = _time_steps(step_fn, sampler, batch_args, device, channels_last, config,
                                           dist_info)
            seconds_per_step = _max_over_ranks(seconds_per_step, dist_info, device)
            total, val_every = _plan_steps(config, remaining=deadline - time.monotonic(),
                                           seconds_per_step=seconds_per_step, val_seconds=val_seconds)
            total, val_every = int(_broadcast(total, dist_info, device)), int(_broadcast(val_every, dist_info, device))
        else:
            val_every = config.val_every or max(1, math.ceil(total / 10))
        warmup = config.warmup if config.warmup is not None else min(1000, total // 50)
    else:
        val_every, warmup = int(resume_state["train_state"]["val_every"]), int(resume_state["train_state"]["warmup"])
    if dist_info.main and resume_state is None:
        resolved = {"config": config.to_dict(), "scale": scale, "model_options": options, "total_steps": total,
                    "warmup": warmup, "val_every": val_every, "world_size": dist_info.world,
                    "device": str(device), "torch": torch.__version__, **split_info}
        from .manifest import atomic_write_text

        atomic_write_text(config.out / CONFIG_NAME, json.dumps(resolved, indent=2) + "\n")

    def save(current_psnr: float, is_best: bool) -> None:
        meta = {"step": step, "total_steps": total, "val_psnr": current_psnr, "bicubic_psnr": bicubic_psnr,
                "model_options": options, "patch": config.patch, "batch": config.batch, "source": str(config.source)}
        ckpt = checkpoint_dict(ema, name=config.model, scale=scale, options=options, meta=meta,
                               state_dict={k: v.detach().cpu() for k, v in ema.state_dict().items()})
        if is_best:
            _atomic_save(ckpt, config.out / BEST_NAME)
        ckpt["train_state"] = {
            "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "optimizer": optimizer.state_dict(), "step": step, "total_steps": total, "val_every": val_every,
            "warmup": warmup, "best_psnr": best_psnr, "best_step": best_step, "val_seconds": val_seconds,
            "torch_rng": torch.get_rng_state(),
            "elapsed_s": elapsed_before + time.monotonic() - started, "config": config.to_dict(),
        }
        _atomic_save(ckpt, config.out / LAST_NAME)

    def record_validation(current_psnr: float) -> None:
        """Log a validation and save last.pt, and best.pt when it improved (files on rank 0 only)."""
        nonlocal best_psnr, best_step
        log.write(kind="val", step=step, psnr=current_psnr, bicubic_psnr=bicubic_psnr)
        if dist_info.main:
            improved = current_psnr > best_psnr
            if improved:
                best_psnr, best_step = current_psnr, step
            save(current_psnr, is_best=improved)

    if dist_info.main and resume_state is None:
        save(best_psnr, is_best=True)
    prefetch = _Prefetcher(sampler, start=step, depth=config.prefetch, **batch_args) if use_cuda else None
    progress = _progress(show_progress and dist_info.main, total)
    loss_sum = torch.zeros((), device=device)
    loss_count, last_log, last_log_step, stopped_early = 0, time.monotonic(), step, False
    loop_started, first_step, val_time = time.monotonic(), step, 0.0
    last_psnr = best_psnr
    try:
        task = progress.add_task("train", total=total, completed=step, loss=float("nan"), speed=0.0) \
            if progress else None
        while step < total:
            batch = prefetch.get() if prefetch else sampler.batch(step=step, **batch_args)
            lr_t, hr_t = to_device(batch, device, channels_last=channels_last)
            loss_sum += step_fn(lr_t, hr_t, step=step,
                                learning_rate=learning_rate(step, peak=config.lr, warmup=warmup, total=total))
            loss_count += 1
            step += 1
            stop = False
            if deadline is not None and step < total and (dist_info.world == 1 or step % 10 == 0):
                # re-plan from the measured throughput (validation excluded), so the schedule follows the machine
                now = time.monotonic()
                seconds_per_step = (now - loop_started - val_time) / (step - first_step)
                planned = _replan(config, step=step, total=total, remaining=deadline - now, val_every=val_every,
                                  seconds_per_step=seconds_per_step, val_seconds=val_seconds,
                                  measured_steps=step - first_step)
                total = int(_broadcast(planned, dist_info, device))
                stop = step >= total
            if progress:
                progress.update(task, completed=step, total=total)
            if stop or step % config.log_every == 0 or step % val_every == 0 or step == total:
                if dist_info.world > 1:
                    import torch.distributed as dist

                    dist.all_reduce(loss_sum)
                    loss_sum /= dist_info.world
                mean_loss = float(loss_sum.item()) / loss_count
                now = time.monotonic()
                speed = (step - last_log_step) / max(now - last_log, 1e-9)
                log.write(kind="train", step=step, loss=mean_loss,
                          lr=learning_rate(step - 1, peak=config.lr, warmup=warmup, total=total),
                          steps_per_s=speed, patches_per_s=speed * config.batch,
                          elapsed_s=elapsed_before + now - started)
                if progress:
                    progress.update(task, loss=mean_loss, speed=speed)
                loss_sum.zero_()
                loss_count, last_log, last_log_step = 0, now, step
            if stop:
                stopped_early = True
                break
            if step % val_every == 0 and step < total:
                began = time.monotonic()
                last_psnr, seconds = validate()
                val_seconds = max(val_seconds, _broadcast(seconds, dist_info, device))
                record_validation(last_psnr)
                _barrier(dist_info)
                last_log = time.monotonic()  # throughput excludes validation and saving
                val_time += last_log - began
    finally:
        if prefetch:
            prefetch.close()
        if progress:
            progress.stop()
    last_psnr, _ = validate()
    record_validation(last_psnr)
    if dist_info.main:
        plot_curve(log.events, config.out / CURVE_NAME)
    _barrier(dist_info)
    loop_seconds = time.monotonic() - loop_started
    return TrainResult(
        run_dir=config.out, steps=step, planned_steps=total, best_psnr=best_psnr, best_step=best_step,
        bicubic_psnr=bicubic_psnr, last_psnr=last_psnr, seconds=elapsed_before + time.monotonic() - started,
        patches_per_second=(step - first_step) * config.batch / max(loop_seconds, 1e-9), stopped_early=stopped_early,
        device=str(device), world_size=dist_info.world, rank=dist_info.rank, train_pairs=len(train_pairs),
        val_pairs=len(val_pairs))


def _time_steps(step_fn: TrainStep, sampler, batch_args, device, channels_last: bool, config: TrainConfig,
                dist_info: _Dist) -> float:
    """Seconds per optimizer step, measured on real batches; the model, EMA and optimizer are restored after.

    One untimed step (allocator, cuDNN autotuning, ``torch.compile``), one step to size the measurement, then
    enough steps for ``PLAN_MIN_SECONDS`` (at least ``PLAN_MIN_STEPS``); every process runs the same count.
    """
    saved = copy.deepcopy((step_fn.module.state_dict(), step_fn.ema.state_dict(), step_fn.optimizer.state_dict()))

    def run(first: int, count: int) -> float:
        began = time.monotonic()
        for i in range(first, first + count):
            lr_t, hr_t = to_device(sampler.batch(step=i, **batch_args), device, channels_last=channels_last)
            loss = step_fn(lr_t, hr_t, step=i, learning_rate=config.lr)
        loss.item()  # waits for the device
        return (time.monotonic() - began) / count

    run(0, 1)
    first = run(1, 1)
    count = int(_broadcast(max(PLAN_MIN_STEPS, min(50, math.ceil(PLAN_MIN_SECONDS / first))), dist_info, device))
    seconds = run(2, count)
    module_state, ema_state, optimizer_state = saved
    step_fn.module.load_state_dict(module_state)
    step_fn.ema.load_state_dict(ema_state)
    step_fn.optimizer.load_state_dict(optimizer_state)
    return seconds


def _plan_steps(config: TrainConfig, *, remaining: float, seconds_per_step: float,
                val_seconds: float) -> tuple[int, int]:
    """``(steps, val_every)`` that fit ``remaining`` seconds, steps capped by ``config.steps``.

    The time left after reserving the final validation and a margin (``0.95 * remaining - 2 * t_val``) holds
    ``steps * t_step`` plus the intermediate validations: every ``config.val_every`` steps if set, otherwise as many
    as fit in a tenth of that time (at most 9, so ten with the final one).
    """
    budget = 0.95 * remaining - 2 * val_seconds
    if config.val_every:
        total = budget / (seconds_per_step + val_seconds / config.val_every)
        middle = None
    else:
        middle = int(min(9, 0.1 * budget / val_seconds)) if val_seconds > 0 else 9
        total = (budget - middle * val_seconds) / seconds_per_step
    total = int(min(config.steps, total))
    if total < 1:
        raise ConfigError(f"--max-minutes {config.max_minutes:g} leaves no time to train: a step takes "
                          f"{seconds_per_step:.2f} s and a validation {val_seconds:.1f} s; allow more minutes or "
                          "use a smaller --batch/--patch/model")
    return total, config.val_every or max(1, math.ceil(total / (middle + 1)))


def _replan(config: TrainConfig, *, step: int, total: int, remaining: float, val_every: int,
            seconds_per_step: float, val_seconds: float, measured_steps: int) -> int:
    """The planned step count updated from the loop's own throughput, once ``measured_steps >= 5``.

    The steps still to come and their validations (every ``val_every``) must fit in 97 % of the ``remaining``
    seconds less the final validation and a one-validation margin; a result ``<= step`` ends the run now.
    """
    budget = 0.97 * remaining - 2 * val_seconds
    if budget <= seconds_per_step:
        return step
    if measured_steps < 5:
        return total
    more = int(budget / (seconds_per_step + val_seconds / val_every))
    return max(step, min(config.steps, step + more))


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from .progress import console

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.2f} it/s"),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)
    progress.start()
    return progress
