"""What a training run is: :class:`TrainConfig` (validated before any work) and :class:`TrainResult`; run-folder names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from ..errors import ConfigError


CONFIG_NAME = "config.json"
LOG_NAME = "log.jsonl"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
CURVE_NAME = "curve.png"
# Options that change what is learned: a resumed run must use the same values as the run it continues.
RESUME_KEYS = ("source", "init", "val", "val_fraction", "scale", "model", "model_options", "steps", "batch", "patch", "lr",
               "warmup", "ema_decay", "grad_clip", "ssim_weight", "seed", "augment", "lr_sharpness", "val_every")
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
    augment : dihedral augmentation; lr_sharpness : LR sharpness jitter ``J`` (0 disables): each LR patch, not its
        HR, is blurred or sharpened by an unsharp mask of random amount in ``[-J, J]``
        (:class:`realsr_tools.train.data.PatchSampler`).
    val_every : validate (and save ``last.pt``) every this many steps; ``None``: ten times per run (with
        ``max_minutes``: as many as fit in a tenth of the time, at most ten).
    log_every : log the mean loss every this many steps. val_tile : LR tile side for validation inference
        (``None``: whole images).
    max_minutes : wall-time budget of the whole call; the schedule is planned to fit it (see ``docs/train.md``).
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``. compile : wrap the model in
        ``torch.compile``. prefetch : batches prepared ahead by a background thread (CUDA only).
    init : start from these weights (a realsr checkpoint or a BasicSR EDSR/RCAN one); the architecture, its options
        and the scale come from the checkpoint, ``model``/``model_options`` are then not used.
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
    lr_sharpness: float = 0.0
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
    init: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        object.__setattr__(self, "out", Path(self.out))
        for name in ("val", "init"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
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
        if self.grad_clip < 0 or self.ssim_weight < 0 or self.lr_sharpness < 0:
            problems.append("--grad-clip, --ssim-weight and --lr-sharpness must be 0 (off) or positive")
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
        from ..models import model_options

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


# Defaults that fit the device (``realsr train`` options left unset). On CUDA the reference model and BasicSR's
# EDSR recipe; on a CPU a quarter-width model on small patches with a higher learning rate, which learns within
# minutes (docs/measurements.md, "Training on a CPU": +0.31 dB over bicubic on RealSR after 853 steps), for at
# most CPU_STEPS steps: trained on DRealSR's 84 pairs for 1649-1677 steps it scored +0.12-0.14 dB over MATLAB bicubic
# on RealSR, against +0.31-0.32 dB after 447-853 steps (docs/train.md, "Choosing the CPU defaults").
CPU_STEPS = 800
CUDA_DEFAULTS = {"model": "edsr", "batch": 16, "patch": 48, "lr": 2e-4, "steps": 300_000, "log_every": 100}
CPU_DEFAULTS = {"model": "edsr_small", "batch": 8, "patch": 32, "lr": 2e-3, "steps": CPU_STEPS, "log_every": 10}
CPU_MINUTES = 60.0  # a CPU run with neither --steps nor --max-minutes ends after this long


def device_defaults(*, cuda: bool, given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Fill the options the user left ``None`` (model, batch, patch, lr, steps, log_every, max_minutes) for the device.

    Returns the completed options and one line per choice saying why. Options the user set are kept; when the user
    picked a model other than the CPU one, its batch, patch, learning rate and steps come from the reference recipe.
    """
    chosen = dict(given)
    reasons: list[str] = []
    profile = CUDA_DEFAULTS if cuda else CPU_DEFAULTS
    if not cuda and given.get("model") not in (None, CPU_DEFAULTS["model"]):
        profile = CUDA_DEFAULTS | {"log_every": CPU_DEFAULTS["log_every"]}
    filled = [k for k in ("model", "batch", "patch", "lr", "log_every") if given.get(k) is None]
    for key in filled:
        chosen[key] = profile[key]
    if filled:
        what = ", ".join(f"--{k.replace('_', '-')} {chosen[k]:g}" if isinstance(chosen[k], float) else
                         f"--{k.replace('_', '-')} {chosen[k]}" for k in filled)
        why = ("CUDA: the reference EDSR recipe" if cuda else
               "CPU: a small model on small patches learns within minutes here (the reference model manages "
               "a few steps a minute on a CPU)" if profile is CPU_DEFAULTS else
               "CPU, with the model you chose: the reference recipe")
        reasons.append(f"{what} ({why})")
    if given.get("steps") is None:
        chosen["steps"] = profile["steps"]
        if profile is CPU_DEFAULTS:
            reasons.append(f"--steps {CPU_STEPS} (CPU, at most: the small model trained longer on one small dataset "
                           "learns its cameras' detail and scored lower on other cameras; with --max-minutes the "
                           "run ends at the time or the steps, whichever comes first)")
        if not cuda and given.get("max_minutes") is None:
            chosen["max_minutes"] = CPU_MINUTES
            reasons.append(f"--max-minutes {CPU_MINUTES:g} (CPU and neither --steps nor --max-minutes: " + (
                "a bound on the wall time of a busy machine)" if profile is CPU_DEFAULTS else
                f"{profile['steps']:,} steps would not end)"))
    return chosen, reasons
